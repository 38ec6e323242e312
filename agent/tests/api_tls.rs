//! The agent API over TLS with client certificates (mTLS): a client with a certificate
//! from the configured CA gets through, one without a certificate or with a certificate
//! from another CA is refused at the handshake, and the private plain listener behind
//! the terminator refuses direct callers even with the token. Certificates are generated
//! in the test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faultline_agent::api::{Api, Token};
use faultline_agent::tls::{TlsFiles, serve};
use faultline_agent::{Agent, AgentConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "tls-test-token-0123456789abcdef";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(p, key),
        pem,
    }
}

/// A leaf certificate signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client_config(server_ca: &str, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    }
}

/// One `GET /v1/faults` over TLS; the status line, or the I/O error.
async fn get(addr: SocketAddr, config: rustls::ClientConfig) -> std::io::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(
        format!("GET /v1/faults HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_clients_with_a_certificate_from_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = ca("faultline test CA");
    let rogue = ca("someone else's CA");
    let (server_cert, server_key) = leaf(&trusted, &["localhost"]);
    let good = leaf(&trusted, &["controller"]);
    let bad = leaf(&rogue, &["controller"]);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let files = TlsFiles {
        cert: write("agent.crt", &server_cert),
        key: write("agent.key", &server_key),
        client_ca: Some(write("clients.crt", &trusted.pem)),
    };
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let api = Api::new(agent, Token::new(TOKEN).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { serve(listener, api, &files, stop.cancelled_owned()).await }
    });

    let ok = get(addr, client_config(&trusted.pem, Some((&good.0, &good.1))))
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with(r#"{"faults":[]}"#), "{ok}");

    for (what, config) in [
        ("no client certificate", client_config(&trusted.pem, None)),
        (
            "a certificate from another CA",
            client_config(&trusted.pem, Some((&bad.0, &bad.1))),
        ),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(5), get(addr, config))
            .await
            .unwrap();
        match r {
            Err(_) => {}
            Ok(text) => assert!(text.is_empty(), "{what} got an answer: {text}"),
        }
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_listener_behind_tls_refuses_direct_callers() {
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let gate = faultline_agent::tls::Gate::default();
    let api = Api::new(agent, Token::new(TOKEN).unwrap()).with_gate(gate);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(faultline_agent::api::serve(
        listener,
        api,
        stop.clone().cancelled_owned(),
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /v1/faults HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("tls_required"), "{text}");
    stop.cancel();
    server.await.unwrap().unwrap();
}
