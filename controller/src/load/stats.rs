//! What the load generator measures: outcome classes, the live per-second series and
//! the final report.
//!
//! Latency histograms per second live in the SLO engine's
//! [`ClientMeasurements`], which the generator
//! fills directly so `source: client` SLOs read the same numbers. This module adds the
//! error breakdown by class per second (keyed by the same Unix second) and run-wide HDR
//! histograms of latency and of send lag.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::slo::client::{
    ClientMeasurements, MAX_LATENCY_US, TAINT_DELAY_FLOOR, TAINT_WAIT_SHARE_OF_TIMEOUT,
    new_delay_histogram, new_latency_histogram,
};
use crate::slo::unix_ms;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response arrived with this status code.
    Status(u16),
    /// No complete response before the request's deadline (scheduled time + timeout),
    /// including requests that waited for a free connection past their deadline.
    Timeout,
    /// The connection could not be made or broke (refused, reset, invalid response).
    Transport,
}

impl Outcome {
    /// Whether the SLO engine counts this as an error: 5xx, timeout or transport error.
    /// A 4xx is the server answering as designed (429 from a rate limiter, 404) and is
    /// counted in its own class, not as an error.
    pub fn is_error(self) -> bool {
        match self {
            Outcome::Status(s) => s >= 500,
            Outcome::Timeout | Outcome::Transport => true,
        }
    }
}

/// Requests of one second (or of the whole run) by outcome class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeCounts {
    /// All requests with an outcome.
    pub requests: u64,
    /// 1xx, 2xx and 3xx responses.
    pub ok: u64,
    /// 4xx responses.
    pub client_error_4xx: u64,
    /// 5xx responses.
    pub server_error_5xx: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Transport errors.
    pub transport_errors: u64,
}

impl OutcomeCounts {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Status(s) if s >= 500 => self.server_error_5xx += 1,
            Outcome::Status(s) if s >= 400 => self.client_error_4xx += 1,
            Outcome::Status(_) => self.ok += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Transport => self.transport_errors += 1,
        }
    }

    /// Errors as the SLO engine counts them: 5xx, timeouts and transport errors.
    pub fn errors(&self) -> u64 {
        self.server_error_5xx + self.timeouts + self.transport_errors
    }
}

/// One measured request, buffered by a worker before it is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Wall-clock time the request was scheduled for (closed loop: sent).
    pub scheduled: SystemTime,
    /// From the scheduled time to the outcome.
    pub latency: Duration,
    /// From the scheduled time to the moment the request started; `None` when it never
    /// started because its deadline passed while it waited for a connection.
    pub send_lag: Option<Duration>,
    /// Open model: the generator delay, from the scheduled time until a connection took
    /// the request, or until the generator gave up on it (then `send_lag` is `None`).
    pub waited: Option<Duration>,
    pub outcome: Outcome,
}

pub(crate) struct Totals {
    pub counts: OutcomeCounts,
    pub seconds: BTreeMap<i64, OutcomeCounts>,
    pub latency_us: Histogram<u64>,
    pub send_lag_us: Histogram<u64>,
    /// Requests that started (were written to a connection).
    pub started: u64,
    /// Generator delay of every open-model request (microseconds).
    pub generator_delay_us: Histogram<u64>,
    /// Requests delayed by more than [`TAINT_DELAY_FLOOR`].
    pub delayed: u64,
    /// Requests that waited over [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of their timeout.
    pub waited_long: u64,
    /// Requests that expired inside the generator unsent.
    pub expired: u64,
}

/// What the load generator did to the requests themselves, over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GeneratorDelay {
    /// Generator delay quantiles (scheduled time to a connection taking the request).
    pub quantiles: Quantiles,
    /// Requests delayed by more than [`TAINT_DELAY_FLOOR`].
    pub delayed: u64,
    /// Requests that waited over [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of their timeout.
    pub waited_long: u64,
    /// Requests that expired inside the generator without being sent.
    pub expired: u64,
}

/// Live view of a running load: cheap to clone, readable at any time from any task.
///
/// Workers record in batches (at most 64 requests or 50 ms old), so a reader sees every
/// request that finished more than about 50 ms ago.
#[derive(Clone)]
pub struct LoadStats {
    pub(crate) totals: Arc<Mutex<Totals>>,
    pub(crate) measurements: Arc<RwLock<ClientMeasurements>>,
    /// A generator delay above this is a long wait ([`TAINT_WAIT_SHARE_OF_TIMEOUT`] of
    /// the request timeout).
    long_wait: Duration,
}

