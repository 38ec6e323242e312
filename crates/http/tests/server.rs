//! Protocol behaviour of the server on real port-0 sockets: keep-alive, pipelining, chunked
//! bodies, 100-continue, Connection: close, smuggling defences, limits and header injection.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Raw, TestServer, exchange};
use faultline_http::{Body, HeaderValue, Request, Response, Router, ServerConfig};

fn app() -> Router {
    Router::new()
        .get("/plaintext", |_: &Request<'_>| {
            Response::text("Hello, World!")
        })
        .get("/path/{id}", |req: &Request<'_>| {
            Response::text(format!("id={}", req.param("id").unwrap_or("")))
        })
        .post("/echo", |req: &Request<'_>| {
            Response::new(200).with_body(req.body().to_vec())
        })
        .get("/stream", |_: &Request<'_>| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                for part in ["alpha-", "beta-", "gamma"] {
                    if tx.send(Bytes::from_static(part.as_bytes())).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(200).with_body(Body::Stream(rx))
        })
        .get("/inject", |req: &Request<'_>| {
            let v = req.query().unwrap_or("").replace("%0D%0A", "\r\n");
            Response::text("x").with_header("x-echo", HeaderValue::from(v))
        })
        .get("/bad-name", |_: &Request<'_>| {
            Response::text("x").with_header("bad name\r\nx", "v")
        })
}

#[tokio::test]
async fn keep_alive_connection_serves_many_requests() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    for i in 0..50 {
        c.send(format!("GET /path/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("id={i}").as_bytes());
        assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert!(r.header("connection").is_none());
    }
    s.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend_from_slice(format!("GET /path/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n");
        batch.extend_from_slice(format!("e{i:03}").as_bytes());
    }
    c.send(&batch).await;
    for i in 0..20 {
        let r = c.response().await;
        assert_eq!(r.body, format!("id={i}").as_bytes());
        let r = c.response().await;
        assert_eq!(r.body, format!("e{i:03}").as_bytes());
    }
    s.stop().await;
}

#[tokio::test]
async fn chunked_request_body_is_decoded_across_writes() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b"lo\r\n7;ext=x\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello, world");
    // The connection stays usable after a chunked body.
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response().await.body, b"Hello, World!");
    s.stop().await;
}

#[tokio::test]
async fn large_chunked_body_with_tiny_chunks_is_accepted() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20_000 {
        req.extend_from_slice(b"1\r\nz\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 20_000);
    s.stop().await;
}

#[tokio::test]
async fn streamed_response_body_is_sent_chunked() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.header("content-length").is_none());
    assert_eq!(r.body, b"alpha-beta-gamma");
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response().await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn expect_100_continue_gets_interim_response_before_body_is_sent() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response().await;
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    let r = c.response().await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    s.stop().await;
}

#[tokio::test]
async fn expect_100_continue_with_oversized_body_gets_413_without_continue() {
    let cfg = ServerConfig {
        max_body_size: 100,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(app(), cfg).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed().await);
    s.stop().await;
}

#[tokio::test]
async fn connection_close_request_gets_close_and_eof() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed().await);
    s.stop().await;
}

#[tokio::test]
async fn http10_closes_unless_keep_alive_requested() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET /plaintext HTTP/1.0\r\n\r\n").await;
    assert_eq!(c.response().await.status, 200);
    assert!(c.is_closed().await);

    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(c.response().await.status, 200);
    c.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(c.response().await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn head_request_gets_length_but_no_body() {
    let s = TestServer::start(app()).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.head_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("13"));
    // The next response must start right where the head ended: no body bytes in between.
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response().await.body, b"Hello, World!");
    s.stop().await;
}

