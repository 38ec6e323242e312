//! The pooled client against port-0 servers: reuse counted by connections accepted, idle
//! limits, error classification, timeouts and stale connections.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::TestServer;
use faultline_http::{
    Body, Client, ClientConfig, ClientError, OwnedRequest, Request, Response, Router, ServerConfig,
    handler_fn,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server whose handler records the peer port of every request: the number of distinct ports
/// is the number of connections the server accepted.
fn port_recording_app(ports: Arc<Mutex<Vec<u16>>>) -> Router {
    Router::new().get("/", move |req: &Request<'_>| {
        ports.lock().expect("lock").push(req.peer_addr().port());
        Response::text("ok")
    })
}

fn distinct(ports: &Arc<Mutex<Vec<u16>>>) -> usize {
    ports
        .lock()
        .expect("lock")
        .iter()
        .collect::<HashSet<_>>()
        .len()
}

#[tokio::test]
async fn sequential_requests_reuse_one_pooled_connection() {
    let ports = Arc::default();
    let s = TestServer::start(port_recording_app(Arc::clone(&ports))).await;
    let client = Client::default();
    for _ in 0..25 {
        let r = client.get(s.url("/")).send().await.expect("request");
        assert_eq!((r.status(), r.text().as_str()), (200, "ok"));
    }
    assert_eq!(ports.lock().expect("lock").len(), 25);
    assert_eq!(distinct(&ports), 1, "25 requests, one connection accepted");
    assert_eq!(client.idle_connections(&s.addr.to_string()), 1);
    s.stop().await;
}

#[tokio::test]
async fn pool_keeps_at_most_max_idle_connections_per_host() {
    let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Barrier::new(6));
    let app = {
        let ports = ports.clone();
        let gate = gate.clone();
        Router::new().get(
            "/",
            handler_fn(move |req: OwnedRequest| {
                let gate = gate.clone();
                ports.lock().expect("lock").push(req.peer_addr().port());
                async move {
                    // Hold all six requests until every one is in flight, forcing 6 connections.
                    gate.wait().await;
                    Response::text("ok")
                }
            }),
        )
    };
    let s = TestServer::start(app).await;
    let client = Client::new(ClientConfig {
        max_idle_per_host: 2,
        ..ClientConfig::default()
    });
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = client.clone();
        let url = s.url("/");
        tasks.push(tokio::spawn(async move { c.get(url).send().await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("request").status(), 200);
    }
    assert_eq!(distinct(&ports), 6);
    assert_eq!(client.idle_connections(&s.addr.to_string()), 2);
    s.stop().await;
}

#[tokio::test]
async fn per_host_pools_are_separate() {
    let ports_a = Arc::default();
    let ports_b = Arc::default();
    let a = TestServer::start(port_recording_app(Arc::clone(&ports_a))).await;
    let b = TestServer::start(port_recording_app(Arc::clone(&ports_b))).await;
    let client = Client::default();
    for _ in 0..5 {
        client.get(a.url("/")).send().await.expect("a");
        client.get(b.url("/")).send().await.expect("b");
    }
    assert_eq!((distinct(&ports_a), distinct(&ports_b)), (1, 1));
    assert_eq!(client.idle_connections(&a.addr.to_string()), 1);
    assert_eq!(client.idle_connections(&b.addr.to_string()), 1);
    a.stop().await;
    b.stop().await;
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Order {
    sku: String,
    qty: u32,
}

#[tokio::test]
async fn json_round_trip_and_chunked_response() {
    let app = Router::new()
        .post(
            "/orders",
            handler_fn(|req: OwnedRequest| async move {
                match req.json::<Order>() {
                    Ok(mut o) => {
                        o.qty *= 2;
                        Response::json_with_status(201, &o)
                    }
                    Err(e) => Response::error(422, &e.to_string()),
                }
            }),
        )
        .get("/stream", |_: &Request<'_>| {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(async move {
                for _ in 0..3 {
                    let _ = tx.send(Bytes::from_static(b"chunk;")).await;
                }
            });
            Response::new(200).with_body(Body::Stream(rx))
        });
    let s = TestServer::start(app).await;
    let client = Client::default();
    let r = client
        .post(s.url("/orders"))
        .json(&Order {
            sku: "A-1".into(),
            qty: 2,
        })
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Order>().expect("json"),
        Order {
            sku: "A-1".into(),
            qty: 4
        }
    );
    let r = client
        .post(s.url("/orders"))
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 422);
    let r = client.get(s.url("/stream")).send().await.expect("stream");
    assert_eq!(r.text(), "chunk;chunk;chunk;");
    let r = client
        .get(s.url("/stream"))
        .send()
        .await
        .expect("reused after chunked");
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn refused_connection_is_a_retry_safe_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = Client::default()
        .post(format!("http://{addr}/charge"))
        .send()
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.is_retry_safe() && err.is_connect() && !err.is_timeout());
}

#[tokio::test]
async fn connection_closed_after_request_is_not_retry_safe() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        for reply in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        ] {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(reply).await.expect("write");
        }
    });
    let client = Client::default();
    for what in ["no response", "truncated body"] {
        let err = client
            .post(format!("http://{addr}/charge"))
            .body("x")
            .send()
            .await
            .expect_err(what);
        assert!(
            matches!(err, ClientError::ResponseRead(_)),
            "{what}: {err:?}"
        );
        assert!(
            !err.is_retry_safe(),
            "{what}: the server may have acted on it"
        );
    }
    server.await.expect("server");
}

#[tokio::test(start_paused = true)]
async fn slow_response_times_out_with_request_timeout() {
    let app = Router::new().get(
        "/slow",
        handler_fn(|_req: OwnedRequest| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Response::new(200)
        }),
    );
    let s = TestServer::start(app).await;
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    });
    let t0 = tokio::time::Instant::now();
    let err = client
        .get(s.url("/slow"))
        .send()
        .await
        .expect_err("times out");
    assert!(
        matches!(err, ClientError::Timeout) && err.is_timeout(),
        "{err:?}"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let err = client
        .get(s.url("/slow"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .expect_err("per-request budget");
    assert!(err.is_timeout());
}

#[tokio::test(start_paused = true)]
async fn connection_closed_by_server_while_idle_is_replaced_transparently() {
    let ports = Arc::default();
    let cfg = ServerConfig {
        keep_alive_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(port_recording_app(Arc::clone(&ports)), cfg).await;
    let client = Client::default();
    client.get(s.url("/")).send().await.expect("first");
    // The server closes the idle connection; the pooled one is now stale.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = client
        .get(s.url("/"))
        .send()
        .await
        .expect("second on a fresh connection");
    assert_eq!(r.status(), 200);
    assert_eq!(distinct(&ports), 2);
    s.stop().await;
}

#[tokio::test]
async fn invalid_urls_and_header_injection_are_rejected_before_sending() {
    let client = Client::default();
    for url in ["https://x/", "ftp://x", "http://", "http://a b/"] {
        let err = client.get(url).send().await.expect_err(url);
        assert!(matches!(err, ClientError::InvalidUrl(_)), "{url}: {err:?}");
    }
    let err = client
        .get("http://127.0.0.1:9/")
        .header("x-id", "a\r\nInjected: 1")
        .send()
        .await
        .expect_err("injection");
    assert!(matches!(err, ClientError::InvalidHeader(_)), "{err:?}");
}
