//! `source: client` SLOs: judged on the load generator's own measurements.
//!
//! The load generator fills a [`ClientMeasurements`]: one [`ClientSecond`] per
//! wall-clock second with the request count, the error count and an HDR histogram
//! of latencies (measured from the *scheduled* send time). [`ClientBackend`]
//! evaluates `errorRate`, `latency` and `throughput` over the whole seconds inside
//! a window.
//!
//! The generator also records, per second, how long each request waited inside it
//! before it was handed to a connection (its *generator delay*), and which requests
//! expired there unsent. A client SLO evaluation whose window holds more of that than
//! the tolerances below allow is [`SloStatus::Inconclusive`]: the value would describe
//! the generator, not the system (see `docs/running.md`, "Load generator").

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use faultline_spec::SloKind;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Evaluation, Evidence, SloBackend, SloError, SloStatus, unix_ms};

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

/// A generator-delay histogram in microseconds: the latency bounds at 1% resolution,
/// which is all a tolerance check needs, at about a seventh of the memory per second.
pub fn new_delay_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5")
}

// How much the load generator may distort a client SLO's window before that window is
// not judged. All tolerances live here; `docs/running.md` explains them.

/// Generator delay always tolerated. tokio's timer has 1 ms resolution and CPU faults
/// run on the same machine as the generator, so a few milliseconds of dispatch
/// lateness are normal and must not make a run inconclusive.
pub const TAINT_DELAY_FLOOR: Duration = Duration::from_millis(10);
/// Generator delay tolerated as a share of a latency SLO's threshold, when above the
/// floor: up to 10% of the bound cannot flip a verdict the system did not earn.
pub const TAINT_DELAY_SHARE_OF_THRESHOLD: f64 = 0.10;
/// A request that waited longer than this share of its timeout inside the generator
/// has lost enough of its deadline to be timed out by the generator, not the system.
pub const TAINT_WAIT_SHARE_OF_TIMEOUT: f64 = 0.10;
/// Share of a window's requests that may have waited that long before error-rate and
/// throughput SLOs are not judged on it.
pub const TAINT_REQUEST_SHARE: f64 = 0.01;

/// The generator delay a latency SLO with bound `max` tolerates:
/// `max(TAINT_DELAY_FLOOR, TAINT_DELAY_SHARE_OF_THRESHOLD × max)`.
pub fn latency_delay_tolerance(max: Duration) -> Duration {
    TAINT_DELAY_FLOOR.max(max.mul_f64(TAINT_DELAY_SHARE_OF_THRESHOLD))
}

/// Why a client SLO evaluation was not judged: what the load generator did to the
/// requests of its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorTaint {
    /// One sentence with the figures, for people.
    pub reason: String,
    /// Generator delay at the SLO's quantile (latency SLOs) or the largest delay
    /// (other kinds), milliseconds.
    pub delay_ms: f64,
    /// The delay the SLO tolerates (latency SLOs), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_ms: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
    /// Of those, requests that waited longer than [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of
    /// their timeout inside the generator (including expired ones).
    pub waited_long: u64,
    /// Of those, requests that expired inside the generator without being sent.
    pub expired: u64,
    /// Requests scheduled in the window that were still waiting inside the generator
    /// for a connection when it was evaluated (not among `requests`, which counts
    /// finished ones).
    #[serde(default)]
    pub waiting: u64,
}

/// The generator's live backlog: requests released but not yet taken by a connection.
/// Requests finish (and are recorded) only after they were sent, so without this a
/// window whose requests are all still queued inside the generator would look like a
/// window without traffic.
pub trait Backlog: Send + Sync {
    /// The requests scheduled in `[from, to)` that are waiting inside the generator now.
    fn waiting_between(&self, from: SystemTime, to: SystemTime) -> Waiting;
}

/// Requests of a window still queued inside the load generator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// How many.
    pub count: u64,
    /// When the oldest of them was scheduled.
    pub oldest: Option<SystemTime>,
}

/// A shared [`Backlog`], so [`ClientMeasurements`] stays `Clone` and `Debug`.
#[derive(Clone)]
struct BacklogProbe(Arc<dyn Backlog>);

