//! The embedded SLO engine agrees with a real Prometheus server while both scrape a
//! RUNNING reference fleet under load (issue 7), and a raw `promql` SLO runs through the
//! Prometheus backend.
//!
//! Needs `prometheus` on PATH (Debian: `apt-get install -y prometheus`). Outside CI it
//! skips with a message when missing; under `CI=true` it fails.

#[path = "../../controller/tests/support/prometheus.rs"]
mod prometheus;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use faultline_controller::load::{self, LoadConfig};
use faultline_controller::slo::client::ClientBackend;
use faultline_controller::slo::embedded::{EmbeddedScraper, ScrapeTarget};
use faultline_controller::slo::prometheus::PrometheusBackend;
use faultline_controller::slo::{SloBackend, SloStatus};
use faultline_fleet::{ChildLogs, Fleet, LaunchOptions, Service};
use faultline_spec::{LoadRequest, LoadTarget, Percent, Rate, SloKind};
use tokio_util::sync::CancellationToken;

const WINDOW: Duration = Duration::from_secs(10);

fn kinds() -> Result<Vec<(String, SloKind)>> {
    let mut kinds = Vec::new();
    for service in ["gateway", "orders", "payments"] {
        kinds.push((
            format!("{service} throughput"),
            SloKind::Throughput {
                service: service.into(),
                min: Rate::per_second(1.0).context("rate")?,
            },
        ));
        kinds.push((
            format!("{service} errorRate"),
            SloKind::ErrorRate {
                service: service.into(),
                max: Percent::from_fraction(0.5).context("percent")?,
                route: None,
            },
        ));
        for q in [0.5, 0.9, 0.99] {
            kinds.push((
                format!("{service} p{}", q * 100.0),
                SloKind::Latency {
                    service: service.into(),
                    quantile: q,
                    max: faultline_spec::Duration(Duration::from_secs(5)),
                },
            ));
        }
    }
    Ok(kinds)
}

