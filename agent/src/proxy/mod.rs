//! Userspace TCP proxies that carry network and HTTP faults without privileges.
//!
//! In local mode the fleet launcher asks the agent for one proxy per upstream edge
//! ([`ProxyRegistry::create`]): the caller connects to the proxy instead of the upstream.
//! A network or HTTP fault whose target names proxy ids adds a [`rules::Rule`] to each of
//! those proxies. Rules live in a `watch` channel that every connection reads per chunk,
//! so faults are added to and removed from a *live* proxy: idle and busy connections
//! stay open and simply see the new rules from their next chunk on.
//!
//! Direction: the proxy fronts the target, so `ingress` is client -> upstream (requests
//! arriving at the target) and `egress` is upstream -> client (what the target sends).

pub mod http;
pub(crate) mod pump;
pub mod rules;
mod timer;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use rules::{ProxyFault, Rule, RuleSet};

/// Proxy management failures.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("bind proxy `{id}`: {source}")]
    Bind {
        /// Proxy id.
        id: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A proxy with this id already exists for another upstream.
    #[error("proxy `{id}` already exists for upstream {existing}")]
    Conflict {
        /// Proxy id.
        id: String,
        /// Its upstream.
        existing: SocketAddr,
    },
    /// No proxy has this id.
    #[error("no proxy `{0}`")]
    NotFound(String),
}

/// Public facts about one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInfo {
    /// Proxy id, as named in `ResolvedTarget.proxies`.
    pub id: String,
    /// Where callers connect.
    pub listen: SocketAddr,
    /// Where the proxy forwards to.
    pub upstream: SocketAddr,
}

/// One running proxy.
pub(crate) struct Proxy {
    pub(crate) info: ProxyInfo,
    pub(crate) rules: watch::Sender<Arc<RuleSet>>,
    cancel: CancellationToken,
}

impl Proxy {
    /// Adds a rule; live connections see it from their next chunk on.
    pub(crate) fn add_rule(&self, rule: Arc<Rule>) {
        self.rules
            .send_modify(|set| *set = Arc::new(set.with(rule)));
    }

