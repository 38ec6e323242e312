//! Rate limiter using the generic cell rate algorithm (GCRA).
//!
//! GCRA keeps one number, the theoretical arrival time (TAT) of the next conforming request,
//! so a check is one clock read and one compare-and-swap: no buckets to refill, no lock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{ConfigError, Error};
use crate::event::{Event, EventSink};

/// A request rate: `count` per `period`, with bursts of up to `burst` back-to-back requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    emission_nanos: u64,
    burst: u32,
}

impl Quota {
    /// `count` requests per `period`, allowing `burst` at once (burst >= 1).
    pub fn try_new(count: u32, period: Duration, burst: u32) -> Result<Self, ConfigError> {
        if count == 0 {
            return Err(ConfigError::range("rate.count", "must be at least 1"));
        }
        if burst == 0 {
            return Err(ConfigError::range("rate.burst", "must be at least 1"));
        }
        let emission = period.as_nanos() / u128::from(count);
        if emission == 0 {
            return Err(ConfigError::range("rate", "must be at most 1e9 per second"));
        }
        let emission_nanos =
            u64::try_from(emission).map_err(|_| ConfigError::range("rate.period", "too long"))?;
        Ok(Quota {
            emission_nanos,
            burst,
        })
    }

    /// `n` per second with a burst of `n` (at most one second's worth at once).
    pub fn per_second(n: u32) -> Result<Self, ConfigError> {
        Self::try_new(n, Duration::from_secs(1), n)
    }

    /// Time between two requests at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos)
    }

    /// Largest burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// The limiter said no; `retry_after` is when the request would conform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub struct NotUntil {
    /// Wait this long before trying again.
    pub retry_after: Duration,
}

/// A lock-free GCRA rate limiter, shared by reference or `Arc`.
pub struct RateLimiter {
    name: Box<str>,
    quota: Quota,
    clock: Clock,
    /// TAT in nanoseconds since the clock origin.
    tat: AtomicU64,
    sink: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter enforcing `quota`.
    pub fn new(quota: Quota) -> Self {
        RateLimiter {
            name: "rate_limiter".into(),
            quota,
            clock: Clock::fast(),
            tat: AtomicU64::new(0),
            sink: None,
        }
    }

    /// Name used in events.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Read time from `clock` (the default is [`Clock::fast`]; tests on paused time pass
    /// [`Clock::tokio`]). Resets the limiter's state.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self.tat = AtomicU64::new(0);
        self
    }

    /// Report rejections here.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Admit one request now, or say when it would be admitted.
    #[inline]
    pub fn check(&self) -> Result<(), NotUntil> {
        self.check_n(1)
    }

    /// Admit `n` requests at once (all or none).
    #[inline]
    pub fn check_n(&self, n: u32) -> Result<(), NotUntil> {
        let now = self.clock.now_nanos();
        let t = self.quota.emission_nanos;
        let increment = t.saturating_mul(u64::from(n));
        let tolerance = t.saturating_mul(u64::from(self.quota.burst));
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            let new_tat = start.saturating_add(increment);
            // Conforms if the new TAT is within `burst` emission intervals of now.
            if new_tat - now > tolerance {
                return Err(self.rejected(new_tat - now - tolerance));
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    #[cold]
    fn rejected(&self, wait_nanos: u64) -> NotUntil {
        if let Some(sink) = &self.sink {
            sink.on_event(&Event::RateLimited { name: &self.name });
        }
        NotUntil {
            retry_after: Duration::from_nanos(wait_nanos),
        }
    }

    /// Wait until one request conforms, then admit it.
    pub async fn until_ready(&self) {
        while let Err(e) = self.check() {
            tokio::time::sleep(e.retry_after).await;
        }
    }

    /// Run `f` if the rate allows it, else fail fast with [`Error::RateLimited`] (an HTTP
    /// server answers 429 with `Retry-After`).
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.check().map_err(|e| Error::RateLimited {
            retry_after: e.retry_after,
        })?;
        f().await.map_err(Error::Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(count: u32, period_ms: u64, burst: u32) -> RateLimiter {
        RateLimiter::new(Quota::try_new(count, Duration::from_millis(period_ms), burst).unwrap())
            .with_clock(Clock::tokio())
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_admits_a_burst_then_one_per_interval() {
        let rl = limiter(10, 1_000, 3);
        for _ in 0..3 {
            assert!(rl.check().is_ok());
        }
        let e = rl.check().unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(rl.check().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(rl.check().is_ok());
        assert!(rl.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_check_n_is_all_or_nothing() {
        let rl = limiter(10, 1_000, 5);
        assert!(rl.check_n(6).is_err());
        assert!(rl.check_n(5).is_ok());
        assert!(rl.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_waits_exactly_for_the_next_slot() {
        let rl = limiter(4, 1_000, 1);
        rl.until_ready().await;
        let start = tokio::time::Instant::now();
        rl.until_ready().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn call_fails_fast_with_rate_limited() {
        let rl = limiter(1, 1_000, 1);
        assert_eq!(rl.call(|| async { Ok::<_, ()>(1) }).await, Ok(1));
        let r = rl.call(|| async { Ok::<_, ()>(2) }).await;
        assert_eq!(
            r,
            Err(Error::RateLimited {
                retry_after: Duration::from_secs(1)
            })
        );
    }

    #[test]
    fn invalid_quotas_are_rejected() {
        assert!(Quota::try_new(0, Duration::from_secs(1), 1).is_err());
        assert!(Quota::try_new(1, Duration::from_secs(1), 0).is_err());
        assert!(Quota::try_new(2, Duration::from_nanos(1), 1).is_err());
    }
}
