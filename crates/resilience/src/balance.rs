//! Client-side load balancing over a fixed set of endpoints: round robin, or power of two
//! choices (p2c) over a peak-EWMA latency estimate, with passive outlier ejection.
//!
//! Peak-EWMA (from Finagle and linkerd) jumps up to any latency above the average at once and
//! decays slowly, so an endpoint that turns slow is avoided immediately and trusted again only
//! gradually. Multiplying by in-flight requests makes a backlog count too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::{Clock, Rng};
use crate::error::ConfigError;
use crate::event::{Event, EventSink};

/// Balancer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalancerConfig {
    /// Latency assumed for an endpoint with no measurements yet.
    pub initial_latency: Duration,
    /// EWMA decay time constant: older samples weigh `exp(-age / decay)`.
    pub decay: Duration,
    /// Consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection period; doubles with each repeated ejection, up to `max_ejection`.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Never eject more than this fraction of endpoints (0..=1); keeps a bad health signal from
    /// emptying the pool.
    pub max_ejected_fraction: f64,
    /// The latency a failed call counts as, at least: a replica that refuses connections
    /// fails in microseconds, and without a penalty it would look like the fastest endpoint
    /// and draw every call (and every retry) until it is ejected.
    pub failure_penalty: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            initial_latency: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_fraction: 0.5,
            failure_penalty: Duration::from_secs(1),
        }
    }
}

struct Endpoint<T> {
    value: T,
    /// Peak-EWMA latency in nanoseconds (f64 bits).
    ewma: AtomicU64,
    /// Clock nanos of the last EWMA update.
    stamp: AtomicU64,
    pending: AtomicU32,
    failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

/// A set of endpoints to spread calls over. Cheap to share by `Arc`.
pub struct Balancer<T> {
    name: Box<str>,
    endpoints: Box<[Endpoint<T>]>,
    config: BalancerConfig,
    decay_nanos: f64,
    clock: Clock,
    rng: Rng,
    next: AtomicUsize,
    sink: Option<Arc<dyn EventSink>>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Balancer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.name)
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.value).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A chosen endpoint. Report the call's result with [`success`](Pick::success) or
/// [`failure`](Pick::failure); the in-flight count is released on drop.
#[must_use = "report the call's latency so the balancer learns"]
pub struct Pick<'a, T> {
    balancer: &'a Balancer<T>,
    index: usize,
}

impl<T> std::fmt::Debug for Pick<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick").field("index", &self.index).finish()
    }
}

impl<'a, T> Pick<'a, T> {
    /// The endpoint.
    pub fn value(&self) -> &'a T {
        &self.balancer.endpoints[self.index].value
    }
    /// Its index in the balancer.
    pub fn index(&self) -> usize {
        self.index
    }
    /// The call succeeded after `latency`.
    pub fn success(self, latency: Duration) {
        let ep = &self.balancer.endpoints[self.index];
        self.balancer.observe(ep, latency, false);
        ep.failures.store(0, Ordering::Release);
        if ep.ejections.load(Ordering::Relaxed) != 0
            && ep.ejected_until.load(Ordering::Acquire) <= self.balancer.clock.now_nanos()
        {
            ep.ejections.store(0, Ordering::Release);
        }
    }
    /// The call failed after `latency`.
    pub fn failure(self, latency: Duration) {
        let b = self.balancer;
        let ep = &b.endpoints[self.index];
        b.observe(ep, latency, true);
        let n = ep.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= b.config.consecutive_failures {
            b.eject(self.index);
        }
    }
}