/// Copies every raw sample of the request metrics Prometheus scraped from the fleet in
/// the 20 s before `at` into `scraper`'s store, scrape by scrape. Returns how many
/// (timestamp, instance) scrapes were copied.
async fn ingest_prometheus_samples(
    base: &str,
    at: SystemTime,
    scraper: &EmbeddedScraper,
) -> Result<usize> {
    let query = r#"{__name__=~"http_server_requests_total|http_server_request_duration_seconds_bucket|http_client_requests_total|retries_total|degradation_level|double_charges_total",job="fleet"}[20s]"#;
    let time = at.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{base}/api/v1/query?query={}&time={time:.3}",
            percent_encode(query)
        ))
        .send()
        .await?
        .json()
        .await?;
    let result = body["data"]["result"].as_array().context("matrix result")?;
    // (timestamp ms, instance) -> exposition lines (untyped samples keep their names).
    let mut scrapes: BTreeMap<(i64, String), String> = BTreeMap::new();
    for series in result {
        let metric = series["metric"].as_object().context("metric")?;
        let name = metric["__name__"].as_str().context("name")?;
        let instance = metric["instance"].as_str().context("instance")?.to_string();
        let labels: Vec<String> = metric
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job"))
            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default()))
            .collect();
        for point in series["values"].as_array().context("values")? {
            let t = point[0].as_f64().context("timestamp")?;
            let v = point[1].as_str().context("value")?;
            let line = format!("{name}{{{}}} {v}\n", labels.join(","));
            scrapes
                .entry(((t * 1000.0).round() as i64, instance.clone()))
                .or_default()
                .push_str(&line);
        }
    }
    for ((t_ms, instance), text) in &scrapes {
        let when = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(*t_ms)?);
        scraper.ingest(instance, text, when);
    }
    Ok(scrapes.len())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rel_diff(a: f64, b: f64) -> f64 {
    if a == b {
        return 0.0;
    }
    (a - b).abs() / a.abs().max(b.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_engine_agrees_with_prometheus_on_a_running_fleet() -> Result<()> {
    let Some(prometheus) = prometheus::prometheus_or_skip("fleet agreement test not run") else {
        return Ok(());
    };
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let fleet =
        Fleet::start(LaunchOptions::new(env!("CARGO_BIN_EXE_chaos")).logs(ChildLogs::Discard))
            .await?;

    // Prometheus and the embedded scraper scrape the same five endpoints every second.
    let dir = tempfile::tempdir()?;
    let targets: Vec<String> = Service::START_ORDER
        .iter()
        .map(|s| fleet.addr(*s).to_string())
        .collect();
    let (_prom, base) = prometheus::start(
        &prometheus,
        dir.path(),
        "fleet",
        &targets,
        std::process::Stdio::null(),
    )?;
    let scraper = EmbeddedScraper::new(
        fleet
            .metrics_targets()
            .into_iter()
            .map(|r| ScrapeTarget {
                url: r.metrics_url(),
                instance: r.name,
            })
            .collect(),
        Duration::from_secs(1),
    )?;
    let _scraping = scraper.spawn(cancel.clone());

    // Bounded load: 100 req/s for at most 45 s against the gateway, the quickstart's mix.
    let spec = faultline_spec::Load {
        target: LoadTarget::Service("gateway".into()),
        rate: Rate::per_second(100.0).context("rate")?,
        connections: 8,
        max_connections: 64,
        timeout: faultline_spec::Duration(Duration::from_secs(5)),
        requests: vec![
            LoadRequest {
                method: "POST".into(),
                path: "/api/orders".into(),
                body: Some(r#"{"sku":"A-1","qty":1}"#.into()),
                headers: Default::default(),
                weight: 3,
            },
            LoadRequest {
                method: "GET".into(),
                path: "/api/orders/1".into(),
                body: None,
                headers: Default::default(),
                weight: 1,
            },
        ],
        surges: Vec::new(),
    };
    let (cfg, transport) =
        LoadConfig::from_spec(&spec, &fleet.url(Service::Gateway), Duration::from_secs(45))?;
    let client = ClientBackend::new("gateway");
    let loadgen = load::start(cfg, transport, client.measurements(), cancel.child_token())?;

    // Wait until Prometheus holds a full window of scrapes of every target.
    let prom = PrometheusBackend::new(&base, Duration::from_secs(5))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let at = loop {
        let at = SystemTime::now() - Duration::from_secs(2);
        let covered = prom
            .query("min(count_over_time(up{job=\"fleet\"}[12s]))", at)
            .await
            .ok()
            .and_then(|s| s.first().and_then(|s| s.points.first().map(|p| p.1)))
            .unwrap_or(0.0);
        if covered >= 12.0 {
            break at;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("prometheus holds only {covered} scrapes of the last 12 s after 40 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // 1. Live: both scrape the fleet on their own. Rates must agree; quantiles are
    //    printed only here, because under continuous load the two scrapers sample at
    //    different instants within each second, so each window's ends hold different
    //    requests (steps 2 and 3 check quantiles where that cannot happen).
    let embedded = scraper.backend();
    let kinds = kinds()?;
    let mut failures = Vec::new();
    for (label, kind) in &kinds {
        let p = prom.evaluate(kind, WINDOW, at).await?;
        let e = embedded.evaluate(kind, WINDOW, at).await?;
        let (Some(pv), Some(ev)) = (p.value, e.value) else {
            bail!("{label}: missing value: prometheus {p:?} embedded {e:?}");
        };
        let diff = rel_diff(pv, ev);
        eprintln!(
            "FLEET LIVE {label:<20} prometheus={pv:.6} embedded={ev:.6} diff={:.3}%",
            diff * 100.0
        );
        if !matches!(kind, SloKind::Latency { .. }) && diff > 0.02 {
            failures.push(format!("live {label}: prometheus {pv} vs embedded {ev}"));
        }
    }

    // 2. Same samples: the embedded engine gets exactly the samples Prometheus scraped
    //    from the fleet, and both evaluate the same window at the same instant.
    let same = EmbeddedScraper::new(Vec::new(), Duration::from_secs(1))?;
    let copied = ingest_prometheus_samples(&base, at, &same).await?;
    assert!(copied >= 50, "only {copied} scrapes copied from prometheus");
    let same_backend = same.backend();
    for (label, kind) in &kinds {
        let p = prom.evaluate(kind, WINDOW, at).await?;
        let e = same_backend.evaluate(kind, WINDOW, at).await?;
        let (Some(pv), Some(ev)) = (p.value, e.value) else {
            bail!("{label}: missing value: prometheus {p:?} embedded {e:?}");
        };
        let diff = rel_diff(pv, ev);
        eprintln!(
            "FLEET SAME {label:<20} prometheus={pv:.6} embedded={ev:.6} diff={:.3}%",
            diff * 100.0
        );
        if diff > 0.02 {
            failures.push(format!(
                "same samples {label}: prometheus {pv} vs embedded {ev}"
            ));
        }
    }
    // The gateway really saw the load (about 100 req/s).
    let tput = embedded.evaluate(&kinds[0].1, WINDOW, at).await?;
    let rate = tput.value.context("gateway throughput")?;
    assert!(rate > 70.0, "gateway throughput {rate}/s");
    assert!(failures.is_empty(), "disagreement over 2%: {failures:#?}");

    // Raw PromQL SLOs on the fleet through the Prometheus backend: the gateway's
    // successful request rate (must match the embedded throughput), and a 5xx ratio
    // whose numerator matches no series on a healthy fleet, which is `noData`, never a
    // pass.
    let raw = "sum(rate(http_server_requests_total{service=\"gateway\",code!~\"5..\"}[10s]))";
    let slo = SloKind::Promql {
        expr: raw.into(),
        max: None,
        min: Some(50.0),
    };
    let e = prom.evaluate(&slo, WINDOW, at).await?;
    eprintln!("PROMQL {raw} = {:?} ({:?})", e.value, e.status);
    assert_eq!(e.status, SloStatus::Ok, "{e:?}");
    assert_eq!(e.evidence.query, raw);
    let promql_rate = e.value.context("promql value")?;
    assert!(
        rel_diff(promql_rate, rate) <= 0.02,
        "promql {promql_rate} vs embedded {rate}"
    );
    // The embedded engine's raw PromQL against Prometheus' on the same samples: both
    // evaluate each expression at the same instant; values and statuses must agree.
    let exprs = [
        raw,
        "(sum(increase(retries_total{service=\"orders\"}[10s])) or vector(0)) / sum(increase(http_server_requests_total{service=\"orders\",route=\"/orders\"}[10s]))",
        "histogram_quantile(0.9, sum by (le) (rate(http_server_request_duration_seconds_bucket{service=\"gateway\"}[10s])))",
        "sum by (service) (rate(http_server_requests_total[10s]))",
        "max_over_time(degradation_level{service=\"orders\"}[10s]) + 1",
        "sum(increase(double_charges_total[10s]))",
        "-sum(rate(http_client_requests_total{service=~\"gateway|orders\"}[10s])) * 2",
        // Bound to the window each backend is given (here 10 s) on both engines.
        "sum(increase(http_server_requests_total{service=\"gateway\"}[$window]))",
    ];
    for expr in exprs {
        let slo = SloKind::Promql {
            expr: expr.into(),
            max: Some(1e9),
            min: None,
        };
        same_backend.supports(&slo)?;
        let p = prom.evaluate(&slo, WINDOW, at).await?;
        let e = same_backend.evaluate(&slo, WINDOW, at).await?;
        eprintln!(
            "PROMQL SAME {expr}: prometheus={:?} ({:?}) embedded={:?} ({:?})",
            p.value, p.status, e.value, e.status
        );
        assert_eq!(p.status, e.status, "{expr}");
        assert!(!p.evidence.query.contains('$') && p.evidence.query == e.evidence.query);
        let (Some(pv), Some(ev)) = (p.value, e.value) else {
            bail!("{expr}: missing value: prometheus {p:?} embedded {e:?}");
        };
        assert!(
            rel_diff(pv, ev) <= 0.02,
            "{expr}: prometheus {pv} vs embedded {ev}"
        );
    }
    let ratio = "sum(rate(http_server_requests_total{service=\"gateway\",code=~\"5..\"}[10s])) / sum(rate(http_server_requests_total{service=\"gateway\"}[10s]))";
    let e = prom
        .evaluate(
            &SloKind::Promql {
                expr: ratio.into(),
                max: Some(0.005),
                min: None,
            },
            WINDOW,
            at,
        )
        .await?;
    eprintln!("PROMQL {ratio} = {:?} ({:?})", e.value, e.status);
    assert_eq!(e.status, SloStatus::NoData, "{e:?}");

    // 3. Live again, on a burst of load with idle on both sides of the window: both
    //    scrapers then see every request of the window (flat counters at its ends), so
    //    the quantiles must agree live too, not only on copied samples.
    loadgen.stop();
    let _ = loadgen.wait().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cfg, transport) =
        LoadConfig::from_spec(&spec, &fleet.url(Service::Gateway), Duration::from_secs(5))?;
    let burst = load::start(cfg, transport, client.measurements(), cancel.child_token())?;
    let _ = burst.wait().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The window [at - 10 s, at] holds >= 1.5 s of idle, the 5 s burst, ~3 s of idle.
    let at = SystemTime::now() - Duration::from_millis(500);
    let mut failures = Vec::new();
    for (label, kind) in &kinds {
        let p = prom.evaluate(kind, WINDOW, at).await?;
        let e = embedded.evaluate(kind, WINDOW, at).await?;
        let (Some(pv), Some(ev)) = (p.value, e.value) else {
            bail!("burst {label}: missing value: prometheus {p:?} embedded {e:?}");
        };
        let diff = rel_diff(pv, ev);
        eprintln!(
            "FLEET BURST {label:<20} prometheus={pv:.6} embedded={ev:.6} diff={:.3}%",
            diff * 100.0
        );
        if diff > 0.02 {
            failures.push(format!("burst {label}: prometheus {pv} vs embedded {ev}"));
        }
    }
    assert!(failures.is_empty(), "disagreement over 2%: {failures:#?}");

    cancel.cancel();
    fleet.stop().await;
    Ok(())
}
