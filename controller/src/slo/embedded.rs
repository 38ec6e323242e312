//! The embedded backend: a scraper that reads every target's `/metrics` each
//! interval into a [`Store`], and evaluates the high-level SLO kinds on it with the
//! same semantics as Prometheus (see [`super::tsdb`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use faultline_spec::SloKind;
use futures_util::future::join_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::promql::{Sli, compile, query_text};
use super::tsdb::{CompiledSelector, Labels, Store};
use super::{BoxFuture, Evaluation, Evidence, SloBackend, SloError, unix_ms};

/// Label the scraper adds to every series: which target it came from.
pub const INSTANCE_LABEL: &str = "instance";
/// Series the scraper writes per target: 1 when the scrape succeeded, 0 otherwise.
pub const UP_METRIC: &str = "up";
/// How long samples are kept by default; longer than any SLO window in practice.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(15 * 60);

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// Value of the `instance` label, e.g. `orders` or `127.0.0.1:40123`.
    pub instance: String,
    /// Full URL of the metrics endpoint, e.g. `http://127.0.0.1:40123/metrics`.
    pub url: String,
}

/// The result of scraping one target once.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeOutcome {
    /// The target's instance label.
    pub instance: String,
    /// Samples stored, or why the scrape failed.
    pub result: Result<usize, String>,
}

struct Inner {
    store: RwLock<Store>,
    targets: RwLock<Vec<ScrapeTarget>>,
    client: reqwest::Client,
    interval: Duration,
}

/// The scraper and its store. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct EmbeddedScraper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedScraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedScraper")
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl EmbeddedScraper {
    /// A scraper for `targets` every `interval` (each scrape times out after one
    /// interval), keeping [`DEFAULT_RETENTION`] of samples.
    pub fn new(targets: Vec<ScrapeTarget>, interval: Duration) -> Result<Self, SloError> {
        validate_targets(&targets)?;
        if interval.is_zero() {
            return Err(SloError::InvalidConfig(
                "scrape interval must be positive".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(interval)
            .build()
            .map_err(|e| SloError::InvalidConfig(format!("http client: {e}")))?;
        Ok(EmbeddedScraper {
            inner: Arc::new(Inner {
                store: RwLock::new(Store::new(DEFAULT_RETENTION)),
                targets: RwLock::new(targets),
                client,
                interval,
            }),
        })
    }

    /// Replaces the target list (e.g. after the launcher restarted a service on a new port).
    pub fn set_targets(&self, targets: Vec<ScrapeTarget>) -> Result<(), SloError> {
        validate_targets(&targets)?;
        *self
            .inner
            .targets
            .write()
            .unwrap_or_else(|e| e.into_inner()) = targets;
        Ok(())
    }

    /// Scrapes every target once, concurrently, and stores what it got.
    pub async fn scrape_once(&self) -> Vec<ScrapeOutcome> {
        let targets = self
            .inner
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let scrapes = targets.into_iter().map(|target| async move {
            let at = SystemTime::now();
            let body = self.fetch(&target.url).await;
            let result = match body {
                Ok(text) => {
                    let stored = self.ingest(&target.instance, &text, at);
                    self.append_up(&target.instance, at, 1.0);
                    Ok(stored)
                }
                Err(message) => {
                    tracing::debug!(instance = %target.instance, %message, "scrape failed");
                    self.append_up(&target.instance, at, 0.0);
                    Err(message)
                }
            };
            ScrapeOutcome {
                instance: target.instance,
                result,
            }
        });
        join_all(scrapes).await
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let response = self
            .inner
            .client
            .get(url)
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.text().await.map_err(|e| e.to_string())
    }

    fn append_up(&self, instance: &str, at: SystemTime, value: f64) {
        let labels: Labels = [(INSTANCE_LABEL.to_string(), instance.to_string())].into();
        self.inner
            .store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .append(UP_METRIC, labels, unix_ms(at), value);
    }

    /// Parses one exposition (Prometheus text or OpenMetrics) scraped at `at` from
    /// `instance` and stores its samples. Returns how many samples were stored.
    /// Histograms are stored as their `_bucket` series with an `le` label, as
    /// Prometheus stores them; `_sum` and `_count` arrive as their own series.
    pub fn ingest(&self, instance: &str, text: &str, at: SystemTime) -> usize {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
            return 0;
        };
        let t = unix_ms(at);
        let mut store = self.inner.store.write().unwrap_or_else(|e| e.into_inner());
        let mut stored = 0;
        for sample in scrape.samples {
            let mut labels: Labels = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.insert(INSTANCE_LABEL.to_string(), instance.to_string());
            match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => {
                    store.append(&sample.metric, labels, t, v);
                    stored += 1;
                }
                prometheus_parse::Value::Histogram(buckets) => {
                    let name = format!("{}_bucket", sample.metric);
                    for bucket in buckets {
                        let mut labels = labels.clone();
                        labels.insert("le".to_string(), format_le(bucket.less_than));
                        store.append(&name, labels, t, bucket.count);
                        stored += 1;
                    }
                }
                prometheus_parse::Value::Summary(quantiles) => {
                    for q in quantiles {
                        let mut labels = labels.clone();
                        labels.insert("quantile".to_string(), format_le(q.quantile));
                        store.append(&sample.metric, labels, t, q.count);
                        stored += 1;
                    }
                }
            }
        }
        stored
    }

    /// Scrapes every interval until `cancel` fires. The task is owned by the caller
    /// through the returned handle.
    pub fn spawn(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let scraper = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(scraper.inner.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        scraper.scrape_once().await;
                    }
                }
            }
        })
    }

    /// The SLO backend reading this scraper's store.
    pub fn backend(&self) -> EmbeddedBackend {
        EmbeddedBackend {
            scraper: self.clone(),
        }
    }

    /// Runs `f` with read access to the store (for reports and tests).
    pub fn with_store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.inner.store.read().unwrap_or_else(|e| e.into_inner()))
    }
}