impl std::fmt::Debug for LoadStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadStats")
            .field("counts", &self.counts())
            .finish()
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Quantiles {
    /// Quantiles of a microsecond histogram; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second of the live series: outcome classes plus latency quantiles of the
/// requests scheduled in that second.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondReport {
    /// Unix second the requests were scheduled in.
    pub unix_second: i64,
    /// Outcomes by class.
    #[serde(flatten)]
    pub counts: OutcomeCounts,
    /// Latency from scheduled send time, milliseconds.
    pub latency_ms: Quantiles,
    /// Generator delay (scheduled time until a connection took the request),
    /// milliseconds; all zero in the closed loop.
    pub generator_delay_ms: Quantiles,
    /// Requests that waited over [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of their timeout inside
    /// the generator, expired ones included.
    pub waited_long: u64,
    /// Requests that expired inside the generator without being sent.
    pub expired: u64,
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

impl LoadStats {
    pub(crate) fn new(measurements: Arc<RwLock<ClientMeasurements>>, timeout: Duration) -> Self {
        LoadStats {
            totals: Arc::new(Mutex::new(Totals {
                counts: OutcomeCounts::default(),
                seconds: BTreeMap::new(),
                latency_us: new_latency_histogram(),
                send_lag_us: new_latency_histogram(),
                started: 0,
                generator_delay_us: new_delay_histogram(),
                delayed: 0,
                waited_long: 0,
                expired: 0,
            })),
            measurements,
            long_wait: timeout.mul_f64(TAINT_WAIT_SHARE_OF_TIMEOUT),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Totals> {
        // A poisoned lock means a worker panicked mid-record; the counters are still
        // meaningful, so keep reading them.
        self.totals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, batch: &[Sample]) {
        if batch.is_empty() {
            return;
        }
        {
            let mut m = self
                .measurements
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for s in batch {
                m.record(s.scheduled, s.latency, !s.outcome.is_error());
                if let Some(waited) = s.waited {
                    m.record_delay(
                        s.scheduled,
                        waited,
                        waited > self.long_wait,
                        s.send_lag.is_none(),
                    );
                }
            }
        }
        let mut t = self.lock();
        for s in batch {
            t.counts.add(s.outcome);
            t.seconds
                .entry(unix_ms(s.scheduled).div_euclid(1000))
                .or_default()
                .add(s.outcome);
            t.latency_us.saturating_record(micros(s.latency));
            if let Some(lag) = s.send_lag {
                t.started += 1;
                t.send_lag_us.saturating_record(micros(lag));
            }
            if let Some(waited) = s.waited {
                t.generator_delay_us.saturating_record(micros(waited));
                t.delayed += u64::from(waited > TAINT_DELAY_FLOOR);
                t.waited_long += u64::from(waited > self.long_wait);
                t.expired += u64::from(s.send_lag.is_none());
            }
        }
    }

    /// Totals by outcome class so far.
    pub fn counts(&self) -> OutcomeCounts {
        self.lock().counts
    }

    /// Latency quantiles of every request so far, from its scheduled send time.
    pub fn latency(&self) -> Quantiles {
        Quantiles::of(&self.lock().latency_us)
    }

    /// The whole-run latency histogram so far (microseconds).
    pub fn latency_histogram(&self) -> Histogram<u64> {
        self.lock().latency_us.clone()
    }

    /// Outcome classes of one Unix second, if anything was scheduled in it.
    pub fn second(&self, unix_second: i64) -> Option<OutcomeCounts> {
        self.lock().seconds.get(&unix_second).copied()
    }

    /// Outcome classes per Unix second, oldest first.
    pub fn seconds(&self) -> Vec<(i64, OutcomeCounts)> {
        self.lock().seconds.iter().map(|(s, c)| (*s, *c)).collect()
    }

    /// The per-second series with latency and generator-delay quantiles (joined with
    /// the SLO engine's per-second histograms).
    pub fn series(&self) -> Vec<SecondReport> {
        let seconds = self.seconds();
        let m = self
            .measurements
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let hist: BTreeMap<i64, SecondReport> = m
            .seconds()
            .map(|(s, c)| {
                (
                    s,
                    SecondReport {
                        unix_second: s,
                        counts: OutcomeCounts::default(),
                        latency_ms: Quantiles::of(&c.latency_us),
                        generator_delay_ms: Quantiles::of(&c.generator_delay_us),
                        waited_long: c.waited_long,
                        expired: c.expired,
                    },
                )
            })
            .collect();
        seconds
            .into_iter()
            .map(|(s, counts)| {
                let mut r = hist.get(&s).cloned().unwrap_or(SecondReport {
                    unix_second: s,
                    counts,
                    latency_ms: Quantiles::default(),
                    generator_delay_ms: Quantiles::default(),
                    waited_long: 0,
                    expired: 0,
                });
                r.counts = counts;
                r
            })
            .collect()
    }

    /// The SLO engine's measurements this generator fills (per-second requests, errors
    /// and latency histograms).
    pub fn measurements(&self) -> Arc<RwLock<ClientMeasurements>> {
        Arc::clone(&self.measurements)
    }

    pub(crate) fn send_lag(&self) -> (u64, Quantiles) {
        let t = self.lock();
        (t.started, Quantiles::of(&t.send_lag_us))
    }

    /// How long requests waited inside the generator so far, and how many expired there.
    pub fn generator_delay(&self) -> GeneratorDelay {
        let t = self.lock();
        GeneratorDelay {
            quantiles: Quantiles::of(&t.generator_delay_us),
            delayed: t.delayed,
            waited_long: t.waited_long,
            expired: t.expired,
        }
    }
}

/// Summary of a finished (or stopped) load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// `open` (constant arrival rate) or `closed` (each connection sends back to back).
    pub mode: &'static str,
    /// Requested rate (open model only).
    pub target_rate: Option<f64>,
    /// Requests the schedule asked for up to the stop (open model only).
    pub scheduled: Option<u64>,
    /// Requests written to a connection.
    pub started: u64,
    /// Started requests per second over the send window: for the open model,
    /// `started / (last start - first due time + one interval)`, so a generator that
    /// falls behind shows a lower rate; for the closed loop, completions per second.
    pub achieved_rate: f64,
    /// Wall time from the start to the last outcome.
    pub elapsed_secs: f64,
    /// Whether the run was cancelled before its duration ended.
    pub cancelled: bool,
    /// Outcomes by class.
    pub counts: OutcomeCounts,
    /// Errors as the SLO engine counts them (5xx, timeouts, transport errors).
    pub errors: u64,
    /// Latency from the scheduled send time, milliseconds.
    pub latency_ms: Quantiles,
    /// How late requests started relative to their schedule, milliseconds: waiting for a
    /// free connection, or the generator falling behind.
    pub send_lag_ms: Quantiles,
    /// Connections opened up front.
    pub connections: usize,
    /// The most connections the generator could open (open model).
    pub max_connections: usize,
    /// The most connections that were open at once.
    pub peak_connections: usize,
    /// Generator delay, milliseconds: from the scheduled time until a connection took
    /// the request (or the generator gave up on it), expired requests included.
    pub generator_delay_ms: Quantiles,
    /// Requests the generator delayed by more than its 10 ms floor
    /// ([`TAINT_DELAY_FLOOR`]).
    pub delayed: u64,
    /// Requests that waited over [`TAINT_WAIT_SHARE_OF_TIMEOUT`] of their timeout inside
    /// the generator, expired ones included.
    pub waited_long: u64,
    /// Requests that expired inside the generator without being sent (k6's
    /// `dropped_iterations`); they count as timeouts too.
    pub expired: u64,
    /// The per-second series.
    pub seconds: Vec<SecondReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_fall_into_the_classes_the_slo_engine_counts() {
        let mut c = OutcomeCounts::default();
        for o in [
            Outcome::Status(200),
            Outcome::Status(302),
            Outcome::Status(404),
            Outcome::Status(429),
            Outcome::Status(503),
            Outcome::Timeout,
            Outcome::Transport,
        ] {
            c.add(o);
        }
        assert_eq!(
            (c.requests, c.ok, c.client_error_4xx, c.server_error_5xx),
            (7, 2, 2, 1)
        );
        assert_eq!((c.timeouts, c.transport_errors, c.errors()), (1, 1, 3));
        assert!(!Outcome::Status(429).is_error());
        assert!(Outcome::Status(500).is_error());
    }

    #[test]
    fn recorded_batches_fill_both_the_class_series_and_the_slo_measurements() {
        let m = Arc::new(RwLock::new(ClientMeasurements::new("gateway")));
        let stats = LoadStats::new(Arc::clone(&m), Duration::from_secs(1));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let batch: Vec<Sample> = (0..10)
            .map(|i| Sample {
                scheduled: t0 + Duration::from_millis(200 * i),
                latency: Duration::from_millis(10 * (i + 1)),
                send_lag: Some(Duration::from_micros(5)),
                waited: Some(Duration::from_micros(5)),
                outcome: if i == 9 {
                    Outcome::Timeout
                } else {
                    Outcome::Status(200)
                },
            })
            .collect();
        stats.record(&batch);
        assert_eq!(stats.seconds().len(), 2);
        assert_eq!(stats.second(1000).unwrap().requests, 5);
        assert_eq!(stats.second(1001).unwrap().timeouts, 1);
        let s = m.read().unwrap().summary();
        assert_eq!((s.requests, s.errors, s.seconds), (10, 1, 2));
        let series = stats.series();
        assert!((series[1].latency_ms.max - 100.0).abs() < 0.1);
        assert!((stats.latency().p50 - 50.0).abs() < 0.1);
    }
}
