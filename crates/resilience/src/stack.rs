//! Composition of the policies into one stack, in a fixed order (outermost first):
//!
//! 1. **rate limiter**: rejects excess load before it costs anything; one token per logical
//!    request, not per attempt, so retries do not eat the caller's rate.
//! 2. **bulkhead**: caps concurrent logical requests; a slot is held across retries so a retry
//!    cannot sneak past the concurrency limit.
//! 3. **overall deadline**: the caller's budget for the whole call, retries included.
//! 4. **retry** (with its budget): repeats failed attempts; never retries a rejection by the
//!    breaker (the upstream is known bad: fail fast) and never sleeps past the deadline.
//! 5. **circuit breaker**: sees every attempt, so failures hidden by a successful retry still
//!    count and an open breaker stops the remaining retries at once.
//! 6. **per-attempt timeout** (innermost): a hung attempt becomes a failure the breaker counts
//!    and the retry can repeat.
//!
//! `docs/resilience.md` explains the reasons at length.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{CircuitBreaker, Outcome, State};
use crate::bulkhead::Bulkhead;
use crate::error::{ConfigError, Error};
use crate::ratelimit::RateLimiter;
use crate::retry::{Retry, RetryDecision};

/// A composed policy stack. Every layer is optional.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    rate_limiter: Option<Arc<RateLimiter>>,
    bulkhead: Option<Bulkhead>,
    deadline: Option<Duration>,
    retry: Option<Retry>,
    breaker: Option<CircuitBreaker>,
    attempt_timeout: Option<Duration>,
}

impl Stack {
    /// An empty stack (calls pass straight through).
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a rate limiter (outermost).
    pub fn rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }
    /// Add a bulkhead.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }
    /// Overall time for the whole call, retries included.
    pub fn deadline(mut self, d: Duration) -> Result<Self, ConfigError> {
        if d.is_zero() {
            return Err(ConfigError::range("deadline", "must be positive"));
        }
        self.deadline = Some(d);
        Ok(self)
    }
    /// Add a retry policy.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }
    /// Add a circuit breaker.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }
    /// Time limit for each attempt.
    pub fn attempt_timeout(mut self, d: Duration) -> Result<Self, ConfigError> {
        if d.is_zero() {
            return Err(ConfigError::range("attempt_timeout", "must be positive"));
        }
        self.attempt_timeout = Some(d);
        Ok(self)
    }

    /// Run `f` through the stack: every `Err` is a breaker failure and is retried (only give a
    /// stack with a retry policy calls that are safe to repeat).
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(
            f,
            |r: &Result<T, E>| {
                if r.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                }
            },
            default_retry_on,
        )
        .await
    }

    /// Run `f` with a breaker classifier and a retry-on predicate. The predicate sees policy
    /// errors too ([`Error::Timeout`]); rejections ([`Error::is_rejection`]) are never retried,
    /// whatever it says.
    pub async fn call_with<F, Fut, T, E, C, P>(
        &self,
        f: F,
        classify: C,
        retry_on: P,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Outcome,
        P: FnMut(&Result<T, Error<E>>) -> RetryDecision,
    {
        self.call_until(None, f, classify, retry_on).await
    }

    /// [`Stack::call_with`] under the caller's deadline too (one propagated from upstream):
    /// the call ends at `until` or at the stack's own deadline, whichever comes first, with
    /// the same semantics (no backoff past it, each attempt cut at it, the breaker told).
    /// A deadline already passed fails with [`Error::DeadlineExceeded`] without a call.
    pub async fn call_until<F, Fut, T, E, C, P>(
        &self,
        until: Option<Instant>,
        mut f: F,
        classify: C,
        mut retry_on: P,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Outcome,
        P: FnMut(&Result<T, Error<E>>) -> RetryDecision,
    {
        if let Some(rl) = &self.rate_limiter {
            rl.check().map_err(|e| Error::RateLimited {
                retry_after: e.retry_after,
            })?;
        }
        let _slot = match &self.bulkhead {
            Some(b) => Some(b.acquire().await?),
            None => None,
        };
        let own = self.deadline.map(|d| Instant::now() + d);
        let deadline = match (own, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let classify = &classify;
        match &self.retry {
            None => self.attempt(&mut f, classify, deadline).await,
            Some(retry) => {
                let breaker_open = || {
                    self.breaker
                        .as_ref()
                        .is_some_and(|b| matches!(b.state(), State::Open | State::ForcedOpen))
                };
                let decide = |r: &Result<T, Error<E>>| match r {
                    Err(e) if e.is_rejection() => RetryDecision::Done,
                    // This attempt tripped the breaker: sleeping only to be rejected is waste.
                    Err(_) if breaker_open() => RetryDecision::Done,
                    other => retry_on(other),
                };
                let run = || self.attempt(&mut f, classify, deadline);
                match deadline {
                    Some(d) => retry.call_until(d, run, decide).await,
                    None => retry.call_if(run, decide).await,
                }
            }
        }
    }

    /// Start one attempt: check the deadline and the breaker and create the call's future
    /// synchronously (so the retry's closure does not hold a borrow of `f`), then await it under
    /// the per-attempt limit and report the outcome to the breaker.
    fn attempt<'s, F, Fut, T, E, C>(
        &'s self,
        f: &mut F,
        classify: &'s C,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<T, Error<E>>> + use<'s, F, Fut, T, E, C>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>> + 's,
        C: Fn(&Result<T, E>) -> Outcome,
        T: 's,
        E: 's,
    {
        let now = Instant::now();
        let prepared = if deadline.is_some_and(|d| d <= now) {
            Err(Error::DeadlineExceeded)
        } else {
            match &self.breaker {
                Some(b) => match b.try_acquire() {
                    Ok(p) => Ok((Some(p), f())),
                    Err(_) => Err(Error::BreakerOpen),
                },
                None => Ok((None, f())),
            }
        };
        let by_timeout = self.attempt_timeout.map(|t| now + t);
        let limit = match (by_timeout, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        async move {
            let (permit, fut) = prepared?;
            let raw = match limit {
                None => Some(fut.await),
                Some(at) => tokio::time::timeout_at(at, fut).await.ok(),
            };
            match raw {
                Some(r) => {
                    if let Some(p) = permit {
                        p.record(classify(&r));
                    }
                    r.map_err(Error::Inner)
                }
                None => {
                    if let Some(p) = permit {
                        p.record(Outcome::Failure);
                    }
                    if limit == by_timeout {
                        Err(Error::Timeout(self.attempt_timeout.unwrap_or_default()))
                    } else {
                        Err(Error::DeadlineExceeded)
                    }
                }
            }
        }
    }
}

/// Retry inner errors and timeouts; stop on success and on everything else.
pub fn default_retry_on<T, E>(r: &Result<T, Error<E>>) -> RetryDecision {
    match r {
        Err(Error::Inner(_)) | Err(Error::Timeout(_)) => RetryDecision::Retry,
        _ => RetryDecision::Done,
    }
}
