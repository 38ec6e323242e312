//! Optional TLS, and mutual TLS, for the agent API.
//!
//! `faultline-http` serves plain TCP, so the agent terminates TLS itself: the public
//! listener accepts TLS (rustls), and each decrypted connection is relayed to the API
//! server on a private loopback listener. The API admits only connections the
//! terminator opened ([`Gate`]): anyone else reaching the loopback port, even with the
//! token, gets 403. With a client CA, the handshake itself requires a client
//! certificate that chains to that CA, so a caller without one never reaches HTTP.
//! The bearer token is still checked on every call; TLS adds to it, never replaces it.

use std::collections::HashSet;
use std::io::BufReader;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::Api;

/// TLS set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was missing.
        what: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the agent's certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain of the agent.
    pub cert: PathBuf,
    /// PEM private key of the agent.
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to; `None` serves TLS without
    /// client authentication.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = rustls_pemfile_certs(&bytes).map_err(|what| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn rustls_pemfile_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_reader_iter(BufReader::new(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

impl TlsFiles {
    /// Builds the rustls server configuration.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        use rustls_pki_types::pem::PemObject;
        let chain = certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?).map_err(|e| TlsError::Pem {
            path: self.key.clone(),
            what: format!("no usable private key: {e}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The local addresses of the terminator's relay connections: the only peers the API
/// admits when it runs behind TLS.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl Gate {
    /// Whether `peer` is one of the terminator's relay connections.
    pub fn admits(&self, peer: SocketAddr) -> bool {
        self.peers.lock().expect("gate poisoned").contains(&peer)
    }
}

/// Removes a relay connection from the gate when it ends.
struct Admitted(Gate, SocketAddr);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.peers.lock().expect("gate poisoned").remove(&self.1);
    }
}

async fn relay(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    inner: SocketAddr,
    gate: Gate,
) {
    let mut tls = match acceptor.accept(stream).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            return;
        }
    };
    let mut plain = match TcpStream::connect(inner).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the API behind the TLS terminator");
            return;
        }
    };
    let Ok(local) = plain.local_addr() else {
        return;
    };
    gate.peers.lock().expect("gate poisoned").insert(local);
    let _admitted = Admitted(gate, local);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}

/// Serves the API over TLS on `listener` until `shutdown` completes, then reverts every
/// fault, like [`crate::api::serve`].
pub async fn serve(
    listener: TcpListener,
    api: Api,
    files: &TlsFiles,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), TlsError> {
    let acceptor = TlsAcceptor::from(Arc::new(files.server_config()?));
    let gate = Gate::default();
    let inner = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| TlsError::Config(format!("bind the private API listener: {e}")))?;
    let inner_addr = inner
        .local_addr()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let api = api.with_gate(gate.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::api::serve(
        inner,
        api,
        stop.clone().cancelled_owned(),
    ));
    let tracker = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(relay(acceptor.clone(), stream, peer, inner_addr, gate.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    stop.cancel();
    if let Ok(Err(e)) = server.await {
        tracing::error!(error = %e, "API server behind TLS failed");
    }
    tracker.close();
    Ok(())
}
