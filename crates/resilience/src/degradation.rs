//! Degradation controller: watches p99 latency, error rate and timeout rate over a sliding
//! window and sets a level L0..L3 that the service acts on (L1 cached fallback, L2 shed
//! non-critical upstreams, L3 lightweight path). Hysteresis keeps the level from flapping:
//! it rises as soon as a threshold is crossed, and falls one level at a time only after the
//! signal has stayed below `recovery_ratio * threshold` for `hold`.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::event::{Event, EventSink};

/// Degradation level, exported as the `degradation_level` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Normal.
    L0,
    /// p99 above threshold: serve cached fallbacks.
    L1,
    /// Error rate above threshold: shed non-critical upstreams.
    L2,
    /// Timeout rate above threshold: lightweight path only.
    L3,
}

impl Level {
    /// 0..=3 for the gauge.
    pub fn as_gauge(self) -> i64 {
        self as i64
    }
    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::L0,
            1 => Level::L1,
            2 => Level::L2,
            _ => Level::L3,
        }
    }
    fn down(self) -> Level {
        Level::from_u8((self as u8).saturating_sub(1))
    }
}

/// What happened to one observed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// It worked.
    Ok,
    /// It failed (counts toward the error rate).
    Error,
    /// It timed out (counts toward both the timeout rate and the error rate).
    Timeout,
}

/// Thresholds and timing of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DegradationConfig {
    /// Sliding window the rates and p99 are computed over.
    pub window: Duration,
    /// L1 when p99 is above this.
    pub p99_threshold: Duration,
    /// L2 when the error rate is above this (default 5%).
    pub error_rate_threshold: f64,
    /// L3 when the timeout rate is above this (default 15%).
    pub timeout_rate_threshold: f64,
    /// Below this many requests in the window no level is raised (too little evidence).
    pub min_requests: u64,
    /// To step down, the signal must be below `threshold * recovery_ratio` (0 < r <= 1).
    pub recovery_ratio: f64,
    /// ... continuously for this long.
    pub hold: Duration,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        DegradationConfig {
            window: Duration::from_secs(10),
            p99_threshold: Duration::from_millis(500),
            error_rate_threshold: 0.05,
            timeout_rate_threshold: 0.15,
            min_requests: 20,
            recovery_ratio: 0.8,
            hold: Duration::from_secs(5),
        }
    }
}

const BUCKETS: usize = 10;
/// Latency histogram: 8 linear sub-buckets per power of two up to 2^40 ns (~18 min); the
/// reported p99 is a bucket's upper bound, within 12.5% of the true value.
const LAT_BUCKETS: usize = 8 + 37 * 8 + 8;

fn lat_index(nanos: u64) -> usize {
    if nanos < 8 {
        return nanos as usize;
    }
    let msb = (63 - nanos.leading_zeros()).min(40);
    let sub = ((nanos >> (msb - 3)) & 7) as usize;
    (8 + (msb as usize - 3) * 8 + sub).min(LAT_BUCKETS - 1)
}

fn lat_upper(index: usize) -> u64 {
    if index < 8 {
        return index as u64 + 1;
    }
    let msb = (index - 8) / 8 + 3;
    let sub = ((index - 8) % 8) as u64;
    (9 + sub) << (msb - 3)
}

struct Bucket {
    epoch: AtomicU64,
    total: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    latency: Box<[AtomicU64]>,
}

/// Window statistics as seen by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Requests in the window.
    pub requests: u64,
    /// Errors / requests (timeouts included).
    pub error_rate: f64,
    /// Timeouts / requests.
    pub timeout_rate: f64,
    /// 99th percentile latency (upper bucket bound).
    pub p99: Duration,
}

struct Hysteresis {
    below_since: Option<u64>,
}