fn validate_targets(targets: &[ScrapeTarget]) -> Result<(), SloError> {
    for t in targets {
        let url = reqwest::Url::parse(&t.url).map_err(|e| {
            SloError::InvalidConfig(format!("target `{}` URL `{}`: {e}", t.instance, t.url))
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(SloError::InvalidConfig(format!(
                "target `{}` URL `{}` is not http(s)",
                t.instance, t.url
            )));
        }
    }
    Ok(())
}

fn format_le(le: f64) -> String {
    if le == f64::INFINITY {
        "+Inf".to_string()
    } else {
        le.to_string()
    }
}

/// The embedded SLO backend. Evaluates `errorRate`, `latency` and `throughput`, and raw
/// PromQL in the subset [`super::eval`] lists.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    scraper: EmbeddedScraper,
}

impl EmbeddedBackend {
    /// Evaluates synchronously (the store is in memory).
    pub fn evaluate_now(
        &self,
        kind: &SloKind,
        window: Duration,
        at: SystemTime,
    ) -> Result<Evaluation, SloError> {
        let at_ms = unix_ms(at);
        let Some(sli) = compile(kind) else {
            let expr = query_text(kind, window);
            let (value, detail) = self.scraper.with_store(|store| {
                super::eval::evaluate_slo(store, &expr, &super::Threshold::of(kind), at_ms)
            })?;
            return Ok(Evaluation::judged(
                kind,
                at,
                value,
                Evidence {
                    backend: "embedded".into(),
                    query: expr,
                    detail,
                    generator: None,
                },
            ));
        };
        let query = sli.to_promql(window);
        let (value, detail) = self.scraper.with_store(|store| -> Result<_, SloError> {
            Ok(match &sli {
                Sli::Ratio {
                    numerator,
                    denominator,
                } => {
                    let den = store.sum_rate(&CompiledSelector::new(denominator)?, window, at_ms);
                    let num = store.sum_rate(&CompiledSelector::new(numerator)?, window, at_ms);
                    match den {
                        None => (
                            None,
                            Some(format!(
                                "no series of {denominator} with two samples in the window"
                            )),
                        ),
                        Some(den) => (Some(num.unwrap_or(0.0) / den), None),
                    }
                }
                Sli::Quantile { q, buckets } => {
                    match store.quantile(*q, &CompiledSelector::new(buckets)?, window, at_ms) {
                        None => (
                            None,
                            Some(format!(
                                "no series of {buckets} with two samples in the window"
                            )),
                        ),
                        Some(v) if v.is_nan() => {
                            (Some(v), Some("no observations in the window".to_string()))
                        }
                        Some(v) => (Some(v), None),
                    }
                }
                Sli::Rate { selector } => {
                    match store.sum_rate(&CompiledSelector::new(selector)?, window, at_ms) {
                        None => (
                            None,
                            Some(format!(
                                "no series of {selector} with two samples in the window"
                            )),
                        ),
                        Some(v) => (Some(v), None),
                    }
                }
            })
        })?;
        Ok(Evaluation::judged(
            kind,
            at,
            value,
            Evidence {
                backend: "embedded".into(),
                query,
                detail,
                generator: None,
            },
        ))
    }
}