impl std::fmt::Debug for BacklogProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BacklogProbe")
    }
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
    /// Generator delay of every open-model request, microseconds: from its scheduled
    /// send time until it was handed to a connection (or, if it expired, until the
    /// generator gave up on it).
    pub generator_delay_us: Histogram<u64>,
    /// Requests that waited longer than [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of their
    /// timeout inside the generator, expired ones included.
    pub waited_long: u64,
    /// Requests that expired inside the generator without being sent (k6's
    /// `dropped_iterations`); they also count as errors (timeouts).
    pub expired: u64,
}

impl Default for ClientSecond {
    fn default() -> Self {
        ClientSecond {
            requests: 0,
            errors: 0,
            latency_us: new_latency_histogram(),
            generator_delay_us: new_delay_histogram(),
            waited_long: 0,
            expired: 0,
        }
    }
}

impl ClientSecond {
    /// Adds another worker's measurements of the same second.
    pub fn merge(&mut self, other: &ClientSecond) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.waited_long += other.waited_long;
        self.expired += other.expired;
        add_clamped(&mut self.latency_us, &other.latency_us);
        add_clamped(&mut self.generator_delay_us, &other.generator_delay_us);
    }

    /// Requests the generator handed on (or gave up on) more than `delay` after their
    /// scheduled time.
    pub fn delayed_over(&self, delay: Duration) -> u64 {
        if self.generator_delay_us.is_empty() {
            return 0;
        }
        let floor_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.generator_delay_us
            .count_between(floor_us.saturating_add(1), MAX_LATENCY_US)
    }

    /// Why the generator's own delay makes this (merged) window unfit to judge `kind`,
    /// if it does; `waiting` is how many requests scheduled in the window are still
    /// queued inside the generator, the oldest for `waited_so_far`. Server-side kinds
    /// are never tainted.
    pub fn taint(
        &self,
        kind: &SloKind,
        waiting: u64,
        waited_so_far: Duration,
    ) -> Option<GeneratorTaint> {
        if matches!(kind, SloKind::Promql { .. }) || self.requests + waiting == 0 {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let max_delay_ms = if self.generator_delay_us.is_empty() {
            0.0
        } else {
            ms(self.generator_delay_us.max())
        };
        let taint = |reason: String, delay_ms: f64, tolerance_ms: Option<f64>| GeneratorTaint {
            reason,
            delay_ms,
            tolerance_ms,
            requests: self.requests,
            waited_long: self.waited_long,
            expired: self.expired,
            waiting,
        };
        // Requests still queued inside the generator are missing from every kind's
        // value, and they are the slowest ones: judging without them would flatter the
        // system.
        let scheduled = (self.requests + waiting) as f64;
        if waiting > 0 && (self.requests == 0 || waiting as f64 > TAINT_REQUEST_SHARE * scheduled) {
            let delay = max_delay_ms.max(waited_so_far.as_secs_f64() * 1000.0);
            return Some(taint(
                format!(
                    "{waiting} of the {} requests scheduled in the window were still waiting inside the load generator for a connection, the oldest for {delay:.1} ms",
                    self.requests + waiting
                ),
                delay,
                None,
            ));
        }
        if self.requests == 0 {
            return None;
        }
        let share = self.waited_long as f64 / self.requests as f64;
        let too_many_waited = share > TAINT_REQUEST_SHARE;
        let waited = || {
            format!(
                "{} of {} requests ({:.1}%) waited over {:.0}% of their timeout inside the load generator ({} expired unsent; largest delay {max_delay_ms:.1} ms)",
                self.waited_long,
                self.requests,
                share * 100.0,
                TAINT_WAIT_SHARE_OF_TIMEOUT * 100.0,
                self.expired,
            )
        };
        match kind {
            SloKind::Latency { quantile, max, .. } => {
                if self.generator_delay_us.is_empty() {
                    return None;
                }
                let delay = ms(self.generator_delay_us.value_at_quantile(*quantile));
                let tolerance = latency_delay_tolerance(max.0).as_secs_f64() * 1000.0;
                (delay > tolerance).then(|| {
                    taint(
                        format!(
                            "the load generator delayed requests by {delay:.1} ms at p{} (tolerance {tolerance:.1} ms): they waited inside it for a connection",
                            quantile * 100.0
                        ),
                        delay,
                        Some(tolerance),
                    )
                })
            }
            SloKind::ErrorRate { .. } => {
                (self.expired > 0 || too_many_waited).then(|| taint(waited(), max_delay_ms, None))
            }
            SloKind::Throughput { .. } => {
                too_many_waited.then(|| taint(waited(), max_delay_ms, None))
            }
            SloKind::Promql { .. } => None,
        }
    }
}

