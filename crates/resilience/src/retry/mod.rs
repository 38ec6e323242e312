//! Retry with backoff, a retry-on predicate, `Retry-After`, a deadline and a shared budget.
//!
//! Only retry calls that are safe to repeat (idempotent, or made so with an idempotency key):
//! the predicate is where the caller says so.

mod backoff;
mod budget;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

pub use backoff::{Backoff, BackoffKind};
pub use budget::RetryBudget;

use crate::clock::Rng;
use crate::error::ConfigError;
use crate::event::{Event, EventSink};

/// What to do after an attempt, as decided by the retry-on predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Return this result to the caller.
    Done,
    /// Retry after the backoff delay.
    Retry,
    /// Retry, but not before this long (the upstream's `Retry-After`). The policy waits for the
    /// larger of this and its own backoff, and gives up if that would exceed the deadline or
    /// `max_retry_after`.
    RetryAfter(Duration),
}

/// A retry policy; share one per upstream (cheap to clone, clones share the budget and RNG).
#[derive(Clone)]
pub struct Retry {
    inner: Arc<RetryInner>,
}

struct RetryInner {
    name: Box<str>,
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    rng: Rng,
    sink: Option<Arc<dyn EventSink>>,
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.inner.name)
            .field("max_attempts", &self.inner.max_attempts)
            .field("backoff", &self.inner.backoff)
            .field("deadline", &self.inner.deadline)
            .finish_non_exhaustive()
    }
}

/// Builder for [`Retry`]. Defaults: 3 attempts, no budget, no deadline, `Retry-After` honoured
/// up to 60 s.
pub struct RetryBuilder {
    name: String,
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    seed: Option<u64>,
    sink: Option<Arc<dyn EventSink>>,
}

impl fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl RetryBuilder {
    /// Name used in events.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Total attempts including the first (1 = never retry).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Share this budget (usually one per upstream, shared by all its callers).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
    /// Overall time allowed from the start of `call`: no backoff sleep may end past it.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }
    /// Longest `Retry-After` honoured; a longer one ends the retries.
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }
    /// Seed the jitter (reproducible tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Where retries and give-ups are reported.
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }
    /// Check and build.
    pub fn build(self) -> Result<Retry, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::range("max_attempts", "must be at least 1"));
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::range("deadline", "must be positive"));
        }
        Ok(Retry {
            inner: Arc::new(RetryInner {
                name: self.name.into(),
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                budget: self.budget,
                deadline: self.deadline,
                max_retry_after: self.max_retry_after,
                rng: self.seed.map(Rng::seeded).unwrap_or_default(),
                sink: self.sink,
            }),
        })
    }
}

impl Retry {
    /// Start configuring a retry policy with this backoff.
    pub fn builder(backoff: Backoff) -> RetryBuilder {
        RetryBuilder {
            name: "retry".to_owned(),
            max_attempts: 3,
            backoff,
            budget: None,
            deadline: None,
            max_retry_after: Duration::from_secs(60),
            seed: None,
            sink: None,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The shared budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.inner.budget.as_ref()
    }

    /// Run `f`, retrying every `Err`.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_if(f, |r: &Result<T, E>| {
            if r.is_err() {
                RetryDecision::Retry
            } else {
                RetryDecision::Done
            }
        })
        .await
    }

    /// Run `f`, asking `decide` after each attempt whether to retry. Returns the last attempt's
    /// result when done, out of attempts, out of budget, or out of time.
    pub async fn call_if<F, Fut, T, E, P>(&self, f: F, decide: P) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: FnMut(&Result<T, E>) -> RetryDecision,
    {
        let deadline = self.inner.deadline.map(|d| Instant::now() + d);
        self.run(deadline, f, decide).await
    }

    /// Like [`call_if`](Self::call_if) with an explicit overall deadline (e.g. the caller's
    /// remaining request budget), which overrides the configured one if earlier.
    pub async fn call_until<F, Fut, T, E, P>(
        &self,
        deadline: Instant,
        f: F,
        decide: P,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: FnMut(&Result<T, E>) -> RetryDecision,
    {
        let own = self.inner.deadline.map(|d| Instant::now() + d);
        let deadline = Some(own.map_or(deadline, |o| o.min(deadline)));
        self.run(deadline, f, decide).await
    }

    async fn run<F, Fut, T, E, P>(
        &self,
        deadline: Option<Instant>,
        mut f: F,
        mut decide: P,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: FnMut(&Result<T, E>) -> RetryDecision,
    {
        let inner = &*self.inner;
        if let Some(b) = &inner.budget {
            b.deposit();
        }
        let mut attempt = 1;
        let mut previous = inner.backoff.min();
        loop {
            let result = f().await;
            let wait_at_least = match decide(&result) {
                RetryDecision::Done => return result,
                RetryDecision::Retry => Duration::ZERO,
                RetryDecision::RetryAfter(d) if d <= inner.max_retry_after => d,
                RetryDecision::RetryAfter(_) => return self.give_up(result, attempt),
            };
            if attempt >= inner.max_attempts {
                return self.give_up(result, attempt);
            }
            let delay = inner
                .backoff
                .delay(attempt, previous, &inner.rng)
                .max(wait_at_least);
            if let Some(deadline) = deadline {
                if Instant::now() + delay >= deadline {
                    return self.give_up(result, attempt);
                }
            }
            if let Some(b) = &inner.budget {
                if !b.try_withdraw() {
                    if let Some(sink) = &inner.sink {
                        sink.on_event(&Event::RetryBudgetExhausted { name: &inner.name });
                    }
                    return result;
                }
            }
            attempt += 1;
            if let Some(sink) = &inner.sink {
                sink.on_event(&Event::Retry {
                    name: &inner.name,
                    attempt,
                    delay,
                });
            }
            previous = delay;
            tokio::time::sleep(delay).await;
        }
    }

    fn give_up<T, E>(&self, result: Result<T, E>, attempts: u32) -> Result<T, E> {
        if let Some(sink) = &self.inner.sink {
            sink.on_event(&Event::RetryGaveUp {
                name: &self.inner.name,
                attempts,
            });
        }
        result
    }
}

/// Parse an HTTP `Retry-After` value: delta-seconds (`120`) or an IMF-fixdate
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the past means zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_imf_fixdate(v)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the Unix epoch for `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}