impl SloBackend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn supports(&self, kind: &SloKind) -> Result<(), SloError> {
        match kind {
            SloKind::Promql { expr, .. } => {
                super::eval::check(expr)
                    .map(|_| ())
                    .map_err(|reason| SloError::Unsupported {
                        backend: "embedded",
                        reason,
                    })
            }
            _ => Ok(()),
        }
    }

    fn evaluate<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Evaluation, SloError>> {
        Box::pin(async move { self.evaluate_now(kind, window, at) })
    }

    fn reactions(
        &self,
        at: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<super::reactions::ReactionSample>, SloError>> {
        let got = self
            .scraper
            .with_store(|store| super::reactions::from_store(store, unix_ms(at)));
        Box::pin(async move { got })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::SloStatus;
    use faultline_spec::Percent;
    use std::time::UNIX_EPOCH;

    fn exposition(ok: u64, errors: u64, fast: u64, slow: u64) -> String {
        format!(
            "# TYPE http_server_requests counter\n\
             http_server_requests_total{{service=\"gw\",route=\"/a\",method=\"GET\",code=\"200\"}} {ok}\n\
             http_server_requests_total{{service=\"gw\",route=\"/a\",method=\"GET\",code=\"503\"}} {errors}\n\
             # TYPE http_server_request_duration_seconds histogram\n\
             http_server_request_duration_seconds_bucket{{service=\"gw\",route=\"/a\",method=\"GET\",le=\"0.1\"}} {fast}\n\
             http_server_request_duration_seconds_bucket{{service=\"gw\",route=\"/a\",method=\"GET\",le=\"0.5\"}} {}\n\
             http_server_request_duration_seconds_bucket{{service=\"gw\",route=\"/a\",method=\"GET\",le=\"+Inf\"}} {}\n\
             # EOF\n",
            fast + slow,
            fast + slow
        )
    }

    fn scraper_with_history() -> EmbeddedScraper {
        let s = EmbeddedScraper::new(vec![], Duration::from_secs(1)).unwrap();
        // 0..=10 s: 90 ok/s, 10 errors/s; 80 fast and 20 slow observations per second.
        for t in 0..=10u64 {
            let text = exposition(90 * t, 10 * t, 80 * t, 20 * t);
            s.ingest("gw-0", &text, UNIX_EPOCH + Duration::from_secs(1000 + t));
        }
        s
    }

    #[test]
    fn embedded_error_rate_is_the_share_of_5xx() {
        let b = scraper_with_history().backend();
        let kind = SloKind::ErrorRate {
            service: "gw".into(),
            max: Percent::from_fraction(0.05).unwrap(),
            route: None,
        };
        let e = b
            .evaluate_now(
                &kind,
                Duration::from_secs(10),
                UNIX_EPOCH + Duration::from_secs(1010),
            )
            .unwrap();
        assert!((e.value.unwrap() - 0.10).abs() < 1e-9);
        assert_eq!(e.status, SloStatus::Violated);
        assert!(e.evidence.query.contains("code=~\"5..\""));
    }

    #[test]
    fn embedded_latency_interpolates_the_quantile() {
        let b = scraper_with_history().backend();
        let kind = SloKind::Latency {
            service: "gw".into(),
            quantile: 0.9,
            max: faultline_spec::Duration(Duration::from_millis(400)),
        };
        let e = b
            .evaluate_now(
                &kind,
                Duration::from_secs(10),
                UNIX_EPOCH + Duration::from_secs(1010),
            )
            .unwrap();
        // rank 90 of 100: 10 into the (0.1, 0.5] bucket of 20 → 0.3 s.
        assert!((e.value.unwrap() - 0.3).abs() < 1e-9, "{e:?}");
        assert_eq!(e.status, SloStatus::Ok);
    }

    #[test]
    fn embedded_reports_no_data_for_unknown_service_and_rejects_promql() {
        let b = scraper_with_history().backend();
        let kind = SloKind::Throughput {
            service: "nobody".into(),
            min: faultline_spec::Rate::per_second(1.0).unwrap(),
        };
        let e = b
            .evaluate_now(
                &kind,
                Duration::from_secs(10),
                UNIX_EPOCH + Duration::from_secs(1010),
            )
            .unwrap();
        assert_eq!(e.status, SloStatus::NoData);
        assert!(e.evidence.detail.unwrap().contains("no series"));
        let outside = SloKind::Promql {
            expr: "topk(1, up)".into(),
            max: Some(1.0),
            min: None,
        };
        assert!(matches!(
            b.supports(&outside),
            Err(SloError::Unsupported { .. })
        ));
    }

    #[test]
    fn embedded_raw_promql_reads_the_scraped_series() {
        let b = scraper_with_history().backend();
        // The same error share the `errorRate` kind computes, written by hand.
        let expr = r#"sum(rate(http_server_requests_total{service="gw",code=~"5.."}[10s])) / sum(rate(http_server_requests_total{service="gw"}[10s]))"#;
        let by_hand = SloKind::Promql {
            expr: expr.into(),
            max: Some(0.01),
            min: None,
        };
        let built_in = SloKind::ErrorRate {
            service: "gw".into(),
            max: Percent::from_fraction(0.01).unwrap(),
            route: None,
        };
        b.supports(&by_hand).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1010);
        let window = Duration::from_secs(10);
        let raw = b.evaluate_now(&by_hand, window, at).unwrap();
        let compiled = b.evaluate_now(&built_in, window, at).unwrap();
        assert_eq!(raw.value, compiled.value);
        assert_eq!(raw.status, compiled.status);
        assert_eq!(raw.evidence.query, expr);
        assert!((raw.value.unwrap() - 0.10).abs() < 1e-9);
    }

    #[test]
    fn embedded_raw_promql_window_placeholder_follows_the_window_it_is_given() {
        let b = scraper_with_history().backend();
        // 10 errors/s: the increase over the bound window counts 10 per second of it.
        let kind = SloKind::Promql {
            expr: r#"sum(increase(http_server_requests_total{service="gw",code="503"}[$window]))"#
                .into(),
            max: Some(45.0),
            min: None,
        };
        b.supports(&kind).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1010);
        let full = b.evaluate_now(&kind, Duration::from_secs(10), at).unwrap();
        let clipped = b.evaluate_now(&kind, Duration::from_secs(4), at).unwrap();
        assert!((full.value.unwrap() - 100.0).abs() < 1e-9, "{full:?}");
        assert!((clipped.value.unwrap() - 40.0).abs() < 1e-9, "{clipped:?}");
        assert_eq!(full.status, SloStatus::Violated);
        assert_eq!(clipped.status, SloStatus::Ok);
        assert!(clipped.evidence.query.contains("[4s]"), "{clipped:?}");
    }

    #[test]
    fn embedded_rate_survives_a_target_restart_that_resets_counters() {
        let s = EmbeddedScraper::new(vec![], Duration::from_secs(1)).unwrap();
        // 100 req/s, no errors; the service restarts after t=5 and counts from zero.
        for t in 0..=10u64 {
            let total = if t <= 5 { 100 * t } else { 100 * (t - 5) };
            s.ingest(
                "gw-0",
                &exposition(total, 0, total, 0),
                UNIX_EPOCH + Duration::from_secs(1000 + t),
            );
        }
        let kind = SloKind::Throughput {
            service: "gw".into(),
            min: faultline_spec::Rate::per_second(50.0).unwrap(),
        };
        let e = s
            .backend()
            .evaluate_now(
                &kind,
                Duration::from_secs(10),
                UNIX_EPOCH + Duration::from_secs(1010),
            )
            .unwrap();
        // Without reset handling the increase would be last - first = 500 (50/s); with
        // it the pre-reset 500 is added back: 1000 over the 10 s range, 100/s.
        assert!((e.value.unwrap() - 100.0).abs() < 1e-9, "{e:?}");
    }

    #[tokio::test]
    async fn scrape_of_an_unreachable_target_records_up_zero() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = EmbeddedScraper::new(
            vec![ScrapeTarget {
                instance: "gone".into(),
                url: format!("http://{addr}/metrics"),
            }],
            Duration::from_secs(1),
        )
        .unwrap();
        let outcomes = s.scrape_once().await;
        assert!(outcomes[0].result.is_err());
        let up = s.with_store(|st| {
            let sel = CompiledSelector::new(&crate::slo::promql::Selector {
                metric: UP_METRIC.into(),
                matchers: vec![],
            })
            .unwrap();
            st.range(&sel, Duration::from_secs(60), unix_ms(SystemTime::now()))
                .into_iter()
                .map(|(_, samples)| samples)
                .collect::<Vec<_>>()
        });
        assert_eq!(up[0][0].1, 0.0);
    }

    #[test]
    fn invalid_target_urls_are_rejected() {
        let err = EmbeddedScraper::new(
            vec![ScrapeTarget {
                instance: "x".into(),
                url: "ftp://127.0.0.1/metrics".into(),
            }],
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not http"));
    }
}
