//! `source: client` SLOs: judged on the load generator's own measurements.
//!
//! The load generator fills a [`ClientMeasurements`]: one [`ClientSecond`] per
//! wall-clock second with the request count, the error count and an HDR histogram
//! of latencies (measured from the *scheduled* send time). [`ClientBackend`]
//! evaluates `errorRate`, `latency` and `throughput` over the whole seconds inside
//! a window.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use faultline_spec::SloKind;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Evaluation, Evidence, SloBackend, SloError, unix_ms};

/// Highest latency the histograms track, in microseconds (one minute); longer
/// latencies are clamped to it.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits the histograms keep (0.1% resolution).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds with the standard bounds.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5")
}

/// Measurements of one wall-clock second.
#[derive(Debug, Clone)]
pub struct ClientSecond {
    /// Requests whose scheduled send time fell in this second.
    pub requests: u64,
    /// Of those, the ones that failed (5xx, timeout, connection error).
    pub errors: u64,
    /// Latency of every request, microseconds, from its scheduled send time.
    pub latency_us: Histogram<u64>,
}

impl Default for ClientSecond {
    fn default() -> Self {
        ClientSecond {
            requests: 0,
            errors: 0,
            latency_us: new_latency_histogram(),
        }
    }
}

impl ClientSecond {
    /// Adds another worker's measurements of the same second.
    pub fn merge(&mut self, other: &ClientSecond) {
        self.requests += other.requests;
        self.errors += other.errors;
        // Both use the same bounds, so adding cannot fail; clamp defensively anyway.
        if self.latency_us.add(&other.latency_us).is_err() {
            for v in other.latency_us.iter_recorded() {
                self.latency_us.saturating_record_n(
                    v.value_iterated_to().min(MAX_LATENCY_US),
                    v.count_at_value(),
                );
            }
        }
    }
}

/// Summary of the whole run, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadSummary {
    /// All requests sent.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Seconds with measurements.
    pub seconds: u64,
    /// Requests per second achieved over those seconds.
    pub achieved_rate: f64,
    /// Latency quantiles in milliseconds: `p50`, `p90`, `p99`, `p999`, `max`.
    pub latency_ms: BTreeMap<String, f64>,
}

/// The load generator's per-second series for one load target.
#[derive(Debug, Clone)]
pub struct ClientMeasurements {
    service: String,
    seconds: BTreeMap<i64, ClientSecond>,
}

impl ClientMeasurements {
    /// Empty measurements of traffic to `service` (the load target's service name,
    /// matched against the `service` of client SLOs).
    pub fn new(service: &str) -> Self {
        ClientMeasurements {
            service: service.to_string(),
            seconds: BTreeMap::new(),
        }
    }

    /// The load target's service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Records one request scheduled at `scheduled`.
    pub fn record(&mut self, scheduled: SystemTime, latency: Duration, ok: bool) {
        let second = self
            .seconds
            .entry(unix_ms(scheduled).div_euclid(1000))
            .or_default();
        second.requests += 1;
        if !ok {
            second.errors += 1;
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        second.latency_us.saturating_record(us);
    }

    /// Merges a worker's measurements of the second that starts at `second_start`
    /// (truncated to the whole second).
    pub fn merge_second(&mut self, second_start: SystemTime, second: &ClientSecond) {
        self.seconds
            .entry(unix_ms(second_start).div_euclid(1000))
            .or_default()
            .merge(second);
    }

    /// Every recorded second, by Unix second, oldest first.
    pub fn seconds(&self) -> impl Iterator<Item = (i64, &ClientSecond)> {
        self.seconds.iter().map(|(s, m)| (*s, m))
    }

    /// Totals and latency quantiles over everything recorded.
    pub fn summary(&self) -> LoadSummary {
        let mut total = ClientSecond::default();
        for second in self.seconds.values() {
            total.merge(second);
        }
        let seconds = self.seconds.len() as u64;
        let mut latency_ms = BTreeMap::new();
        if total.requests > 0 {
            for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                latency_ms.insert(
                    name.to_string(),
                    total.latency_us.value_at_quantile(q) as f64 / 1000.0,
                );
            }
            latency_ms.insert("max".to_string(), total.latency_us.max() as f64 / 1000.0);
        }
        LoadSummary {
            requests: total.requests,
            errors: total.errors,
            seconds,
            achieved_rate: if seconds > 0 {
                total.requests as f64 / seconds as f64
            } else {
                0.0
            },
            latency_ms,
        }
    }

