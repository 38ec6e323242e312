//! Latency for a node target: an nft `redirect` in the target's network namespace sends
//! its TCP into an agent proxy that delays it.
//!
//! - The proxy's listening socket is created *inside* the target's namespace by a
//!   dedicated thread ([`Netns::run`]) that switches back afterwards; tokio then serves
//!   it, since a socket keeps its namespace wherever it is polled.
//! - Each upstream socket is created inside the namespace the same way and carries
//!   `SO_MARK` [`MARK`], which the redirect rules skip, so the proxy's own connections
//!   are not redirected again.
//! - Ingress (connections arriving at the target) is a `prerouting` redirect; egress
//!   (connections the target makes) an `output` redirect. The proxy reads the original
//!   destination with `SO_ORIGINAL_DST` and connects there.
//! - The redirect rules match through a lease set with a kernel timeout, like the
//!   nftables faults: if the agent dies, its proxy dies with it and the redirect stops
//!   within the TTL, so the target is not left pointing at a closed port.
//!
//! The delay itself is the userspace proxy's: per chunk, relative to its arrival, in the
//! direction the fault names (requests for ingress, the target's calls for egress).
//!
//! - NAT applies to new connections only: a peer's pooled keep-alive connection opened
//!   before the fault would never see it. So an ingress redirect resets the target's
//!   established inbound connections on its listening ports (`ss -K`, the kernel's
//!   sock_destroy) right after the rules are in; pooling clients drop the dead idle
//!   connection and reconnect through the proxy.
//!
//! HTTP faults on a node target ([`RedirectLatency::http`]) use the same redirect and
//! proxy with an HTTP rule: connections *into* the target are framed as HTTP/1.1 and the
//! chosen share of requests is answered by the proxy (abort) or held (delay).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{Direction, HttpFault, JitterDistribution, NetworkAction, NetworkFault};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;
use crate::netns::Netns;
use crate::nft::{self, Peers};
use crate::proxy::rules::{Action, HttpRule, Rule, RuleSet, Stats};

/// `SO_MARK` of the proxy's upstream sockets; the redirect rules skip it.
pub const MARK: u32 = 0x0fa1_7100;

/// A latency or HTTP fault served by a redirect proxy in the target's namespace.
#[derive(Debug, Clone)]
pub struct RedirectLatency {
    table: String,
    action: Action,
    ingress: bool,
    egress: bool,
    peers: Peers,
    ports: Vec<u16>,
    ttl: Duration,
}

impl RedirectLatency {
    /// Builds the fault for `fault_id` with a lease of `ttl`.
    pub fn new(fault_id: &str, fault: &NetworkFault, ttl: Duration) -> Result<Self, FaultError> {
        let NetworkAction::Latency(l) = &fault.action else {
            return Err(FaultError::Unsupported(
                "the redirect proxy carries latency faults only".into(),
            ));
        };
        if l.jitter > l.delay {
            return Err(FaultError::Invalid("jitter must not exceed delay".into()));
        }
        if fault
            .peers
            .iter()
            .any(|p| matches!(p, faultline_spec::Peer::Cidr { addr, .. } if addr.is_ipv6()))
        {
            return Err(FaultError::Unsupported(
                "the redirect proxy handles IPv4 peers only".into(),
            ));
        }
        let (ingress, egress) = match fault.direction {
            Direction::Ingress => (true, false),
            Direction::Egress => (false, true),
            Direction::Both => (true, true),
        };
        Ok(Self {
            table: nft::table_name(fault_id),
            action: Action::Latency {
                delay: l.delay.std(),
                jitter: l.jitter.std(),
                normal: l.distribution == JitterDistribution::Normal,
                correlation: l.correlation.map_or(0.0, |c| c.fraction()),
            },
            ingress,
            egress,
            peers: Peers::from_spec(&fault.peers)?,
            ports: fault.ports.clone(),
            ttl,
        })
    }

    /// Builds an HTTP fault for `fault_id`: requests arriving at the target (ingress,
    /// every TCP port, from any peer) go through the proxy, which applies `fault`.
    pub fn http(fault_id: &str, fault: &HttpFault, ttl: Duration) -> Result<Self, FaultError> {
        Ok(Self {
            table: nft::table_name(fault_id),
            action: Action::Http(HttpRule::from_spec(fault)?),
            ingress: true,
            egress: false,
            peers: Peers::from_spec(&[])?,
            ports: Vec::new(),
            ttl,
        })
    }