impl<T> Drop for Pick<'_, T> {
    fn drop(&mut self) {
        self.balancer.endpoints[self.index]
            .pending
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T> Balancer<T> {
    /// Balance over `endpoints` (at least one).
    pub fn try_new(endpoints: Vec<T>, config: BalancerConfig) -> Result<Self, ConfigError> {
        if endpoints.is_empty() {
            return Err(ConfigError::range("endpoints", "need at least one"));
        }
        if config.decay.is_zero() {
            return Err(ConfigError::range("decay", "must be positive"));
        }
        if config.consecutive_failures == 0 {
            return Err(ConfigError::range(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&config.max_ejected_fraction) {
            return Err(ConfigError::range(
                "max_ejected_fraction",
                "must be in 0..=1",
            ));
        }
        if config.max_ejection < config.base_ejection {
            return Err(ConfigError::range(
                "max_ejection",
                "must be >= base_ejection",
            ));
        }
        let init = config.initial_latency.as_nanos() as f64;
        Ok(Balancer {
            name: "balancer".into(),
            endpoints: endpoints
                .into_iter()
                .map(|value| Endpoint {
                    value,
                    ewma: AtomicU64::new(init.to_bits()),
                    stamp: AtomicU64::new(0),
                    pending: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                })
                .collect(),
            decay_nanos: config.decay.as_nanos() as f64,
            config,
            clock: Clock::fast(),
            rng: Rng::default(),
            next: AtomicUsize::new(0),
            sink: None,
        })
    }

    /// Name used in events.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    /// Report ejections here.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }
    /// Read time from `clock` (the default is [`Clock::fast`]; tests on paused time pass
    /// [`Clock::tokio`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    /// Seed the p2c choice (reproducible tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Rng::seeded(seed);
        self
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }
    /// Always false: a balancer has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Whether endpoint `i` is currently ejected.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.ejected_until.load(Ordering::Acquire) > self.clock.now_nanos())
    }
    /// Current peak-EWMA latency estimate of endpoint `i`.
    pub fn latency_estimate(&self, i: usize) -> Option<Duration> {
        let now = self.clock.now_nanos();
        self.endpoints
            .get(i)
            .map(|e| Duration::from_nanos(self.decayed(e, now) as u64))
    }

    /// Next endpoint in turn, skipping ejected ones.
    pub fn pick_round_robin(&self) -> Pick<'_, T> {
        let n = self.endpoints.len();
        let now = self.clock.now_nanos();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let index = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.available(i, now))
            .unwrap_or(start % n);
        self.take(index)
    }

    /// Power of two choices: sample two endpoints, take the one with the lower
    /// `ewma * (in_flight + 1)`.
    pub fn pick_p2c(&self) -> Pick<'_, T> {
        self.pick_p2c_except(&[])
    }

    /// [`Balancer::pick_p2c`] among the endpoints not in `skip` (indices), for a failover
    /// after those refused a connection. When `skip` leaves none, every endpoint is a
    /// candidate again.
    pub fn pick_p2c_except(&self, skip: &[usize]) -> Pick<'_, T> {
        let n = self.endpoints.len();
        let skip = if (0..n).all(|i| skip.contains(&i)) {
            &[]
        } else {
            skip
        };
        let m = n - (0..n).filter(|i| skip.contains(i)).count();
        // The k-th candidate: the identity unless something is skipped.
        let nth = |k: usize| {
            if skip.is_empty() {
                k
            } else {
                (0..n).filter(|i| !skip.contains(i)).nth(k).unwrap_or(k)
            }
        };
        if m == 1 {
            return self.take(nth(0));
        }
        let now = self.clock.now_nanos();
        let r = self.rng.next_u64();
        let a = (r % m as u64) as usize;
        // A second candidate distinct from the first.
        let b = (a + 1 + ((r >> 32) % (m as u64 - 1)) as usize) % m;
        let a = self.nearest_available(nth(a), now, skip);
        let b = self.nearest_available(nth(b), now, skip);
        let index = if self.cost(a, now) <= self.cost(b, now) {
            a
        } else {
            b
        };
        self.take(index)
    }

    fn nearest_available(&self, from: usize, now: u64, skip: &[usize]) -> usize {
        let n = self.endpoints.len();
        (0..n)
            .map(|k| (from + k) % n)
            .find(|&i| self.available(i, now) && !skip.contains(&i))
            .unwrap_or(from)
    }

    #[inline]
    fn available(&self, i: usize, now: u64) -> bool {
        self.endpoints[i].ejected_until.load(Ordering::Acquire) <= now
    }

    fn take(&self, index: usize) -> Pick<'_, T> {
        self.endpoints[index].pending.fetch_add(1, Ordering::AcqRel);
        Pick {
            balancer: self,
            index,
        }
    }

    #[inline]
    fn decayed(&self, e: &Endpoint<T>, now: u64) -> f64 {
        let ewma = f64::from_bits(e.ewma.load(Ordering::Acquire));
        let age = now.saturating_sub(e.stamp.load(Ordering::Acquire)) as f64;
        ewma * (-age / self.decay_nanos).exp()
    }

    #[inline]
    fn cost(&self, i: usize, now: u64) -> f64 {
        let e = &self.endpoints[i];
        let pending = f64::from(e.pending.load(Ordering::Acquire));
        // Decay toward zero but never below one nanosecond, so pending still counts when idle.
        self.decayed(e, now).max(1.0) * (pending + 1.0)
    }

    fn observe(&self, e: &Endpoint<T>, latency: Duration, failed: bool) {
        let now = self.clock.now_nanos();
        let rtt = latency.as_nanos() as f64;
        let cur = self.decayed(e, now);
        let next = if failed {
            // A failure is a peak of at least the penalty, however fast it failed.
            rtt.max(cur)
                .max(self.config.failure_penalty.as_nanos() as f64)
        } else if rtt > cur {
            // Peaks are taken at once.
            rtt
        } else {
            let age = now.saturating_sub(e.stamp.load(Ordering::Acquire)) as f64;
            let w = (-age / self.decay_nanos).exp();
            f64::from_bits(e.ewma.load(Ordering::Acquire)) * w + rtt * (1.0 - w)
        };
        e.ewma.store(next.to_bits(), Ordering::Release);
        e.stamp.store(now, Ordering::Release);
    }

    fn eject(&self, i: usize) {
        let now = self.clock.now_nanos();
        let n = self.endpoints.len();
        let ejected = (0..n).filter(|&j| !self.available(j, now)).count();
        let e = &self.endpoints[i];
        if !self.available(i, now) {
            return;
        }
        if (ejected + 1) as f64 > n as f64 * self.config.max_ejected_fraction {
            return;
        }
        let k = e.ejections.fetch_add(1, Ordering::AcqRel).min(30);
        let period = self
            .config
            .base_ejection
            .saturating_mul(1 << k)
            .min(self.config.max_ejection);
        e.ejected_until.store(
            now.saturating_add(period.as_nanos() as u64),
            Ordering::Release,
        );
        e.failures.store(0, Ordering::Release);
        if let Some(sink) = &self.sink {
            sink.on_event(&Event::EndpointEjected {
                name: &self.name,
                endpoint: i,
                for_: period,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(n: u32) -> Balancer<u32> {
        Balancer::try_new(
            (0..n).collect(),
            BalancerConfig {
                consecutive_failures: 3,
                base_ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(25),
                ..BalancerConfig::default()
            },
        )
        .unwrap()
        .with_clock(Clock::tokio())
        .with_seed(42)
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_visits_every_endpoint_in_turn() {
        let b = lb(3);
        let order: Vec<usize> = (0..6).map(|_| b.pick_round_robin().index()).collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_endpoint_with_lower_peak_ewma() {
        let b = lb(2);
        // Endpoint 1 turns slow: one 500ms sample sets its peak at once.
        let p = loop {
            let p = b.pick_p2c();
            if p.index() == 1 {
                break p;
            }
            p.success(Duration::from_millis(10));
        };
        p.success(Duration::from_millis(500));
        let mut picks = [0u32; 2];
        for _ in 0..100 {
            let p = b.pick_p2c();
            let i = p.index();
            picks[i] += 1;
            p.success(Duration::from_millis(if i == 0 { 10 } else { 500 }));
        }
        assert_eq!(
            picks,
            [100, 0],
            "with two endpoints p2c compares both every time"
        );
        assert!(b.latency_estimate(1).unwrap() >= Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_counts_in_flight_requests() {
        let b = lb(2);
        let held: Vec<_> = (0..3).map(|_| b.take(0)).collect();
        for _ in 0..10 {
            assert_eq!(b.pick_p2c().index(), 1, "endpoint 0 has 3 in flight");
        }
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_an_endpoint_for_a_growing_period() {
        let b = lb(4);
        let fail = |b: &Balancer<u32>| {
            for _ in 0..3 {
                b.take(2).failure(Duration::from_millis(1));
            }
        };
        fail(&b);
        assert!(b.is_ejected(2));
        for _ in 0..40 {
            assert_ne!(b.pick_round_robin().index(), 2);
            assert_ne!(b.pick_p2c().index(), 2);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!b.is_ejected(2), "back after the base period");
        fail(&b);
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(b.is_ejected(2), "second ejection lasts 20s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!b.is_ejected(2));
        fail(&b);
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(!b.is_ejected(2), "capped at max_ejection (25s), not 40s");
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_never_exceeds_the_allowed_fraction() {
        let b = lb(4);
        for i in 0..4 {
            for _ in 0..3 {
                b.take(i).failure(Duration::from_millis(1));
            }
        }
        let ejected = (0..4).filter(|&i| b.is_ejected(i)).count();
        assert_eq!(ejected, 2, "max_ejected_fraction 0.5 of 4");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_failure_steers_p2c_away_like_a_slow_call() {
        let b = lb(2);
        for _ in 0..10 {
            b.take(0).success(Duration::from_millis(10));
            b.take(1).success(Duration::from_millis(10));
        }
        // Endpoint 1 refuses a connection in 100 µs: once, far from the ejection streak.
        b.take(1).failure(Duration::from_micros(100));
        assert!(!b.is_ejected(1));
        for _ in 0..50 {
            let p = b.pick_p2c();
            assert_eq!(p.index(), 0, "a failed endpoint does not look fast");
            p.success(Duration::from_millis(10));
        }
        assert!(b.latency_estimate(1).unwrap() >= Duration::from_millis(900));
        // It is tried again once its penalty has decayed below the other's latency
        // (1 s × e^-6 ≈ 2.5 ms after 60 s; endpoint 0 still answers in 10 ms).
        tokio::time::advance(Duration::from_secs(60)).await;
        b.take(0).success(Duration::from_millis(10));
        assert_eq!(b.pick_p2c().index(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_streak() {
        let b = lb(2);
        b.take(0).failure(Duration::from_millis(1));
        b.take(0).failure(Duration::from_millis(1));
        b.take(0).success(Duration::from_millis(1));
        b.take(0).failure(Duration::from_millis(1));
        assert!(!b.is_ejected(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_pick_passes_over_the_skipped_endpoints() {
        let b = lb(3);
        for _ in 0..200 {
            assert_eq!(b.pick_p2c_except(&[0, 2]).index(), 1);
            assert_ne!(b.pick_p2c_except(&[1]).index(), 1);
        }
        // Skipping every endpoint leaves every endpoint a candidate.
        let seen: std::collections::BTreeSet<usize> = (0..200)
            .map(|_| b.pick_p2c_except(&[0, 1, 2]).index())
            .collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn empty_endpoint_list_is_rejected() {
        assert!(Balancer::<u32>::try_new(vec![], BalancerConfig::default()).is_err());
    }
}
