//! Timeouts, graceful drain and the thread-per-core model, on port-0 servers. Timeout tests run
//! on paused tokio time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Raw, TestServer};
use faultline_http::{
    Client, OwnedRequest, Request, Response, Router, ServerConfig, handler_fn, serve_per_core,
};
use tokio::sync::{Notify, mpsc};

/// A server on `cfg` whose one route, `GET /`, answers 200 at once.
async fn get_200_server(cfg: ServerConfig) -> TestServer {
    TestServer::start_with(
        Router::new().get("/", |_: &Request<'_>| Response::new(200)),
        cfg,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn slow_header_gets_408_after_header_read_timeout() {
    let s = get_200_server(ServerConfig {
        header_read_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(s.addr).await;
    let t0 = tokio::time::Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: slow").await;
    let r = c.response().await;
    assert_eq!(r.status, 408);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "408 after {waited:?}"
    );
    assert!(c.is_closed().await);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn trickled_header_bytes_do_not_extend_the_header_deadline() {
    let s = get_200_server(ServerConfig {
        header_read_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(s.addr).await;
    let t0 = tokio::time::Instant::now();
    c.send(b"GET / HTTP/1.1\r\n").await;
    // Slowloris: one header byte per second keeps the socket busy but must not keep it open.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if c.stream.try_write(b"X").is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(5_500), trickle).await;
    let r = c.response().await;
    assert_eq!(r.status, 408);
    assert!(t0.elapsed() < Duration::from_secs(7));
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_keep_alive_connection_is_closed_after_timeout() {
    let s = get_200_server(ServerConfig {
        keep_alive_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response().await.status, 200);
    let t0 = tokio::time::Instant::now();
    assert!(c.is_closed().await, "idle connection must be closed");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slow_body_gets_408_after_body_read_timeout() {
    let cfg = ServerConfig {
        body_read_timeout: Duration::from_secs(4),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(
        Router::new().post("/", |_: &Request<'_>| Response::new(200)),
        cfg,
    )
    .await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    assert_eq!(c.response().await.status, 408);
    s.stop().await;
}

/// Drain: a request in flight when shutdown starts completes with its response; the listener
/// stops accepting at once; idle connections are closed.
#[tokio::test]
async fn graceful_drain_completes_in_flight_requests() {
    let release = Arc::new(Notify::new());
    let (entered_tx, mut entered) = mpsc::channel::<()>(8);
    let app = {
        let release = release.clone();
        Router::new()
            .get(
                "/slow",
                handler_fn(move |_req: OwnedRequest| {
                    let release = release.clone();
                    let entered_tx = entered_tx.clone();
                    async move {
                        let _ = entered_tx.send(()).await;
                        release.notified().await;
                        Response::text("finished")
                    }
                }),
            )
            .get("/fast", |_: &Request<'_>| Response::text("fast"))
    };
    let s = TestServer::start(app).await;

    let mut idle = Raw::connect(s.addr).await;
    idle.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(idle.response().await.status, 200);

    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(s.addr).await;
        c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await;
        entered.recv().await.expect("handler entered");
        in_flight.push(c);
    }

    s.token.cancel();
    // The listener closes: new connections are refused (bounded wait for the accept loop).
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(s.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "listener must stop accepting during drain");
    assert!(
        idle.is_closed().await,
        "idle keep-alive connection closed on drain"
    );

    release.notify_waiters();
    for mut c in in_flight {
        let r = c.response().await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"finished"[..]));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed().await);
    }
    s.task.await.expect("join").expect("serve");
}

#[tokio::test(start_paused = true)]
async fn drain_gives_up_after_shutdown_grace() {
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    let app = Router::new().get(
        "/hang",
        handler_fn(move |_req: OwnedRequest| {
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(()).await;
                std::future::pending::<()>().await;
                Response::new(200)
            }
        }),
    );
    let cfg = ServerConfig {
        shutdown_grace: Duration::from_secs(7),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(app, cfg).await;
    let mut c = Raw::connect(s.addr).await;
    c.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n").await;
    entered.recv().await.expect("handler entered");
    let t0 = tokio::time::Instant::now();
    s.token.cancel();
    s.task.await.expect("join").expect("serve");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "gave up after {waited:?}"
    );
    assert!(
        c.try_response(false).await.is_none(),
        "hung request is dropped"
    );
}

#[test]
fn per_core_workers_share_a_port_and_drain_on_shutdown() {
    let server = serve_per_core(
        "127.0.0.1:0".parse().expect("addr"),
        2,
        ServerConfig::default(),
        || Router::new().get("/", |_: &Request<'_>| Response::text("ok")),
    )
    .expect("start workers");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = Client::default();
        for _ in 0..20 {
            let r = client
                .get(format!("http://{addr}/"))
                .header("connection", "close")
                .send()
                .await
                .expect("request");
            assert_eq!(r.text(), "ok");
        }
    });
    server.shutdown_token().cancel();
    server.join().expect("workers stop cleanly");
}