/// Every smuggling variant gets 400 and the connection is closed, so no second request can be
/// hidden behind the rejected one.
#[tokio::test]
async fn smuggling_variants_get_400_and_close() {
    let s = TestServer::start(app()).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "CL and TE",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE and CL",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing CL",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "CL list",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4, 5\r\n\r\nabcde",
        ),
        (
            "negative CL",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        ),
        (
            "non-hex chunk size",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        ),
        (
            "0x chunk size",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
        ),
        (
            "overflowing chunk size",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000002\r\nab\r\n0\r\n\r\n",
        ),
        (
            "chunk data longer than size",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "bare LF in head",
            b"GET /plaintext HTTP/1.1\nHost: t\n\n",
        ),
        (
            "bare LF after one header",
            b"GET /plaintext HTTP/1.1\r\nHost: t\nX: y\r\n\r\n",
        ),
        (
            "bare LF in chunk line",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
        ),
        (
            "gzip then chunked",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "chunked then gzip",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "identity",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n",
        ),
        (
            "TE repeated",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE on HTTP/1.0",
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "space before colon",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        ("missing Host", b"GET /plaintext HTTP/1.1\r\n\r\n"),
        (
            "two Hosts",
            b"GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
    ];
    for (name, raw) in cases {
        let mut c = Raw::connect(s.addr).await;
        c.send(raw).await;
        let r = c.response().await;
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(r.header("connection"), Some("close"), "{name}");
        assert!(c.is_closed().await, "{name}: connection must close");
    }
    s.stop().await;
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let cfg = ServerConfig {
        max_head_size: 1024,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(app(), cfg).await;
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    assert_eq!(exchange(s.addr, long_path.as_bytes()).await.status, 431);
    let long_header = format!(
        "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    );
    assert_eq!(exchange(s.addr, long_header.as_bytes()).await.status, 431);
    // A head that never ends is cut off at the limit rather than buffered forever.
    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n").await;
    for _ in 0..100 {
        if c.stream.try_write(b"X-More: yyyyyyyyyyyyyyyy\r\n").is_err() {
            break;
        }
    }
    assert_eq!(c.response().await.status, 431);
    s.stop().await;
}

#[tokio::test]
async fn too_many_headers_gets_431() {
    let cfg = ServerConfig {
        max_headers: 10,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(app(), cfg).await;
    let mut raw = String::from("GET /plaintext HTTP/1.1\r\nHost: t\r\n");
    for i in 0..9 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(
        exchange(s.addr, raw.as_bytes()).await.status,
        200,
        "10 headers fit"
    );
    let raw = raw.replacen("Host: t\r\n", "Host: t\r\nX-Extra: v\r\n", 1);
    assert_eq!(exchange(s.addr, raw.as_bytes()).await.status, 431);
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let cfg = ServerConfig {
        max_body_size: 64,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(app(), cfg).await;
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 65\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'a'; 65]);
    assert_eq!(exchange(s.addr, &raw).await.status, 413);
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 64\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'a'; 64]);
    assert_eq!(
        exchange(s.addr, &raw).await.status,
        200,
        "exactly the limit fits"
    );
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        exchange(s.addr, &raw).await.status,
        413,
        "chunked total over the limit"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_method_gets_405_with_the_paths_allow_or_404() {
    let s = TestServer::start(app()).await;
    let r = exchange(s.addr, b"QUERY /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"), "{r:?}");
    let r = exchange(s.addr, b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn header_value_with_crlf_is_never_written() {
    let s = TestServer::start(app()).await;
    let r = exchange(
        s.addr,
        b"GET /inject?a%0D%0ASet-Cookie:%20evil=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.header("set-cookie").is_none());
    assert!(r.header("x-echo").is_none());
    let r = exchange(s.addr, b"GET /bad-name HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 500);
    let r = exchange(s.addr, b"GET /inject?fine HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!((r.status, r.header("x-echo")), (200, Some("fine")));
    s.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let cfg = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(app(), cfg).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::connect(s.addr).await;
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(c.response().await.status, 200);
        held.push(c);
    }
    let mut third = Raw::connect(s.addr).await;
    let r = third.try_response(false).await.expect("a 503 response");
    assert_eq!(r.status, 503);
    // Releasing a slot admits new connections again.
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..100 {
        let mut c = Raw::connect(s.addr).await;
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").await;
        if c.try_response(false).await.is_some_and(|r| r.status == 200) {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(admitted, "a freed slot must admit a new connection");
    s.stop().await;
}