    /// Removes a rule by id.
    pub(crate) fn remove_rule(&self, id: u64) {
        self.rules
            .send_modify(|set| *set = Arc::new(set.without(id)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct RegistryInner {
    bind: IpAddr,
    proxies: Mutex<HashMap<String, Arc<Proxy>>>,
    cancel: CancellationToken,
}

impl Drop for RegistryInner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The agent's proxies by id. Cheap to clone; every clone shares the same proxies.
/// When the last clone is dropped, every proxy stops accepting and closes its connections.
#[derive(Clone)]
pub struct ProxyRegistry {
    inner: Arc<RegistryInner>,
}

impl Default for ProxyRegistry {
    fn default() -> Self {
        Self::new(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

impl std::fmt::Debug for ProxyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRegistry")
            .field("proxies", &self.list())
            .finish()
    }
}

impl ProxyRegistry {
    /// A registry whose proxies listen on `bind` (port 0: the kernel picks).
    pub fn new(bind: IpAddr) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                bind,
                proxies: Mutex::new(HashMap::new()),
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// Creates proxy `id` forwarding to `upstream` and returns its listening address.
    /// Creating the same id for the same upstream again returns the existing address.
    /// Must be called inside a tokio runtime: the proxy runs on it.
    pub async fn create(&self, id: &str, upstream: SocketAddr) -> Result<SocketAddr, ProxyError> {
        if let Some(p) = self.get(id) {
            if p.info.upstream == upstream {
                return Ok(p.info.listen);
            }
            return Err(ProxyError::Conflict {
                id: id.into(),
                existing: p.info.upstream,
            });
        }
        let listener = TcpListener::bind(SocketAddr::new(self.inner.bind, 0))
            .await
            .map_err(|source| ProxyError::Bind {
                id: id.into(),
                source,
            })?;
        let listen = listener.local_addr().map_err(|source| ProxyError::Bind {
            id: id.into(),
            source,
        })?;
        let (rules, rules_rx) = watch::channel(Arc::new(RuleSet::default()));
        let cancel = self.inner.cancel.child_token();
        let proxy = Arc::new(Proxy {
            info: ProxyInfo {
                id: id.into(),
                listen,
                upstream,
            },
            rules,
            cancel: cancel.clone(),
        });
        {
            let mut map = self.inner.proxies.lock().expect("proxy map poisoned");
            if let Some(p) = map.get(id) {
                // Lost a race with a concurrent create of the same id.
                return if p.info.upstream == upstream {
                    Ok(p.info.listen)
                } else {
                    Err(ProxyError::Conflict {
                        id: id.into(),
                        existing: p.info.upstream,
                    })
                };
            }
            map.insert(id.into(), proxy);
        }
        tokio::spawn(serve(listener, upstream, rules_rx, cancel));
        tracing::debug!(id, %listen, %upstream, "proxy created");
        Ok(listen)
    }

    /// Stops proxy `id`: it stops accepting and closes its connections.
    pub fn remove(&self, id: &str) -> Result<(), ProxyError> {
        let removed = self
            .inner
            .proxies
            .lock()
            .expect("proxy map poisoned")
            .remove(id);
        match removed {
            Some(p) => {
                p.cancel.cancel();
                Ok(())
            }
            None => Err(ProxyError::NotFound(id.into())),
        }
    }

    /// Every proxy, sorted by id.
    pub fn list(&self) -> Vec<ProxyInfo> {
        let mut v: Vec<_> = self
            .inner
            .proxies
            .lock()
            .expect("proxy map poisoned")
            .values()
            .map(|p| p.info.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Proxy>> {
        self.inner
            .proxies
            .lock()
            .expect("proxy map poisoned")
            .get(id)
            .cloned()
    }
}

/// How often a paused proxy tries its upstream again.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Runs one local proxy until `cancel` fires. While its upstream refuses connections (a
/// replica draining or restarting), the proxy refuses them too: it closes its listener at the
/// first refused dial and binds the same address again once the upstream accepts. A proxy
/// that accepted and then reset the caller would turn "refused: nothing was sent, try another
/// replica" into "cut after sending", which no caller may retry for a placement.
async fn serve(
    mut listener: TcpListener,
    upstream: SocketAddr,
    rules: watch::Receiver<Arc<RuleSet>>,
    cancel: CancellationToken,
) {
    let Ok(listen) = listener.local_addr() else {
        return;
    };
    loop {
        let refused = CancellationToken::new();
        let flag = refused.clone();
        accept_loop(
            &listener,
            rules.clone(),
            &cancel,
            refused.cancelled(),
            "proxy",
            move |_| {
                let flag = flag.clone();
                Some(async move {
                    let dialed = TcpStream::connect(upstream).await;
                    if matches!(&dialed, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
                    {
                        flag.cancel();
                    }
                    dialed
                })
            },
        )
        .await;
        if cancel.is_cancelled() {
            return;
        }
        drop(listener);
        tracing::info!(%listen, %upstream, "upstream refuses: the proxy refuses until it accepts");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
            if TcpStream::connect(upstream).await.is_ok() {
                break;
            }
        }
        listener = loop {
            match TcpListener::bind(listen).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(%listen, error = %e, "proxy cannot listen again yet");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(PROBE_EVERY) => {}
                    }
                }
            }
        };
        tracing::info!(%listen, %upstream, "upstream accepts again: the proxy listens");
    }
}

/// Accepts clients on `listener` until `cancel` fires or `stop` completes, and pumps each one
/// under `rules` to the upstream `connect` opens for it; `connect` returns `None` to drop a
/// client it cannot place. Connections end with `cancel`, not with `stop`. Shared by the
/// local proxies and the redirect proxy; `kind` names which in the warning.
pub(crate) async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    rules: watch::Receiver<Arc<RuleSet>>,
    cancel: &CancellationToken,
    stop: impl Future<Output = ()>,
    kind: &'static str,
    mut connect: F,
) where
    F: FnMut(&TcpStream) -> Option<Fut> + Send,
    Fut: Future<Output = std::io::Result<TcpStream>> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            () = &mut stop => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) => {
                if let Some(upstream) = connect(&client) {
                    tokio::spawn(pump::connection(
                        client,
                        peer,
                        upstream,
                        rules.clone(),
                        cancel.clone(),
                    ));
                }
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "{kind} accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Closes `stream` with an RST instead of a FIN (SO_LINGER 0).
pub(crate) fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

#[cfg(test)]
mod tests;
