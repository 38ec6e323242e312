//! The load generator's honesty (issue 14): when it cannot offer the open model's load
//! because it may not open enough connections, client SLOs are `inconclusive`, never
//! FAIL or PASS, and every report rendering says how long requests waited inside it;
//! with enough connections the same SLO is judged normally.
//!
//! Real time and real sockets on purpose: a loopback server that answers every request
//! after 400 ms, offered 100 req/s (about 40 requests in flight) through the real
//! runner, generator, client SLO backend and verdict code. Two runs of 4 s each.

use std::sync::Arc;
use std::time::Duration;

use faultline_controller::report::{Outcome, RunReport, SloVerdict, html, json, junit, terminal};
use faultline_controller::run::{
    AgentHandle, Environment, Interrupt, Placement, RunConfig, RunError, run,
};
use faultline_controller::slo::{BoxFuture, NoBackend, SloBackend, SloStatus};
use faultline_spec::{Fault, LoadTarget, ValidateOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const SERVICE_TIME: Duration = Duration::from_millis(400);

/// Answers every request on a keep-alive connection with `200 ok` after
/// [`SERVICE_TIME`]. Requests carry no body (`GET`), so a request ends at the blank line.
async fn slow_connection(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            tokio::time::sleep(SERVICE_TIME).await;
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A slow server on 127.0.0.1 port 0; it and every connection stop when the returned
/// set is dropped.
async fn slow_server() -> anyhow::Result<(String, JoinSet<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(slow_connection(stream));
        }
    });
    Ok((url, tasks))
}

/// No faults and no agents; the load target `gateway` is the slow server.
struct LoopbackEnv {
    url: String,
}