    /// Evaluates `kind` over the whole seconds inside `[at - window, at)`.
    pub fn evaluate(
        &self,
        kind: &SloKind,
        window: Duration,
        at: SystemTime,
    ) -> Result<Evaluation, SloError> {
        self.check(kind)?;
        let at_ms = unix_ms(at);
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        // Whole seconds [lo, hi) that lie completely inside the window.
        let lo = (at_ms - window_ms).div_euclid(1000)
            + i64::from((at_ms - window_ms).rem_euclid(1000) != 0);
        let hi = at_ms.div_euclid(1000);
        let mut total = ClientSecond::default();
        let mut first_seen = None;
        if lo < hi {
            for (s, m) in self.seconds.range(lo..hi) {
                first_seen.get_or_insert(*s);
                total.merge(m);
            }
        }
        let description = |what: &str| {
            format!(
                "{what} of client-measured requests to {} over whole seconds in [{lo}, {hi}) (Unix s)",
                self.service
            )
        };
        let (value, query, detail) = match kind {
            SloKind::ErrorRate { .. } => {
                let q = description("errors / requests");
                if total.requests == 0 {
                    (
                        None,
                        q,
                        Some("no requests were sent in the window".to_string()),
                    )
                } else {
                    (Some(total.errors as f64 / total.requests as f64), q, None)
                }
            }
            SloKind::Latency { quantile, .. } => {
                let q = description(&format!(
                    "HDR quantile {quantile} of latency from scheduled send time"
                ));
                if total.requests == 0 {
                    (
                        None,
                        q,
                        Some("no requests were sent in the window".to_string()),
                    )
                } else {
                    let us = total.latency_us.value_at_quantile(*quantile);
                    (Some(us as f64 / 1e6), q, None)
                }
            }
            SloKind::Throughput { .. } => {
                let q = description("successful requests per second");
                match first_seen {
                    None => (
                        None,
                        q,
                        Some("the load generator recorded nothing in the window".to_string()),
                    ),
                    Some(first) => {
                        // Seconds before the load started do not count against it.
                        let span = (hi - first).max(1) as f64;
                        (Some((total.requests - total.errors) as f64 / span), q, None)
                    }
                }
            }
            SloKind::Promql { .. } => unreachable_promql()?,
        };
        Ok(Evaluation::judged(
            kind,
            at,
            value,
            Evidence {
                backend: "client".into(),
                query,
                detail,
            },
        ))
    }

    fn check(&self, kind: &SloKind) -> Result<(), SloError> {
        let unsupported = |reason: String| SloError::Unsupported {
            backend: "client",
            reason,
        };
        let service = match kind {
            SloKind::Promql { .. } => return unreachable_promql().map(|_| ()),
            SloKind::ErrorRate { route: Some(_), .. } => {
                return Err(unsupported(
                    "`route` needs server metrics; client measurements cover the whole request mix"
                        .into(),
                ));
            }
            SloKind::ErrorRate { service, .. }
            | SloKind::Latency { service, .. }
            | SloKind::Throughput { service, .. } => service,
        };
        if *service != self.service {
            return Err(unsupported(format!(
                "the load generator sends traffic to `{}`, not `{service}`",
                self.service
            )));
        }
        Ok(())
    }
}

fn unreachable_promql() -> Result<(Option<f64>, String, Option<String>), SloError> {
    Err(SloError::Unsupported {
        backend: "client",
        reason: "`promql` SLOs read server metrics; `source: client` does not apply".into(),
    })
}

/// The client-measurement SLO backend: a shared handle the load generator writes
/// through and the engine reads through.
#[derive(Debug, Clone)]
pub struct ClientBackend {
    data: Arc<RwLock<ClientMeasurements>>,
}

