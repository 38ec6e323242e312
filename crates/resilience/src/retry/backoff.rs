//! Backoff delays between attempts.

use std::time::Duration;

use crate::clock::Rng;
use crate::error::ConfigError;

/// How the delay before each retry is chosen. Every kind stays within `[min, max]`.
///
/// The jitter kinds follow the AWS Architecture Blog "Exponential Backoff and Jitter":
/// jitter spreads retries of many clients over time so they do not hit a recovering upstream
/// in lock-step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// Always `min`.
    Constant,
    /// `min * 2^(n-1)`, capped at `max`.
    Exponential,
    /// Uniform in `[min, exp(n)]`: the widest spread, lowest total load.
    FullJitter,
    /// `exp(n)/2 + uniform[0, exp(n)/2]`, never below `min`: keeps at least half the wait.
    EqualJitter,
    /// `uniform[min, previous * 3]`, capped at `max`: grows with the last delay, not the count.
    Decorrelated,
}

/// A checked backoff: `min <= max`, `min > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    kind: BackoffKind,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff of `kind` between `min` and `max`.
    pub fn try_new(kind: BackoffKind, min: Duration, max: Duration) -> Result<Self, ConfigError> {
        if min.is_zero() {
            return Err(ConfigError::range("backoff.min", "must be positive"));
        }
        if max < min {
            return Err(ConfigError::range("backoff.max", "must be >= min"));
        }
        Ok(Backoff { kind, min, max })
    }

    /// The kind.
    pub fn kind(&self) -> BackoffKind {
        self.kind
    }
    /// Smallest delay.
    pub fn min(&self) -> Duration {
        self.min
    }
    /// Largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Delay before retry number `retry` (1 = first retry); `previous` is the last delay used
    /// (for decorrelated jitter; pass `min` for the first).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &Rng) -> Duration {
        let min = nanos(self.min);
        let max = nanos(self.max);
        let exp = || {
            let shift = retry.saturating_sub(1).min(63);
            min.checked_shl(shift)
                .filter(|v| v >> shift == min)
                .unwrap_or(u64::MAX)
                .min(max)
        };
        let d = match self.kind {
            BackoffKind::Constant => min,
            BackoffKind::Exponential => exp(),
            BackoffKind::FullJitter => rng.between(min, exp()),
            BackoffKind::EqualJitter => {
                let e = exp();
                let half = e / 2;
                rng.between(half, e).max(min)
            }
            BackoffKind::Decorrelated => {
                let prev = nanos(previous).clamp(min, max);
                rng.between(min, prev.saturating_mul(3).min(max))
            }
        };
        Duration::from_nanos(d.clamp(min, max))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
