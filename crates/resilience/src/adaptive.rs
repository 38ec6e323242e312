//! Adaptive concurrency limit (AIMD): the limit grows by one per limit's worth of good calls
//! and is cut by a factor on a failure or a call slower than a latency target, so a caller
//! finds how much concurrency an upstream can take now instead of a number fixed in config.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::ConfigError;

/// AIMD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    /// Starting limit.
    pub initial: usize,
    /// Lower bound of the limit (>= 1).
    pub min: usize,
    /// Upper bound of the limit.
    pub max: usize,
    /// Multiply the limit by this on a bad outcome (0 < factor < 1).
    pub backoff: f64,
    /// A call slower than this counts as bad (the upstream is queueing).
    pub latency_target: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            initial: 20,
            min: 1,
            max: 1000,
            backoff: 0.9,
            latency_target: Duration::from_millis(250),
        }
    }
}

/// A concurrency limiter whose limit follows AIMD; rejects calls over the current limit.
#[derive(Debug)]
pub struct AimdLimiter {
    config: AimdConfig,
    /// Current limit as f64 bits (fractional, so additive increase can be 1/limit per call).
    limit: AtomicU64,
    in_flight: AtomicUsize,
}

/// Why [`AimdLimiter::try_acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("concurrency limit {limit} reached")]
pub struct LimitReached {
    /// The limit at the time.
    pub limit: usize,
}

/// One admitted call; report it with [`record`](AdaptivePermit::record). Dropping it
/// unrecorded releases the slot without changing the limit.
#[derive(Debug)]
#[must_use = "report the outcome so the limit adapts"]
pub struct AdaptivePermit<'a> {
    limiter: &'a AimdLimiter,
}

impl AimdLimiter {
    /// A limiter starting at `config.initial`.
    pub fn try_new(config: AimdConfig) -> Result<Self, ConfigError> {
        if config.min == 0 || config.min > config.max {
            return Err(ConfigError::range("min", "must be in 1..=max"));
        }
        if !(config.min..=config.max).contains(&config.initial) {
            return Err(ConfigError::range("initial", "must be in min..=max"));
        }
        if !(config.backoff > 0.0 && config.backoff < 1.0) {
            return Err(ConfigError::range("backoff", "must be in (0, 1)"));
        }
        Ok(AimdLimiter {
            limit: AtomicU64::new((config.initial as f64).to_bits()),
            config,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        f64::from_bits(self.limit.load(Ordering::Acquire)) as usize
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admit a call if fewer than the current limit are in flight.
    pub fn try_acquire(&self) -> Result<AdaptivePermit<'_>, LimitReached> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| LimitReached { limit })?;
        Ok(AdaptivePermit { limiter: self })
    }

    fn adjust(&self, good: bool) {
        let c = &self.config;
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let l = f64::from_bits(bits);
                let next = if good { l + 1.0 / l } else { l * c.backoff };
                Some(next.clamp(c.min as f64, c.max as f64).to_bits())
            });
    }
}

impl AdaptivePermit<'_> {
    /// Report the call: `ok == false` or a latency above the target shrinks the limit,
    /// anything else grows it.
    pub fn record(self, ok: bool, latency: Duration) {
        self.limiter
            .adjust(ok && latency <= self.limiter.config.latency_target);
    }
}

impl Drop for AdaptivePermit<'_> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> AimdLimiter {
        AimdLimiter::try_new(AimdConfig {
            initial: 4,
            min: 2,
            max: 8,
            backoff: 0.5,
            latency_target: Duration::from_millis(100),
        })
        .unwrap()
    }

    #[test]
    fn limit_rejects_calls_beyond_it() {
        let l = limiter();
        let held: Vec<_> = (0..4).map(|_| l.try_acquire().unwrap()).collect();
        assert_eq!(l.try_acquire().unwrap_err(), LimitReached { limit: 4 });
        drop(held);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn limit_grows_additively_and_shrinks_multiplicatively_within_bounds() {
        let l = limiter();
        // About `limit` good calls raise the limit by one.
        for _ in 0..4 {
            l.try_acquire()
                .unwrap()
                .record(true, Duration::from_millis(10));
        }
        assert_eq!(l.limit(), 4, "4 + 4 * 1/4.x is just under 5");
        l.try_acquire()
            .unwrap()
            .record(true, Duration::from_millis(10));
        assert_eq!(l.limit(), 5);
        l.try_acquire()
            .unwrap()
            .record(true, Duration::from_millis(150));
        assert_eq!(l.limit(), 2, "slow call halves 5.x to 2.x");
        l.try_acquire()
            .unwrap()
            .record(false, Duration::from_millis(1));
        assert_eq!(l.limit(), 2, "never below min");
        for _ in 0..1_000 {
            l.try_acquire()
                .unwrap()
                .record(true, Duration::from_millis(1));
        }
        assert_eq!(l.limit(), 8, "never above max");
    }

    #[test]
    fn invalid_aimd_settings_are_rejected() {
        let bad = AimdConfig {
            backoff: 1.0,
            ..AimdConfig::default()
        };
        assert!(AimdLimiter::try_new(bad).is_err());
        let bad = AimdConfig {
            min: 0,
            ..AimdConfig::default()
        };
        assert!(AimdLimiter::try_new(bad).is_err());
    }
}