impl Environment for LoopbackEnv {
    fn mode(&self) -> faultline_controller::report::RunMode {
        faultline_controller::report::RunMode::Local
    }
    fn resolve<'a>(&'a self, _fault: &'a Fault) -> BoxFuture<'a, Result<Vec<Placement>, RunError>> {
        Box::pin(async { Err(RunError::InvalidInput("no faults in this test".into())) })
    }
    fn agents(&self) -> Vec<Arc<dyn AgentHandle>> {
        Vec::new()
    }
    fn slo_backend(&self) -> Arc<dyn SloBackend> {
        Arc::new(NoBackend::new("this test judges client SLOs only"))
    }
    fn load_url(&self, _target: &LoadTarget) -> Result<String, RunError> {
        Ok(self.url.clone())
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// 100 req/s for 4 s at a server that takes 400 ms, with 4 connections up front and at
/// most `max_connections`; the client P99 must stay within 1 s. `extra` is appended to
/// the spec.
async fn run_against_slow_server(max_connections: u32, extra: &str) -> anyhow::Result<RunReport> {
    let (url, _server) = slow_server().await?;
    let text = format!(
        r#"
apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {{name: generator-honesty}}
spec:
  duration: 4s
  load:
    target: gateway
    rate: 100/s
    connections: 4
    maxConnections: {max_connections}
    timeout: 2s
    requests: [{{path: /}}]
  slos:
    - name: client-p99
      source: client
      latency: {{service: gateway, quantile: 0.99, max: 1s}}
      window: 2s
{extra}"#
    );
    let experiment = faultline_spec::parse_str(&text, "honesty.yaml", &ValidateOptions::default())
        .map_err(|d| anyhow::anyhow!("{d}"))?
        .remove(0);
    let env = Arc::new(LoopbackEnv { url });
    Ok(run(&experiment, env, &RunConfig::default(), &Interrupt::new()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_connections_make_the_client_slo_inconclusive_with_the_generator_delay_reported()
-> anyhow::Result<()> {
    // 8 connections at 400 ms serve 20 of the 100 req/s: the rest wait inside the
    // generator, and their latency (up to the 2 s timeout) would fail the 1 s P99.
    let report = run_against_slow_server(8, "").await?;
    let summary = terminal::summary(&report, false);
    assert_eq!(report.verdict.outcome, Outcome::Inconclusive, "{summary}");
    let slo = &report.slos[0];
    assert_eq!(slo.verdict, SloVerdict::Inconclusive, "{summary}");
    // Never a failure: no judged sample was a violation the generator did not cause.
    assert!(slo.violations().next().is_none(), "{summary}");
    assert!(
        slo.samples
            .iter()
            .all(|e| e.status == SloStatus::Inconclusive),
        "{summary}"
    );
    let taint = slo.worst_taint().expect("the evidence carries the figures");
    assert!(taint.delay_ms > 500.0, "{taint:?}");
    // Every sample says why: the delay at the P99 past its 100 ms tolerance, or
    // requests of the window still queued inside the generator.
    assert!(
        slo.samples.iter().all(|e| e.evidence.generator.is_some()),
        "{summary}"
    );
    assert!(
        report.verdict.reason.contains("client-p99")
            && report.verdict.reason.contains("maxConnections"),
        "{}",
        report.verdict.reason
    );

    // The generator-delay figure is in every rendering.
    let load = report.load.as_ref().expect("load summary");
    assert_eq!(
        (
            load.connections,
            load.max_connections,
            load.peak_connections
        ),
        (Some(4), Some(8), Some(8))
    );
    assert!(load.waited_long_requests > 100, "{load:?}");
    assert!(load.generator_delay_ms["p99"] > 500.0, "{load:?}");
    assert!(summary.contains("INCONCLUSIVE"), "{summary}");
    assert!(summary.contains("generator: delay p99"), "{summary}");
    assert!(summary.contains(&taint.reason), "{summary}");
    assert!(summary.contains("(exit 4)"), "{summary}");
    let j: serde_json::Value = serde_json::from_str(&json::to_json(&report)?)?;
    assert_eq!(j["verdict"]["outcome"], "inconclusive");
    assert!(
        j["load"]["generatorDelayMs"]["p99"].as_f64().unwrap() > 500.0,
        "{j}"
    );
    assert!(
        j["slos"][0]["samples"][0]["evidence"]["generator"]["delayMs"].is_number(),
        "{j}"
    );
    let xml = junit::to_junit(&report)?;
    assert!(
        xml.contains(r#"<failure type="inconclusive""#)
            && xml.contains(&junit::escape_xml(&taint.reason)),
        "{xml}"
    );
    let page = html::to_html(&report)?;
    assert!(
        page.contains("Not judged in")
            && page.contains(&taint.reason)
            && page.contains("delay p99"),
        "HTML lacks the generator delay"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enough_connections_let_the_same_client_slo_be_judged() -> anyhow::Result<()> {
    // About 40 requests are in flight; 64 connections leave room to spare.
    let report = run_against_slow_server(64, "").await?;
    let summary = terminal::summary(&report, false);
    assert_eq!(report.verdict.outcome, Outcome::Pass, "{summary}");
    let slo = &report.slos[0];
    assert_eq!(slo.verdict, SloVerdict::Pass, "{summary}");
    assert!(slo.inconclusive().next().is_none(), "{summary}");
    let load = report.load.as_ref().expect("load summary");
    assert!(load.peak_connections.unwrap() >= 40, "{load:?}");
    assert_eq!(load.expired_requests, 0, "{load:?}");
    // Measured from the scheduled time, the P99 is the server's 400 ms plus little.
    let worst = slo.worst_value().unwrap();
    assert!((0.4..1.0).contains(&worst), "{summary}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_state_the_generator_distorted_is_inconclusive_and_ends_the_run()
-> anyhow::Result<()> {
    let report =
        run_against_slow_server(8, "  steadyState: {window: 3s, slos: [client-p99]}\n").await?;
    let summary = terminal::summary(&report, false);
    assert_eq!(report.verdict.outcome, Outcome::Inconclusive, "{summary}");
    let steady = report.steady_state.as_ref().expect("steady state checked");
    assert!(!steady.passed && steady.reason.is_none(), "{steady:?}");
    assert_eq!(steady.inconclusive, ["client-p99"]);
    assert_eq!(steady.slos["client-p99"], SloVerdict::Inconclusive);
    assert!(
        report
            .verdict
            .reason
            .starts_with("steady state could not be judged")
            && report.verdict.reason.contains("maxConnections"),
        "{}",
        report.verdict.reason
    );
    Ok(())
}
