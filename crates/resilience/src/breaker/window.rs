//! Sliding windows of call outcomes, lock-free so the closed breaker's fast path takes no lock.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Outcome bits stored per call: RECORDED marks a used slot so the window knows its fill level.
pub(crate) const RECORDED: u8 = 0b001;
pub(crate) const FAILED: u8 = 0b010;
pub(crate) const SLOW: u8 = 0b100;

/// Counts over the window at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSnapshot {
    /// Calls recorded in the window.
    pub calls: u32,
    /// Of those, failures.
    pub failures: u32,
    /// Of those, slow calls (above the slow-call duration), failed or not.
    pub slow: u32,
}

/// The last `N` outcomes. Each call swaps its outcome into a ring slot and adjusts the totals by
/// the difference to what it replaced, so the totals stay exact under concurrency without a lock,
/// and a success that replaces a success touches no shared counter at all.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    #[inline]
    pub(crate) fn record(&self, bits: u8) {
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64) as usize;
        let old = self.slots[i].swap(bits, Ordering::AcqRel);
        if old == bits {
            return;
        }
        adjust(&self.calls, old & RECORDED, bits & RECORDED);
        adjust(&self.failures, old & FAILED, bits & FAILED);
        adjust(&self.slow, old & SLOW, bits & SLOW);
    }

    pub(crate) fn snapshot(&self) -> WindowSnapshot {
        WindowSnapshot {
            calls: self.calls.load(Ordering::Acquire),
            failures: self.failures.load(Ordering::Acquire),
            slow: self.slow.load(Ordering::Acquire),
        }
    }

    pub(crate) fn reset(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Relaxed);
        }
        self.next.store(0, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.slow.store(0, Ordering::Release);
    }
}

#[inline]
fn adjust(counter: &AtomicU32, old: u8, new: u8) {
    match (old != 0, new != 0) {
        (false, true) => {
            counter.fetch_add(1, Ordering::AcqRel);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        _ => {}
    }
}

#[derive(Debug)]
struct Bucket {
    /// Bucket epoch + 1 (0 = never used).
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// Outcomes of the last `buckets * bucket_nanos` of time, in buckets that are recycled when
/// time moves on. The thread that moves a bucket to a new epoch zeroes it; an increment that
/// races with that reset can be lost, which only blurs a count at a bucket boundary.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
}

impl TimeWindow {
    pub(crate) fn new(buckets: u32, bucket_nanos: u64) -> Self {
        TimeWindow {
            buckets: (0..buckets)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(0),
                    calls: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                    slow: AtomicU32::new(0),
                })
                .collect(),
            bucket_nanos: bucket_nanos.max(1),
        }
    }

    #[inline]
    pub(crate) fn record(&self, now_nanos: u64, bits: u8) {
        let epoch = now_nanos / self.bucket_nanos + 1;
        let b = &self.buckets[(epoch % self.buckets.len() as u64) as usize];
        let cur = b.epoch.load(Ordering::Acquire);
        if cur != epoch
            && cur < epoch
            && b.epoch
                .compare_exchange(cur, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.calls.store(0, Ordering::Release);
            b.failures.store(0, Ordering::Release);
            b.slow.store(0, Ordering::Release);
        }
        b.calls.fetch_add(1, Ordering::AcqRel);
        if bits & FAILED != 0 {
            b.failures.fetch_add(1, Ordering::AcqRel);
        }
        if bits & SLOW != 0 {
            b.slow.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn snapshot(&self, now_nanos: u64) -> WindowSnapshot {
        let epoch = now_nanos / self.bucket_nanos + 1;
        let oldest = epoch.saturating_sub(self.buckets.len() as u64 - 1);
        let mut s = WindowSnapshot::default();
        for b in self.buckets.iter() {
            let e = b.epoch.load(Ordering::Acquire);
            if e >= oldest && e <= epoch && e != 0 {
                s.calls += b.calls.load(Ordering::Acquire);
                s.failures += b.failures.load(Ordering::Acquire);
                s.slow += b.slow.load(Ordering::Acquire);
            }
        }
        s
    }

    pub(crate) fn reset(&self) {
        for b in self.buckets.iter() {
            b.epoch.store(0, Ordering::Release);
            b.calls.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
            b.slow.store(0, Ordering::Relaxed);
        }
    }
}