    /// The redirect table, sending matching TCP to `port` unless it carries [`MARK`].
    pub fn script(&self, port: u16) -> String {
        let t = &self.table;
        let ports = if self.ports.is_empty() {
            String::new()
        } else {
            let l: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            format!("tcp dport {{ {} }} ", l.join(", "))
        };
        let mut s = format!(
            "table ip {t} {{\n  set peers4 {{ type ipv4_addr; flags interval, timeout; }}\n"
        );
        if self.ingress {
            s.push_str(&format!(
                "  chain ingress {{\n    type nat hook prerouting priority -110; policy accept;\n    meta mark {MARK} return\n    ip saddr @peers4 meta l4proto tcp {ports}counter redirect to :{port}\n  }}\n"
            ));
        }
        if self.egress {
            s.push_str(&format!(
                "  chain egress {{\n    type nat hook output priority -110; policy accept;\n    meta mark {MARK} return\n    oifname \"lo\" return\n    ip daddr @peers4 meta l4proto tcp {ports}counter redirect to :{port}\n  }}\n"
            ));
        }
        s.push_str("}\n");
        s.push_str(&self.peers.refill_v4(&format!("ip {t}"), self.ttl));
        s
    }
}

/// The running proxy and its redirect table; dropping it stops both.
pub struct RedirectHandle {
    netns: Arc<Netns>,
    table: String,
    peers: Peers,
    rule: Arc<Rule>,
    cancel: CancellationToken,
    port: u16,
    /// Established inbound connections reset when the redirect went in.
    reset_inbound: usize,
    deleted: bool,
}

impl std::fmt::Debug for RedirectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectHandle")
            .field("table", &self.table)
            .field("port", &self.port)
            .finish()
    }
}

