//! An example Faultline HTTP server, also the benchmark subject of `benches/http-vs-hyper.sh`.
//!
//! Usage: `cargo run --release -p faultline-http --example server -- [ADDR] [WORKERS]`
//! (default `127.0.0.1:8080`, 1 worker). Each worker is one current-thread runtime with its own
//! `SO_REUSEPORT` listener. Stops gracefully on SIGTERM or Ctrl-C.
//!
//! Routes: `GET /plaintext`, `GET /json`, `GET /hello/{name}` (async), `POST /echo`.

use std::net::SocketAddr;

use faultline_http::middleware::{AccessLog, RequestId};
use faultline_http::{
    OwnedRequest, Request, Response, Router, ServerConfig, handler_fn, serve_per_core,
};
use serde::Serialize;

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

fn app(with_middleware: bool) -> Router {
    let router = Router::new()
        .get("/plaintext", |_: &Request<'_>| {
            Response::text("Hello, World!")
        })
        .get("/json", |_: &Request<'_>| {
            Response::json(&Message {
                message: "Hello, World!",
            })
        })
        .get(
            "/hello/{name}",
            handler_fn(|req: OwnedRequest| async move {
                Response::text(format!("hello {}", req.param("name").unwrap_or("")))
            }),
        )
        .post("/echo", |req: &Request<'_>| {
            Response::new(200).with_body(req.body().to_vec())
        });
    if with_middleware {
        router.layer(RequestId::new()).layer(AccessLog)
    } else {
        router
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let workers: usize = args.next().map_or(Ok(1), |w| w.parse())?;
    let with_middleware = std::env::var_os("FAULTLINE_HTTP_EXAMPLE_MIDDLEWARE").is_some();
    let server = serve_per_core(addr, workers, ServerConfig::default(), move || {
        app(with_middleware)
    })?;
    println!("listening on http://{}", server.local_addr());
    let token = server.shutdown_token();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(faultline_http::shutdown_signal());
    token.cancel();
    server.join()?;
    Ok(())
}
