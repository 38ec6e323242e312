//! The embedded engine agrees with a real Prometheus server.
//!
//! Starts Debian's `prometheus` binary on loopback (temp config and storage, 1 s
//! scrape interval), an exporter in this test serving changing counters and
//! histograms through `faultline-telemetry`, and the embedded scraper against the
//! same exporter. Then the same high-level SLOs are evaluated by both backends at
//! the same instant and must agree within 2%; raw PromQL SLOs run through the
//! Prometheus backend, including an empty result that must be `noData`.
//!
//! Needs `prometheus` on PATH (`apt-get install prometheus`). Outside CI it skips
//! with a message when missing; under `CI=true` it fails.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use faultline_controller::slo::embedded::{EmbeddedScraper, ScrapeTarget};
use faultline_controller::slo::prometheus::PrometheusBackend;
use faultline_controller::slo::{SloBackend, SloStatus};
use faultline_spec::{Percent, Rate, SloKind};
use faultline_telemetry::{CONTENT_TYPE, ServiceMetrics, encode};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod support;
use support::prometheus;

const SERVICE: &str = "agree";
const WINDOW: Duration = Duration::from_secs(10);

/// Serves `/metrics` from `registry` with a minimal HTTP/1.1 responder.
async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = encode(&registry).unwrap_or_default();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Traffic that changes every second: 200, 400 or 600 requests/s in turn, latency
/// cycling through 1..=200 ms scaled by the same phase (1×, 2×, 3×); every 20th
/// request is a 503.
async fn drive(metrics: ServiceMetrics, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i: u64 = 0;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                let phase = (ticks / 200) % 3 + 1;
                for _ in 0..phase {
                    let code = if i % 20 == 0 { 503 } else { 200 };
                    let route = if i % 2 == 0 { "/api/orders/{id}" } else { "/api/orders" };
                    metrics.observe_server_request(route, "GET", code, Duration::from_millis((i % 200 + 1) * phase));
                    i += 1;
                }
                ticks += 1;
            }
        }
    }
}

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rate_and_quantile_agree_with_prometheus_within_two_percent() -> Result<()> {
    let Some(prometheus) = prometheus::prometheus_or_skip("agreement test not run") else {
        return Ok(());
    };
    let test_start = std::time::Instant::now();
    let cancel = CancellationToken::new();
    let _cancel_on_exit = cancel.clone().drop_guard();

    // The exporter.
    let mut registry = Registry::default();
    let metrics = ServiceMetrics::register(SERVICE, &mut registry);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let exporter = listener.local_addr()?;
    tokio::spawn(serve_metrics(listener, Arc::new(registry), cancel.clone()));
    tokio::spawn(drive(metrics, cancel.clone()));

    // Prometheus, on its own temp config and storage.
    let dir = tempfile::tempdir()?;
    let (mut child, base) = prometheus::start(
        &prometheus,
        dir.path(),
        "agree",
        &[exporter.to_string()],
        std::process::Stdio::piped(),
    )?;

    // The embedded scraper, at the same interval.
    let scraper = EmbeddedScraper::new(
        vec![ScrapeTarget {
            instance: exporter.to_string(),
            url: format!("http://{exporter}/metrics"),
        }],
        Duration::from_secs(1),
    )?;
    let scraping = scraper.spawn(cancel.clone());

    let http = reqwest::Client::new();
    let ready_deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err).await;
            }
            bail!("prometheus exited with {status}: {err}");
        }
        if tokio::time::Instant::now() > ready_deadline {
            bail!("prometheus did not become ready within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Prometheus starts its scrape loops a few seconds after it reports ready; compare
    // only once *both* hold a full window of samples, or extrapolation over a partly
    // covered window would (correctly) make the rates differ.
    let prom = PrometheusBackend::new(&base, Duration::from_secs(5))?;
    let full_deadline = tokio::time::Instant::now() + Duration::from_secs(35);
    let at = loop {
        // An instant both have ingested: Prometheus' newest scrape may be up to 1 s old.
        let at = SystemTime::now() - Duration::from_secs(2);
        let covered = prom
            .query("count_over_time(up{job=\"agree\"}[12s])", at)
            .await?
            .first()
            .and_then(|s| s.points.first().map(|p| p.1))
            .unwrap_or(0.0);
        if covered >= 12.0 {
            break at;
        }
        if tokio::time::Instant::now() > full_deadline {
            bail!("prometheus holds only {covered} scrapes of the last 12 s after 35 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let embedded = scraper.backend();
    let slos = [
        (
            "errorRate",
            SloKind::ErrorRate {
                service: SERVICE.into(),
                max: Percent::from_fraction(0.10).context("percent")?,
                route: None,
            },
        ),
        (
            "errorRate route",
            SloKind::ErrorRate {
                service: SERVICE.into(),
                // The route's error rate is 10% by construction; the threshold must not
                // sit on the value, or sampling decides the status this test asserts.
                max: Percent::from_fraction(0.15).context("percent")?,
                route: Some("/api/orders/:id".into()),
            },
        ),
        (
            "throughput",
            SloKind::Throughput {
                service: SERVICE.into(),
                min: Rate::per_second(100.0).context("rate")?,
            },
        ),
        (
            "latency p50",
            SloKind::Latency {
                service: SERVICE.into(),
                quantile: 0.5,
                max: faultline_spec::Duration(Duration::from_millis(800)),
            },
        ),
        (
            "latency p90",
            SloKind::Latency {
                service: SERVICE.into(),
                quantile: 0.9,
                max: faultline_spec::Duration(Duration::from_millis(800)),
            },
        ),
        (
            "latency p99",
            SloKind::Latency {
                service: SERVICE.into(),
                quantile: 0.99,
                max: faultline_spec::Duration(Duration::from_millis(800)),
            },
        ),
    ];
    let mut failures = Vec::new();
    for (label, kind) in &slos {
        let p = prom.evaluate(kind, WINDOW, at).await?;
        let e = embedded.evaluate(kind, WINDOW, at).await?;
        assert_eq!(
            p.evidence.query, e.evidence.query,
            "both backends run the same PromQL"
        );
        let (Some(pv), Some(ev)) = (p.value, e.value) else {
            bail!("{label}: missing value: prometheus {p:?} embedded {e:?}");
        };
        let diff = rel_diff(pv, ev);
        eprintln!(
            "AGREEMENT {label:<16} prometheus={pv:.6} embedded={ev:.6} diff={:.3}%  query: {}",
            diff * 100.0,
            p.evidence.query
        );
        assert_eq!(p.status, SloStatus::Ok, "{label}: {p:?}");
        assert_eq!(e.status, SloStatus::Ok, "{label}: {e:?}");
        if diff > 0.02 {
            failures.push(format!(
                "{label}: prometheus {pv} vs embedded {ev} ({:.2}%)",
                diff * 100.0
            ));
        }
    }
    // Plausibility against the driver: 5% errors.
    let e = embedded.evaluate(&slos[0].1, WINDOW, at).await?;
    let error_rate = e.value.context("error rate")?;
    assert!((error_rate - 0.05).abs() < 0.01, "error rate {error_rate}");
    assert!(failures.is_empty(), "disagreement over 2%: {failures:#?}");

    // Raw PromQL SLOs through the Prometheus backend.
    let raw = format!(
        "sum(rate(http_server_requests_total{{service=\"{SERVICE}\",code=~\"5..\"}}[10s])) / sum(rate(http_server_requests_total{{service=\"{SERVICE}\"}}[10s]))"
    );
    let holds = SloKind::Promql {
        expr: raw.clone(),
        max: Some(0.10),
        min: None,
    };
    let e = prom.evaluate(&holds, WINDOW, at).await?;
    eprintln!(
        "PROMQL holds: {:?} status {:?} query {}",
        e.value, e.status, e.evidence.query
    );
    assert_eq!(e.status, SloStatus::Ok);
    assert_eq!(e.evidence.query, raw);
    let breaks = SloKind::Promql {
        expr: raw.clone(),
        max: Some(0.01),
        min: None,
    };
    assert_eq!(
        prom.evaluate(&breaks, WINDOW, at).await?.status,
        SloStatus::Violated
    );
    let empty = SloKind::Promql {
        expr: "sum(rate(http_server_requests_total{service=\"nobody\"}[10s]))".into(),
        max: Some(1.0),
        min: None,
    };
    let e = prom.evaluate(&empty, WINDOW, at).await?;
    assert_eq!(e.status, SloStatus::NoData, "{e:?}");
    assert!(
        e.evidence
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("empty result")
    );
    let nan = SloKind::Promql {
        expr: "sum(rate(http_server_requests_total{service=\"agree\",code=\"599\"}[10s])) / 0 * 0"
            .into(),
        max: Some(1.0),
        min: None,
    };
    let e = prom.evaluate(&nan, WINDOW, at).await?;
    assert_eq!(
        e.status,
        SloStatus::NoData,
        "empty or NaN is never a pass: {e:?}"
    );
    let bad = SloKind::Promql {
        expr: "sum(rate(".into(),
        max: Some(1.0),
        min: None,
    };
    assert!(
        prom.evaluate(&bad, WINDOW, at).await.is_err(),
        "a rejected query is an error"
    );

    // query_range: one evaluation per step, each with a value.
    let range = prom
        .evaluate_range(
            &holds,
            WINDOW,
            at - Duration::from_secs(4),
            at,
            Duration::from_secs(1),
        )
        .await?;
    assert_eq!(range.len(), 5);
    assert!(
        range
            .iter()
            .all(|e| e.status == SloStatus::Ok && e.value.is_some()),
        "{range:?}"
    );

    cancel.cancel();
    scraping.await?;
    child.kill().await?;
    assert!(
        test_start.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        test_start.elapsed()
    );
    Ok(())
}
