//! Routing and middleware behaviour, over sockets and in-process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{TestServer, exchange};
use faultline_http::middleware::{Ctx, Middleware, RequestId, Timing};
use faultline_http::{Method, OwnedRequest, Request, Response, Router, handler_fn};

fn ok(_: &Request<'_>) -> Response {
    Response::text("ok")
}

#[tokio::test]
async fn params_404_and_405_with_allow() {
    let app = Router::new()
        .get("/orders/{id}", |req: &Request<'_>| {
            Response::text(format!("order {}", req.param("id").unwrap_or("")))
        })
        .post("/orders", ok)
        .get("/static/{*rest}", |req: &Request<'_>| {
            Response::text(req.param("rest").unwrap_or("").to_owned())
        });
    let s = TestServer::start(app).await;
    let r = exchange(s.addr, b"GET /orders/42?x=1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"order 42"[..]));
    let r = exchange(
        s.addr,
        b"GET /static/css/site.css HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(r.body, b"css/site.css");
    let r = exchange(s.addr, b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, br#"{"error":"not found"}"#);
    let r = exchange(s.addr, b"DELETE /orders/42 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = exchange(s.addr, b"GET /orders HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    s.stop().await;
}

#[tokio::test]
async fn route_template_reaches_metrics_middleware() {
    type Seen = Vec<(Method, Option<String>, u16)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let app = Router::new()
        .get("/orders/{id}", ok)
        .layer(Timing::new(move |c| {
            sink.lock()
                .expect("lock")
                .push((c.method, c.route.map(str::to_owned), c.status));
        }));
    let s = TestServer::start(app).await;
    exchange(s.addr, b"GET /orders/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    exchange(s.addr, b"GET /orders/2 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    exchange(s.addr, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n").await;
    exchange(
        s.addr,
        b"PUT /orders/3 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    let templ = Some("/orders/{id}".to_owned());
    assert_eq!(
        seen,
        vec![
            (Method::Get, templ.clone(), 200),
            (Method::Get, templ.clone(), 200),
            (Method::Get, None, 404),
            (Method::Put, templ, 405),
        ]
    );
    s.stop().await;
}

struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    deny_without: Option<&'static str>,
}

impl Middleware for Recorder {
    fn before(&self, req: &mut Request<'_>, _ctx: &mut Ctx) -> Option<Response> {
        self.log
            .lock()
            .expect("lock")
            .push(format!("before {}", self.name));
        match self.deny_without {
            Some(header) if req.header(header).is_none() => {
                Some(Response::error(401, "missing credentials"))
            }
            _ => None,
        }
    }

    fn after(&self, _req: &Request<'_>, ctx: &Ctx, resp: &mut Response) {
        self.log.lock().expect("lock").push(format!(
            "after {} {} panicked={}",
            self.name,
            resp.status(),
            ctx.panicked()
        ));
        resp.append_header(format!("x-after-{}", self.name), "1");
    }
}

#[tokio::test]
async fn middleware_runs_in_onion_order_and_can_short_circuit() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let app = Router::new()
        .get("/", move |_: &Request<'_>| {
            c2.fetch_add(1, Ordering::SeqCst);
            Response::text("handled")
        })
        .layer(Recorder {
            name: "outer",
            log: log.clone(),
            deny_without: None,
        })
        .layer(Recorder {
            name: "auth",
            log: log.clone(),
            deny_without: Some("authorization"),
        })
        .layer(Recorder {
            name: "inner",
            log: log.clone(),
            deny_without: None,
        });
    let s = TestServer::start(app).await;

    let r = exchange(
        s.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"handled"[..]));
    assert!(r.header("x-after-inner").is_some() && r.header("x-after-outer").is_some());
    assert_eq!(
        std::mem::take(&mut *log.lock().expect("lock")),
        [
            "before outer",
            "before auth",
            "before inner",
            "after inner 200 panicked=false",
            "after auth 200 panicked=false",
            "after outer 200 panicked=false"
        ]
    );

    let r = exchange(s.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, br#"{"error":"missing credentials"}"#);
    assert!(r.header("x-after-inner").is_none(), "inner never ran");
    assert_eq!(
        std::mem::take(&mut *log.lock().expect("lock")),
        [
            "before outer",
            "before auth",
            "after auth 401 panicked=false",
            "after outer 401 panicked=false"
        ]
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "short-circuit skipped the handler"
    );
    s.stop().await;
}

#[tokio::test]
async fn handler_panics_become_500_and_the_connection_survives() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = Router::new()
        .get("/sync", |_: &Request<'_>| -> Response {
            panic!("sync boom")
        })
        .get(
            "/async",
            handler_fn(|_req: OwnedRequest| async move {
                tokio::task::yield_now().await;
                panic!("async boom")
            }),
        )
        .get("/ok", ok)
        .layer(Recorder {
            name: "m",
            log: log.clone(),
            deny_without: None,
        });
    let s = TestServer::start(app).await;
    let mut c = common::Raw::connect(s.addr).await;
    for path in ["/sync", "/async"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        assert_eq!(c.response().await.status, 500, "{path}");
    }
    c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response().await.status, 200);
    let log = log.lock().expect("lock").clone();
    assert!(
        log.contains(&"after m 500 panicked=true".to_owned()),
        "{log:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn request_id_is_propagated_or_assigned() {
    let app = Router::new()
        .get(
            "/id",
            handler_fn(|req: OwnedRequest| async move {
                Response::text(
                    req.request_id()
                        .and_then(|v| v.to_str())
                        .unwrap_or("")
                        .to_owned(),
                )
            }),
        )
        .layer(RequestId::new());
    let s = TestServer::start(app).await;
    let r = exchange(
        s.addr,
        b"GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n",
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(r.body, b"abc-123");
    let r1 = exchange(s.addr, b"GET /id HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r2 = exchange(s.addr, b"GET /id HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_ne!(r1.header("x-request-id"), r2.header("x-request-id"));
    assert!(r1.header("x-request-id").is_some());
    s.stop().await;
}

#[tokio::test]
async fn async_handlers_share_state_and_router_works_in_process() {
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    let app = Router::new().post(
        "/count/{by}",
        handler_fn(move |req: OwnedRequest| {
            let c = c.clone();
            async move {
                let by: usize = match req.param("by").and_then(|b| b.parse().ok()) {
                    Some(by) => by,
                    None => return Response::error(422, "by must be a number"),
                };
                let total = c.fetch_add(by, Ordering::SeqCst) + by;
                Response::json(&serde_json::json!({ "total": total, "route": req.route() }))
            }
        }),
    );
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let mut req = Request::from_parts(Method::Post, "/count/5", &[], b"", peer);
    let resp = app.handle(&mut req).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(resp.body().as_slice()).expect("json");
    assert_eq!(body["total"], 5);
    assert_eq!(body["route"], "/count/{by}");
    let mut req = Request::from_parts(Method::Post, "/count/x", &[], b"", peer);
    assert_eq!(app.handle(&mut req).await.status(), 422);
    assert_eq!(counter.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn bearer_auth_rejects_missing_and_wrong_tokens_with_401() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let app = Router::new()
        .post("/v1/faults", move |_: &Request<'_>| {
            c2.fetch_add(1, Ordering::SeqCst);
            Response::new(201)
        })
        .get("/healthz", ok)
        .layer(faultline_http::middleware::BearerAuth::new("s3cret").allow_path("/healthz"));
    let s = TestServer::start(app).await;
    for auth in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Basic s3cret\r\n",
        "Authorization: Bearer s3cre\r\n",
    ] {
        let raw = format!("POST /v1/faults HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\n\r\n");
        let r = exchange(s.addr, raw.as_bytes()).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a 401 changes nothing");
    let r = exchange(
        s.addr,
        b"POST /v1/faults HTTP/1.1\r\nHost: t\r\nAuthorization: bearer s3cret\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 201);
    let r = exchange(s.addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 200);
    s.stop().await;
}