impl ClientBackend {
    /// A backend over fresh measurements of traffic to `service`.
    pub fn new(service: &str) -> Self {
        ClientBackend {
            data: Arc::new(RwLock::new(ClientMeasurements::new(service))),
        }
    }

    /// The shared measurements, for the load generator to write into.
    pub fn measurements(&self) -> Arc<RwLock<ClientMeasurements>> {
        Arc::clone(&self.data)
    }
}

impl SloBackend for ClientBackend {
    fn name(&self) -> &'static str {
        "client"
    }

    fn supports(&self, kind: &SloKind) -> Result<(), SloError> {
        self.data
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .check(kind)
    }

    fn evaluate<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Evaluation, SloError>> {
        Box::pin(async move {
            self.data
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .evaluate(kind, window, at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::SloStatus;
    use faultline_spec::{Percent, Rate};
    use std::time::UNIX_EPOCH;

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_000_000 + ms)
    }

    /// 10 s of 100 req/s; 1 in 20 fails; latency 1..=100 ms cycling.
    fn measurements() -> ClientMeasurements {
        let mut m = ClientMeasurements::new("gateway");
        for i in 0..1000u64 {
            let latency = Duration::from_millis(i % 100 + 1);
            m.record(t(i * 10), latency, i % 20 != 0);
        }
        m
    }

    #[test]
    fn client_error_rate_counts_failed_requests_in_whole_seconds() {
        let m = measurements();
        let kind = SloKind::ErrorRate {
            service: "gateway".into(),
            max: Percent::from_fraction(0.01).unwrap(),
            route: None,
        };
        let e = m
            .evaluate(&kind, Duration::from_secs(5), t(10_000))
            .unwrap();
        assert!((e.value.unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(e.status, SloStatus::Violated);
    }

    #[test]
    fn client_latency_reads_the_hdr_quantile() {
        let m = measurements();
        let kind = SloKind::Latency {
            service: "gateway".into(),
            quantile: 0.99,
            max: faultline_spec::Duration(Duration::from_millis(150)),
        };
        let e = m
            .evaluate(&kind, Duration::from_secs(10), t(10_000))
            .unwrap();
        // 1..=100 ms uniformly: p99 is 99 ms within HDR's 0.1% resolution.
        assert!((e.value.unwrap() - 0.099).abs() < 0.0002, "{:?}", e.value);
        assert_eq!(e.status, SloStatus::Ok);
    }

    #[test]
    fn client_throughput_counts_successes_per_second_and_no_data_when_idle() {
        let m = measurements();
        let kind = SloKind::Throughput {
            service: "gateway".into(),
            min: Rate::per_second(96.0).unwrap(),
        };
        let e = m.evaluate(&kind, Duration::from_secs(4), t(8_000)).unwrap();
        assert!((e.value.unwrap() - 95.0).abs() < 1e-9);
        assert_eq!(e.status, SloStatus::Violated);
        let e = m
            .evaluate(&kind, Duration::from_secs(4), t(60_000))
            .unwrap();
        assert_eq!(e.status, SloStatus::NoData);
    }

    #[test]
    fn client_rejects_other_services_routes_and_promql() {
        let m = measurements();
        let other = SloKind::Throughput {
            service: "orders".into(),
            min: Rate::per_second(1.0).unwrap(),
        };
        assert!(m.check(&other).is_err());
        let route = SloKind::ErrorRate {
            service: "gateway".into(),
            max: Percent::from_fraction(0.01).unwrap(),
            route: Some("/x".into()),
        };
        assert!(m.check(&route).is_err());
    }

    #[test]
    fn merged_worker_seconds_add_up() {
        let mut a = ClientSecond {
            requests: 3,
            errors: 1,
            ..Default::default()
        };
        a.latency_us.saturating_record(1000);
        let mut m = ClientMeasurements::new("gateway");
        m.merge_second(t(0), &a);
        m.merge_second(t(500), &a);
        let s = m.summary();
        assert_eq!((s.requests, s.errors, s.seconds), (6, 2, 1));
        assert!((s.latency_ms["p50"] - 1.0).abs() < 0.01);
    }
}