/// The controller. `record` every request (lock-free), call `evaluate` periodically (or use
/// [`run`](Self::run)), and read [`level`](Self::level) on the request path.
pub struct DegradationController {
    name: Box<str>,
    config: DegradationConfig,
    clock: Clock,
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    level: AtomicU8,
    hysteresis: Mutex<Hysteresis>,
    sink: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for DegradationController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DegradationController")
            .field("name", &self.name)
            .field("level", &self.level())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DegradationController {
    /// A controller starting at L0.
    pub fn try_new(config: DegradationConfig) -> Result<Self, ConfigError> {
        let frac = |f: f64| f.is_finite() && f > 0.0 && f <= 1.0;
        if config.window < Duration::from_millis(10) {
            return Err(ConfigError::range("window", "must be at least 10ms"));
        }
        if !frac(config.error_rate_threshold) {
            return Err(ConfigError::range(
                "error_rate_threshold",
                "must be in (0, 1]",
            ));
        }
        if !frac(config.timeout_rate_threshold) {
            return Err(ConfigError::range(
                "timeout_rate_threshold",
                "must be in (0, 1]",
            ));
        }
        if !frac(config.recovery_ratio) {
            return Err(ConfigError::range("recovery_ratio", "must be in (0, 1]"));
        }
        if config.p99_threshold.is_zero() {
            return Err(ConfigError::range("p99_threshold", "must be positive"));
        }
        let bucket_nanos = (config.window.as_nanos() / BUCKETS as u128) as u64;
        Ok(DegradationController {
            name: "degradation".into(),
            config,
            clock: Clock::tokio(),
            bucket_nanos,
            buckets: (0..BUCKETS)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(0),
                    total: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    timeouts: AtomicU64::new(0),
                    latency: (0..LAT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
            level: AtomicU8::new(0),
            hysteresis: Mutex::new(Hysteresis { below_since: None }),
            sink: None,
        })
    }

    /// Name used in events.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    /// Report level changes here.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The current level (one atomic load).
    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    /// Observe one request.
    pub fn record(&self, latency: Duration, result: CallResult) {
        let now = self.clock.now_nanos();
        let epoch = now / self.bucket_nanos + 1;
        let b = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let cur = b.epoch.load(Ordering::Acquire);
        if cur < epoch
            && b.epoch
                .compare_exchange(cur, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.total.store(0, Ordering::Release);
            b.errors.store(0, Ordering::Release);
            b.timeouts.store(0, Ordering::Release);
            for l in b.latency.iter() {
                l.store(0, Ordering::Relaxed);
            }
        }
        b.total.fetch_add(1, Ordering::AcqRel);
        match result {
            CallResult::Ok => {}
            CallResult::Error => {
                b.errors.fetch_add(1, Ordering::AcqRel);
            }
            CallResult::Timeout => {
                b.errors.fetch_add(1, Ordering::AcqRel);
                b.timeouts.fetch_add(1, Ordering::AcqRel);
            }
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        b.latency[lat_index(nanos)].fetch_add(1, Ordering::AcqRel);
    }

    /// Statistics over the current window.
    pub fn stats(&self) -> Stats {
        let now = self.clock.now_nanos();
        let epoch = now / self.bucket_nanos + 1;
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        let mut total = 0;
        let mut errors = 0;
        let mut timeouts = 0;
        let mut hist = [0u64; LAT_BUCKETS];
        for b in self.buckets.iter() {
            let e = b.epoch.load(Ordering::Acquire);
            if e == 0 || e < oldest || e > epoch {
                continue;
            }
            total += b.total.load(Ordering::Acquire);
            errors += b.errors.load(Ordering::Acquire);
            timeouts += b.timeouts.load(Ordering::Acquire);
            for (h, l) in hist.iter_mut().zip(b.latency.iter()) {
                *h += l.load(Ordering::Acquire);
            }
        }
        if total == 0 {
            return Stats::default();
        }
        let counted: u64 = hist.iter().sum();
        let rank = (counted * 99).div_ceil(100).max(1);
        let mut seen = 0;
        let mut p99 = 0;
        for (i, h) in hist.iter().enumerate() {
            seen += h;
            if seen >= rank {
                p99 = lat_upper(i);
                break;
            }
        }
        Stats {
            requests: total,
            error_rate: errors as f64 / total as f64,
            timeout_rate: timeouts as f64 / total as f64,
            p99: Duration::from_nanos(p99),
        }
    }

    fn level_for(&self, s: &Stats, factor: f64) -> Level {
        let c = &self.config;
        if s.requests < c.min_requests {
            return Level::L0;
        }
        if s.timeout_rate > c.timeout_rate_threshold * factor {
            Level::L3
        } else if s.error_rate > c.error_rate_threshold * factor {
            Level::L2
        } else if s.p99.as_secs_f64() > c.p99_threshold.as_secs_f64() * factor {
            Level::L1
        } else {
            Level::L0
        }
    }

    /// Recompute the level from the window; returns the (possibly new) level.
    pub fn evaluate(&self) -> Level {
        let stats = self.stats();
        let now = self.clock.now_nanos();
        let mut h = self
            .hysteresis
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.level();
        let raised = self.level_for(&stats, 1.0);
        let next = if raised > current {
            h.below_since = None;
            raised
        } else if self.level_for(&stats, self.config.recovery_ratio) < current {
            let since = *h.below_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.config.hold.as_nanos() as u64 {
                // Step down one level and require a fresh hold period for the next step.
                h.below_since = Some(now);
                current.down()
            } else {
                current
            }
        } else {
            h.below_since = None;
            current
        };
        if next != current {
            self.level.store(next as u8, Ordering::Release);
            if let Some(sink) = &self.sink {
                sink.on_event(&Event::DegradationChanged {
                    name: &self.name,
                    from: current,
                    to: next,
                });
            }
        }
        next
    }

    /// Evaluate every `interval` until `shutdown` completes. The caller owns the task this
    /// runs in and ends it through `shutdown` (e.g. a cancellation token's `cancelled()`).
    pub async fn run(&self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => { self.evaluate(); }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    type Seen = Arc<Mutex<Vec<(Level, Level)>>>;

    fn controller() -> (DegradationController, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let c = DegradationController::try_new(DegradationConfig {
            window: Duration::from_secs(10),
            p99_threshold: ms(200),
            min_requests: 10,
            hold: Duration::from_secs(5),
            ..DegradationConfig::default()
        })
        .unwrap()
        .with_event_sink(Arc::new(move |e: &Event<'_>| {
            if let Event::DegradationChanged { from, to, .. } = e {
                s.lock().unwrap().push((*from, *to));
            }
        }));
        (c, seen)
    }

    fn feed(c: &DegradationController, n: u32, latency: Duration, bad: u32, result: CallResult) {
        for i in 0..n {
            let r = if i < bad { result } else { CallResult::Ok };
            c.record(latency, r);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn level_rises_with_p99_then_error_rate_then_timeout_rate() {
        let (c, seen) = controller();
        feed(&c, 100, ms(10), 0, CallResult::Ok);
        assert_eq!(c.evaluate(), Level::L0);
        feed(&c, 10, ms(900), 0, CallResult::Ok); // 10/110 slow: p99 ~ 900ms
        assert_eq!(c.evaluate(), Level::L1);
        feed(&c, 100, ms(10), 20, CallResult::Error); // 20/210 errors > 5%
        assert_eq!(c.evaluate(), Level::L2);
        feed(&c, 200, ms(10), 100, CallResult::Timeout); // 100/410 timeouts > 15%
        assert_eq!(c.evaluate(), Level::L3);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Level::L0, Level::L1),
                (Level::L1, Level::L2),
                (Level::L2, Level::L3)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn level_falls_one_step_per_hold_period_and_only_when_well_below() {
        let (c, seen) = controller();
        feed(&c, 100, ms(10), 30, CallResult::Timeout);
        assert_eq!(c.evaluate(), Level::L3);
        // New window: 13% timeouts is under 15% but above 0.8 * 15% = 12%: no step down.
        tokio::time::advance(Duration::from_secs(11)).await;
        feed(&c, 100, ms(10), 13, CallResult::Timeout);
        tokio::time::advance(Duration::from_secs(6)).await;
        feed(&c, 1, ms(10), 0, CallResult::Ok);
        assert_eq!(c.evaluate(), Level::L3, "inside the hysteresis band");
        // Healthy traffic: steps down L3 -> L2 -> L1 -> L0, one per 5s hold.
        tokio::time::advance(Duration::from_secs(11)).await;
        let mut levels = Vec::new();
        for _ in 0..16 {
            feed(&c, 20, ms(10), 0, CallResult::Ok);
            levels.push(c.evaluate());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(levels[0], Level::L3, "hold starts when the signal clears");
        assert_eq!(levels[4], Level::L3);
        assert_eq!(levels[5], Level::L2);
        assert_eq!(levels[10], Level::L1);
        assert_eq!(levels[15], Level::L0);
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn no_level_is_raised_below_min_requests() {
        let (c, _) = controller();
        feed(&c, 9, ms(10), 9, CallResult::Timeout);
        assert_eq!(c.evaluate(), Level::L0);
    }

    #[tokio::test(start_paused = true)]
    async fn run_evaluates_periodically_until_shutdown() {
        let (c, _) = controller();
        feed(&c, 50, ms(10), 25, CallResult::Timeout);
        let c = Arc::new(c);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = c.clone();
        let task = tokio::spawn(async move {
            c2.run(Duration::from_secs(1), async {
                let _ = rx.await;
            })
            .await
        });
        tokio::time::sleep(ms(1_500)).await;
        assert_eq!(c.level(), Level::L3);
        tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn p99_is_within_a_bucket_of_the_truth() {
        for v in [1u64, 7, 8, 15, 100, 1_000, 123_456_789, 10_000_000_000] {
            let up = lat_upper(lat_index(v));
            assert!(up > v && up as f64 <= v as f64 * 1.126 + 1.0, "{v} -> {up}");
        }
    }

    #[test]
    fn invalid_thresholds_are_rejected() {
        let bad = DegradationConfig {
            error_rate_threshold: 0.0,
            ..DegradationConfig::default()
        };
        assert!(DegradationController::try_new(bad).is_err());
        let bad = DegradationConfig {
            recovery_ratio: 1.5,
            ..DegradationConfig::default()
        };
        assert!(DegradationController::try_new(bad).is_err());
    }
}