/// The whole Unix seconds `[lo, hi)` that lie completely inside `[from_ms, to_ms)`.
fn whole_seconds(from_ms: i64, to_ms: i64) -> (i64, i64) {
    let lo = from_ms.div_euclid(1000) + i64::from(from_ms.rem_euclid(1000) != 0);
    (lo, to_ms.div_euclid(1000))
}

fn add_clamped(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both use the same bounds, so adding cannot fail; clamp defensively anyway.
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(
                v.value_iterated_to().min(MAX_LATENCY_US),
                v.count_at_value(),
            );
        }
    }
}

/// Summary of the whole run, for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Generator delay quantiles in milliseconds (`p50` .. `max`): how long requests
    /// waited inside the load generator before a connection took them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generator_delay_ms: BTreeMap<String, f64>,
    /// Requests delayed inside the generator by more than [`TAINT_DELAY_FLOOR`].
    #[serde(default)]
    pub delayed_requests: u64,
    /// Requests that waited longer than [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of their
    /// timeout inside the generator, expired ones included.
    #[serde(default)]
    pub waited_long_requests: u64,
    /// Requests that expired inside the generator without being sent.
    #[serde(default)]
    pub expired_requests: u64,
    /// Connections opened up front (`load.connections`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// The most connections the generator could open (`load.maxConnections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// The most connections that were open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_connections: Option<u64>,
    /// What each of `load.surges` delivered, in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub surges: Vec<SurgeSummary>,
}

/// A request the generator sent later than this after its scheduled time did not arrive
/// with the surge it belongs to.
pub const SURGE_LATE: Duration = Duration::from_millis(100);

/// The share of a surge's asked rate that must be sent on time for the surge to count as
/// delivered: below it the run did not test what it asked, and ends `inconclusive`.
pub const SURGE_DELIVERED_SHARE: f64 = 0.9;

/// What one load surge delivered, over the whole seconds inside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SurgeSummary {
    /// When the surge started, from the start of the load, in milliseconds.
    pub after_ms: u64,
    /// How long it lasted, in milliseconds.
    pub duration_ms: u64,
    /// The rate asked, per second.
    pub asked_rate: f64,
    /// Whole seconds inside the surge that were measured.
    pub seconds: u64,
    /// Requests scheduled in those seconds.
    pub requests: u64,
    /// Of those, the ones the generator sent (or gave up on) more than [`SURGE_LATE`]
    /// after their scheduled time.
    pub late: u64,
    /// Requests sent on time, per second.
    pub on_time_rate: f64,
}

impl SurgeSummary {
    /// Whether the surge reached the system as asked: at least
    /// [`SURGE_DELIVERED_SHARE`] of its rate sent on time.
    pub fn delivered(&self) -> bool {
        self.seconds > 0 && self.on_time_rate >= SURGE_DELIVERED_SHARE * self.asked_rate
    }

    /// `surge at +8s for 10s: 2500.0/s asked, 2499.1/s sent on time (3 late by >100 ms)`.
    pub fn describe(&self) -> String {
        format!(
            "surge at +{}s for {}s: {:.1}/s asked, {:.1}/s sent on time over {} whole seconds ({} of {} requests late by more than {} ms)",
            self.after_ms as f64 / 1000.0,
            self.duration_ms as f64 / 1000.0,
            self.asked_rate,
            self.on_time_rate,
            self.seconds,
            self.late,
            self.requests,
            SURGE_LATE.as_millis()
        )
    }
}

/// The load generator's per-second series for one load target.
#[derive(Debug, Clone)]
pub struct ClientMeasurements {
    service: String,
    seconds: BTreeMap<i64, ClientSecond>,
    backlog: Option<BacklogProbe>,
}

impl ClientMeasurements {
    /// Empty measurements of traffic to `service` (the load target's service name,
    /// matched against the `service` of client SLOs).
    pub fn new(service: &str) -> Self {
        ClientMeasurements {
            service: service.to_string(),
            seconds: BTreeMap::new(),
            backlog: None,
        }
    }

