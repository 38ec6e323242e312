//! Serves the controller's `/metrics` (and `/healthz`) on faultline-http.

use std::sync::Arc;

use faultline_http::{HeaderValue, Request, Response, Router, Server};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::ControllerMetrics;

/// The content type of prometheus-client's (OpenMetrics) text exposition.
const TEXT: HeaderValue = HeaderValue::from_static(faultline_telemetry::CONTENT_TYPE);

/// The router: `GET /metrics` and `GET /healthz`; the router answers 404 and 405 itself.
fn router(metrics: Arc<ControllerMetrics>) -> Router {
    Router::new()
        .get("/metrics", move |_: &Request<'_>| {
            Response::text(metrics.encode()).with_content_type(TEXT)
        })
        .get("/healthz", |_: &Request<'_>| Response::text("ok\n"))
}

/// Serve until `cancel` fires, then drain in-flight requests.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<ControllerMetrics>,
    cancel: CancellationToken,
) {
    let server = Server::from_listener(listener);
    if let Err(e) = server
        .serve_with_shutdown(router(metrics), cancel.cancelled_owned())
        .await
    {
        tracing::warn!("metrics server: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_exposition_and_rejects_other_methods() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(ControllerMetrics::new());
        let outcome = crate::schedule::RunOutcome {
            verdict: crate::schedule::Verdict::Fail,
            failing_slos: vec![],
            report_path: None,
            report: None,
        };
        metrics.observe("nightly", &outcome, 3.0, 1.0);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(listener, metrics, cancel.clone()));
        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains(r#"faultline_runs_total{experiment="nightly",verdict="fail"} 1"#),
            "{ok}"
        );
        let bad = get(
            addr,
            "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 405"), "{bad}");
        let garbage = get(addr, "\x00\x01 nonsense\r\n\r\n").await;
        assert!(
            garbage.is_empty() || garbage.starts_with("HTTP/1.1 4"),
            "{garbage}"
        );
        cancel.cancel();
        server.await.unwrap();
    }
}
