//! Retry budget: retries may not exceed a percentage of recent requests plus a small floor per
//! second. Shared by every caller of an upstream, so a failing upstream sees at most
//! `(1 + ratio)` times its normal traffic instead of `max_attempts` times (a retry storm).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ConfigError;

/// Fixed-point unit: one retry costs `UNIT`, one request deposits `ratio * UNIT`.
const UNIT: u64 = 1000;
const BUCKETS: usize = 10;

#[derive(Debug)]
struct Slot {
    /// epoch + 1 (0 = unused)
    epoch: AtomicU64,
    deposits: AtomicU64,
}

/// A sliding-window retry budget (the design of Finagle's and tower's `TpsBudget`).
///
/// Every request calls [`deposit`](Self::deposit) (lock-free); every retry must first succeed
/// in [`try_withdraw`](Self::try_withdraw). Withdrawals are serialised by a mutex so the
/// budget is never overdrawn even under concurrency; they only happen on failures, so the lock
/// is off the success path.
#[derive(Debug)]
pub struct RetryBudget {
    clock: Clock,
    bucket_nanos: u64,
    deposit_units: u64,
    reserve_units: u64,
    deposits: [Slot; BUCKETS],
    withdrawals: Mutex<[(u64, u64); BUCKETS]>,
}

impl RetryBudget {
    /// Allow retries up to `ratio` (e.g. 0.2 = 20%) of the requests of the last `window`, plus
    /// `min_per_sec` retries per second of the window whatever the traffic.
    pub fn try_new(window: Duration, min_per_sec: u32, ratio: f64) -> Result<Self, ConfigError> {
        if window < Duration::from_millis(10) || window > Duration::from_secs(3600) {
            return Err(ConfigError::range(
                "retry_budget.window",
                "must be 10ms..=1h",
            ));
        }
        if !(ratio.is_finite() && (0.0..=1000.0).contains(&ratio)) {
            return Err(ConfigError::range(
                "retry_budget.ratio",
                "must be in 0..=1000",
            ));
        }
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let reserve = (f64::from(min_per_sec) * window.as_secs_f64() * UNIT as f64) as u64;
        Ok(RetryBudget {
            clock: Clock::fast(),
            bucket_nanos: (nanos / BUCKETS as u64).max(1),
            deposit_units: (ratio * UNIT as f64).round() as u64,
            reserve_units: reserve,
            deposits: std::array::from_fn(|_| Slot {
                epoch: AtomicU64::new(0),
                deposits: AtomicU64::new(0),
            }),
            withdrawals: Mutex::new([(0, 0); BUCKETS]),
        })
    }

    /// Read time from `clock` (the default is [`Clock::fast`]; tests on paused time pass
    /// [`Clock::tokio`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn epoch(&self) -> u64 {
        self.clock.now_nanos() / self.bucket_nanos + 1
    }

    /// Record one (original, non-retry) request.
    #[inline]
    pub fn deposit(&self) {
        let epoch = self.epoch();
        let slot = &self.deposits[(epoch % BUCKETS as u64) as usize];
        let cur = slot.epoch.load(Ordering::Acquire);
        if cur < epoch
            && slot
                .epoch
                .compare_exchange(cur, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.deposits.store(0, Ordering::Release);
        }
        slot.deposits
            .fetch_add(self.deposit_units, Ordering::AcqRel);
    }

    /// Take one retry from the budget; false means "do not retry".
    pub fn try_withdraw(&self) -> bool {
        let epoch = self.epoch();
        let mut w = self
            .withdrawals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let balance = self.balance_locked(epoch, &w);
        if balance < UNIT as i64 {
            return false;
        }
        let i = (epoch % BUCKETS as u64) as usize;
        if w[i].0 != epoch {
            w[i] = (epoch, 0);
        }
        w[i].1 += UNIT;
        true
    }

    /// Retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let epoch = self.epoch();
        let w = self
            .withdrawals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (self.balance_locked(epoch, &w).max(0) as u64) / UNIT
    }

    fn balance_locked(&self, epoch: u64, w: &[(u64, u64); BUCKETS]) -> i64 {
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        let live = |e: u64| e != 0 && e >= oldest && e <= epoch;
        let deposited: u64 = self
            .deposits
            .iter()
            .filter(|s| live(s.epoch.load(Ordering::Acquire)))
            .map(|s| s.deposits.load(Ordering::Acquire))
            .sum();
        let withdrawn: u64 = w.iter().filter(|(e, _)| live(*e)).map(|(_, n)| n).sum();
        (self.reserve_units + deposited) as i64 - withdrawn as i64
    }
}