    /// Lets evaluations see the requests still queued inside the load generator; the
    /// generator sets it when it starts.
    pub fn set_backlog(&mut self, backlog: Arc<dyn Backlog>) {
        self.backlog = Some(BacklogProbe(backlog));
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
        second.latency_us.saturating_record(clamp_us(latency));
    }

    /// Records how long a request scheduled at `scheduled` waited inside the generator,
    /// whether that was long (over [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of its timeout) and
    /// whether it expired there unsent. Call it alongside [`ClientMeasurements::record`].
    pub fn record_delay(
        &mut self,
        scheduled: SystemTime,
        delay: Duration,
        waited_long: bool,
        expired: bool,
    ) {
        let second = self
            .seconds
            .entry(unix_ms(scheduled).div_euclid(1000))
            .or_default();
        second.generator_delay_us.saturating_record(clamp_us(delay));
        second.waited_long += u64::from(waited_long);
        second.expired += u64::from(expired);
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

    /// What a surge of `asked_rate` per second from `start` for `length` delivered: the
    /// requests scheduled in the whole seconds inside it, and how many of them left the
    /// generator more than [`SURGE_LATE`] late.
    pub fn surge(
        &self,
        start: SystemTime,
        length: Duration,
        asked_rate: f64,
        load_start: SystemTime,
    ) -> SurgeSummary {
        let (lo, hi) = whole_seconds(unix_ms(start), unix_ms(start + length));
        let (mut seconds, mut requests, mut late) = (0u64, 0u64, 0u64);
        if lo < hi {
            for (_, m) in self.seconds.range(lo..hi) {
                seconds += 1;
                requests += m.requests;
                late += m.delayed_over(SURGE_LATE);
            }
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        SurgeSummary {
            after_ms: ms(start.duration_since(load_start).unwrap_or_default()),
            duration_ms: ms(length),
            asked_rate,
            seconds,
            requests,
            late,
            on_time_rate: if seconds > 0 {
                requests.saturating_sub(late) as f64 / seconds as f64
            } else {
                0.0
            },
        }
    }

    /// Totals and latency quantiles over everything recorded.
    pub fn summary(&self) -> LoadSummary {
        let mut total = ClientSecond::default();
        for second in self.seconds.values() {
            total.merge(second);
        }
        let seconds = self.seconds.len() as u64;
        let delayed_requests = total.delayed_over(TAINT_DELAY_FLOOR);
        LoadSummary {
            latency_ms: quantiles_ms(&total.latency_us),
            generator_delay_ms: quantiles_ms(&total.generator_delay_us),
            delayed_requests,
            waited_long_requests: total.waited_long,
            expired_requests: total.expired,
            connections: None,
            max_connections: None,
            peak_connections: None,
            surges: Vec::new(),
            requests: total.requests,
            errors: total.errors,
            seconds,
            achieved_rate: if seconds > 0 {
                total.requests as f64 / seconds as f64
            } else {
                0.0
            },
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
        let (lo, hi) = whole_seconds(at_ms - window_ms, at_ms);
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
        let mut e = Evaluation::judged(
            kind,
            at,
            value,
            Evidence {
                backend: "client".into(),
                query,
                detail,
                generator: None,
            },
        );
        // Only requests that have waited past the delay floor count: one released a
        // millisecond before `at` by a dispatcher that woke late is not distortion.
        let waiting = match &self.backlog {
            Some(b) if lo < hi => b.0.waiting_between(
                super::from_unix_ms(lo.saturating_mul(1000)),
                super::from_unix_ms(hi.saturating_mul(1000)).min(at - TAINT_DELAY_FLOOR),
            ),
            _ => Waiting::default(),
        };
        let waited_so_far = waiting
            .oldest
            .and_then(|t| at.duration_since(t).ok())
            .unwrap_or_default();
        if let Some(taint) = total.taint(kind, waiting.count, waited_so_far) {
            // The value stays for the record; the judgement does not: it would say
            // more about the generator than about the system.
            e.status = SloStatus::Inconclusive;
            e.evidence.detail = Some(format!(
                "not judged: {}; raise load.maxConnections",
                taint.reason
            ));
            e.evidence.generator = Some(taint);
        }
        Ok(e)
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

fn clamp_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// `p50`, `p90`, `p99`, `p999` and `max` of a microsecond histogram, in milliseconds;
/// empty when the histogram is.
fn quantiles_ms(h: &Histogram<u64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if !h.is_empty() {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            out.insert(name.to_string(), h.value_at_quantile(q) as f64 / 1000.0);
        }
        out.insert("max".to_string(), h.max() as f64 / 1000.0);
    }
    out
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
    fn a_surge_counts_only_what_left_the_generator_on_time() {
        // 10 s at 100 req/s from t(0); from 2.5 s to 7.5 s every other request waited
        // 300 ms inside the generator.
        let mut m = measurements();
        for i in 0..1000u64 {
            let late = (250..750).contains(&i) && i % 2 == 0;
            let delay = Duration::from_millis(if late { 300 } else { 2 });
            m.record_delay(t(i * 10), delay, false, false);
        }
        let asked = |rate: f64| m.surge(t(2_500), Duration::from_secs(5), rate, t(0));
        let s = asked(100.0);
        // Whole seconds inside [2.5 s, 7.5 s): 3, 4, 5 and 6.
        assert_eq!((s.seconds, s.requests, s.late), (4, 400, 200));
        assert_eq!(s.after_ms, 2_500);
        assert!((s.on_time_rate - 50.0).abs() < 1e-9);
        assert!(!s.delivered(), "{}", s.describe());
        assert!(asked(55.0).delivered(), "50/s on time is 91% of 55/s");
        // Outside the measured seconds nothing was delivered.
        let none = m.surge(t(50_000), Duration::from_secs(5), 100.0, t(0));
        assert_eq!(none.seconds, 0);
        assert!(!none.delivered());
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

    /// 10 s of 100 req/s, 10 ms latency, where request `i` waited `delay(i)` inside the
    /// generator (long when over 10% of a 1 s timeout) and expired if `expired(i)`.
    fn delayed(
        delay: impl Fn(u64) -> Duration,
        expired: impl Fn(u64) -> bool,
    ) -> ClientMeasurements {
        let mut m = ClientMeasurements::new("gateway");
        for i in 0..1000u64 {
            let gone = expired(i);
            m.record(t(i * 10), Duration::from_millis(10), !gone);
            let d = delay(i);
            m.record_delay(t(i * 10), d, d > Duration::from_millis(100), gone);
        }
        m
    }

    fn latency(max_ms: u64) -> SloKind {
        SloKind::Latency {
            service: "gateway".into(),
            quantile: 0.99,
            max: faultline_spec::Duration(Duration::from_millis(max_ms)),
        }
    }

    fn all_kinds() -> [SloKind; 3] {
        [
            latency(100),
            SloKind::ErrorRate {
                service: "gateway".into(),
                max: Percent::from_fraction(0.01).unwrap(),
                route: None,
            },
            SloKind::Throughput {
                service: "gateway".into(),
                min: Rate::per_second(50.0).unwrap(),
            },
        ]
    }

    #[test]
    fn a_few_milliseconds_of_generator_delay_never_taint_a_client_slo() {
        // A busy machine: every request leaves up to 8 ms late.
        let m = delayed(|i| Duration::from_millis(i % 9), |_| false);
        for kind in all_kinds() {
            let e = m
                .evaluate(&kind, Duration::from_secs(5), t(10_000))
                .unwrap();
            assert_eq!(e.status, SloStatus::Ok, "{kind:?}: {e:?}");
            assert!(e.evidence.generator.is_none());
        }
    }

    #[test]
    fn latency_is_inconclusive_when_generator_delay_at_its_quantile_exceeds_the_tolerance() {
        // 2% of requests waited 150 ms: the p99 generator delay is 150 ms.
        let m = delayed(
            |i| Duration::from_millis(if i % 50 == 0 { 150 } else { 1 }),
            |_| false,
        );
        // Threshold 100 ms: the tolerance is the 10 ms floor; 800 ms: 80 ms. Both tainted.
        for max in [100, 800] {
            let e = m
                .evaluate(&latency(max), Duration::from_secs(5), t(10_000))
                .unwrap();
            assert_eq!(e.status, SloStatus::Inconclusive, "{e:?}");
            let g = e.evidence.generator.as_ref().unwrap();
            assert!((g.delay_ms - 150.0).abs() < 2.0, "{g:?}");
            assert_eq!(g.tolerance_ms, Some(if max == 100 { 10.0 } else { 80.0 }));
            assert!(
                e.evidence
                    .detail
                    .as_deref()
                    .unwrap()
                    .contains("maxConnections")
            );
            // The measured value is kept for the record.
            assert!(e.value.is_some());
        }
        // Threshold 2 s: 200 ms of tolerance covers 150 ms of delay; judged normally.
        let e = m
            .evaluate(&latency(2000), Duration::from_secs(5), t(10_000))
            .unwrap();
        assert_eq!(e.status, SloStatus::Ok);
    }

    #[test]
    fn error_rate_is_inconclusive_when_any_request_expired_in_the_generator() {
        let m = delayed(
            |i| Duration::from_millis(if i == 700 { 1000 } else { 1 }),
            |i| i == 700,
        );
        let kind = &all_kinds()[1];
        let e = m.evaluate(kind, Duration::from_secs(5), t(10_000)).unwrap();
        assert_eq!(e.status, SloStatus::Inconclusive);
        assert_eq!(e.evidence.generator.as_ref().unwrap().expired, 1);
        // A window without the expired request is judged.
        let e = m.evaluate(kind, Duration::from_secs(5), t(5_000)).unwrap();
        assert_eq!(e.status, SloStatus::Ok);
    }

    #[test]
    fn throughput_is_inconclusive_only_when_over_one_percent_of_requests_waited_long() {
        let kind = &all_kinds()[2];
        // 1% waited 200 ms (over 10% of the timeout): tolerated.
        let m = delayed(
            |i| Duration::from_millis(if i % 100 == 0 { 200 } else { 1 }),
            |_| false,
        );
        let e = m.evaluate(kind, Duration::from_secs(5), t(10_000)).unwrap();
        assert_eq!(e.status, SloStatus::Ok);
        // 2%: not judged.
        let m = delayed(
            |i| Duration::from_millis(if i % 50 == 0 { 200 } else { 1 }),
            |_| false,
        );
        let e = m.evaluate(kind, Duration::from_secs(5), t(10_000)).unwrap();
        assert_eq!(e.status, SloStatus::Inconclusive);
        assert_eq!(e.evidence.generator.as_ref().unwrap().waited_long, 10);
    }

    /// A generator queue holding `count` requests of any window, the oldest scheduled at
    /// `oldest`; remembers the last window end it was asked about.
    struct FakeQueue {
        count: u64,
        oldest: SystemTime,
        asked_to: std::sync::Mutex<Option<SystemTime>>,
    }

    impl Backlog for FakeQueue {
        fn waiting_between(&self, _from: SystemTime, to: SystemTime) -> Waiting {
            *self.asked_to.lock().unwrap() = Some(to);
            Waiting {
                count: self.count,
                oldest: Some(self.oldest),
            }
        }
    }

    #[test]
    fn requests_still_queued_in_the_generator_taint_a_window_beyond_one_percent() {
        let at = t(10_005);
        for (count, expected) in [(1, SloStatus::Ok), (10, SloStatus::Inconclusive)] {
            let mut m = delayed(|_| Duration::from_millis(1), |_| false);
            let queue = Arc::new(FakeQueue {
                count,
                oldest: t(9_000),
                asked_to: Default::default(),
            });
            m.set_backlog(queue.clone());
            // 500 finished requests in the window: 1 waiting is 0.2%, 10 are 2%.
            let e = m
                .evaluate(&latency(100), Duration::from_secs(5), at)
                .unwrap();
            assert_eq!(e.status, expected, "{count} waiting: {e:?}");
            if let Some(g) = e.evidence.generator {
                assert_eq!(g.waiting, 10);
                // The oldest has waited 1005 ms by the evaluation.
                assert!((g.delay_ms - 1005.0).abs() < 1.0, "{g:?}");
            }
            // Requests released within the delay floor before `at` (here the last 5 ms of
            // the window) are not asked about.
            let to = queue.asked_to.lock().unwrap().unwrap();
            assert_eq!(to, at - TAINT_DELAY_FLOOR);
        }
    }
}