fn delete(netns: &Netns, table: &str) -> Result<(), FaultError> {
    match nft::run_script(netns, &format!("delete table ip {table}\n")) {
        Ok(_) => Ok(()),
        Err(FaultError::Io { source, .. })
            if source.to_string().contains("No such file or directory") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes a redirect table left by a previous agent, if its namespace still exists.
pub fn delete_leftover(r: &crate::netns::NetnsRef, table: &str) -> Result<bool, FaultError> {
    match Netns::find(r) {
        Some(ns) => delete(&ns, table).map(|()| true),
        None => Ok(false),
    }
}

impl Drop for RedirectHandle {
    fn drop(&mut self) {
        // The redirect goes first, so no connection is sent to a proxy that is stopping.
        if !self.deleted
            && let Err(e) = delete(&self.netns, &self.table)
        {
            tracing::error!(table = %self.table, error = %e, "could not delete a redirect table");
        }
        self.cancel.cancel();
    }
}

/// A socket created inside `netns`, marked so the redirect skips it.
fn upstream_socket(netns: &Netns) -> std::io::Result<std::net::TcpStream> {
    netns
        .run(|| -> std::io::Result<std::net::TcpStream> {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_mark(MARK)?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

async fn connect_upstream(netns: Arc<Netns>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let std = tokio::task::spawn_blocking(move || upstream_socket(&netns))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    TcpSocket::from_std_stream(std).connect(to).await
}

fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddr> {
    let raw = nix::sys::socket::getsockopt(&s.as_fd(), nix::sys::socket::sockopt::OriginalDst)
        .map_err(std::io::Error::from)?;
    let ip = Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(raw.sin_port),
    )))
}

/// Resets the established inbound connections on `netns`'s listening TCP ports other
/// than `proxy_port` (see the module docs) and returns how many it reset. Best effort:
/// without `ss` or the kernel's sock_destroy the fault still applies to every new
/// connection, and a warning says so.
fn reset_inbound(netns: &Netns, proxy_port: u16) -> usize {
    let listening = match crate::tc::run(netns, "ss", &["-H", "-l", "-t", "-n"]) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list listening ports; pooled connections keep bypassing the redirect");
            return 0;
        }
    };
    let mut ports: Vec<u16> = listening
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
        .filter(|p| *p != proxy_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return 0;
    }
    let filter = ports
        .iter()
        .map(|p| format!("sport = :{p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let filter = format!("( {filter} )");
    // `ss -K` lists each socket it destroyed.
    match crate::tc::run(
        netns,
        "ss",
        &["-K", "-H", "-t", "-n", "state", "established", &filter],
    ) {
        Ok(out) => {
            let reset = out.lines().filter(|l| !l.trim().is_empty()).count();
            tracing::info!(reset, ports = ?ports, "reset the established inbound connections so they reconnect through the redirect");
            reset
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot reset established connections; pooled connections keep bypassing the redirect");
            0
        }
    }
}

impl Fault for RedirectLatency {
    type Handle = RedirectHandle;

    fn backend(&self) -> &'static str {
        "redirect"
    }

    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Ok(RevertRecord::RedirectTable {
            netns: crate::target::netns(target)?.to_ref(),
            table: self.table.clone(),
        })
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        crate::target::netns(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<RedirectHandle, FaultError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            FaultError::Invalid("the redirect proxy needs the agent's tokio runtime".into())
        })?;
        let netns = Arc::new(crate::target::netns(target)?);
        delete(&netns, &self.table)?;
        let listener = netns
            .run(|| -> std::io::Result<std::net::TcpListener> {
                let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .map_err(|e| {
                FaultError::io(
                    "enter the target's namespace",
                    std::io::Error::other(e.to_string()),
                )
            })?
            .map_err(|e| FaultError::io("bind the redirect proxy in the target's namespace", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| FaultError::io("redirect proxy address", e))?
            .port();
        let rule = Arc::new(Rule {
            id: 1,
            action: self.action.clone(),
            // Both redirects make the target's side of the flow the proxy's client side.
            ingress: true,
            egress: false,
            peers: Vec::new(),
            stats: Stats::default(),
        });
        let (_tx, rules) = watch::channel(Arc::new(RuleSet {
            rules: vec![rule.clone()],
        }));
        let cancel = CancellationToken::new();
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)
                .map_err(|e| FaultError::io("register the redirect proxy", e))?
        };
        let upstream_ns = netns.clone();
        let stop = cancel.clone();
        runtime.spawn(async move {
            crate::proxy::accept_loop(
                &listener,
                rules,
                &stop,
                std::future::pending(),
                "redirect proxy",
                move |client| {
                    original_dst(client)
                        .inspect_err(|e| {
                            tracing::debug!(error = %e, "redirected connection without an original destination");
                        })
                        .ok()
                        .map(|to| connect_upstream(upstream_ns.clone(), to))
                },
            )
            .await;
        });
        let mut handle = RedirectHandle {
            netns,
            table: self.table.clone(),
            peers: self.peers.clone(),
            rule,
            cancel,
            port,
            reset_inbound: 0,
            deleted: true,
        };
        nft::run_script(&handle.netns, &self.script(port))?;
        handle.deleted = false;
        if self.ingress {
            handle.reset_inbound = reset_inbound(&handle.netns, port);
        }
        Ok(handle)
    }

    fn renew(&self, handle: &mut RedirectHandle, ttl: Duration) -> Result<(), FaultError> {
        nft::run_script(
            &handle.netns,
            &handle.peers.refill_v4(&format!("ip {}", handle.table), ttl),
        )
        .map(drop)
    }

    fn observe(&self, handle: &RedirectHandle) -> ObservedEffect {
        let mut e = handle.rule.stats.effect(&handle.rule.action);
        e.metrics
            .insert("proxy_port".into(), f64::from(handle.port));
        e.summary = format!(
            "redirect proxy in {}: {}",
            handle.netns.path().display(),
            e.summary
        );
        if self.ingress {
            let reset = handle.reset_inbound;
            e.metrics
                .insert("reset_inbound_connections".into(), reset as f64);
            e.summary.push_str(&format!(
                " ({reset} established inbound connections reset at the start)"
            ));
        }
        e
    }

    fn revert(&self, mut handle: RedirectHandle) -> Result<ObservedEffect, FaultError> {
        delete(&handle.netns, &handle.table)?;
        handle.deleted = true;
        let e = self.observe(&handle);
        Ok(e)
    }
}
