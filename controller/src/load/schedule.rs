//! Scheduling math of the open model and the weighted request mix.
//!
//! Request `k` (counting from 0) is due at `k / rate` seconds after the start, whatever
//! happened to earlier requests. Both the due time of a request and the number of requests
//! due at an elapsed time are pure functions, so a dispatcher that wakes late simply
//! releases every request due so far in one batch, and a worker computes a request's
//! scheduled time from its index alone.

use std::sync::Arc;
use std::time::Duration;

use super::LoadError;

/// Highest arrival rate accepted: one request per microsecond. Far above what one
/// machine can send, and low enough that the nanosecond arithmetic stays exact.
pub const MAX_RATE: f64 = 1_000_000.0;

/// A spell of another arrival rate inside a schedule (`spec.load.surges`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spell {
    /// When it starts, from the start of the run.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// Requests per second while it lasts.
    pub rate: f64,
}

/// A stretch of the schedule at one constant rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start_ns: f64,
    interval_ns: f64,
    /// Index of its first request.
    first: u64,
    /// Requests due strictly inside it.
    count: u64,
}

/// An open-model schedule over a fixed duration: a base arrival rate, replaced by each
/// spell's rate while the spell lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    duration: Duration,
    segments: Arc<[Segment]>,
    total: u64,
}

fn check_rate(rate: f64) -> Result<(), LoadError> {
    if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE {
        Ok(())
    } else {
        Err(LoadError::InvalidConfig(format!(
            "rate must be above 0 and at most {MAX_RATE}/s, got {rate}/s"
        )))
    }
}

impl Schedule {
    /// The schedule of `rate` requests per second for `duration`.
    ///
    /// Fails unless the rate is finite, positive and at most [`MAX_RATE`], and the
    /// duration is positive.
    pub fn try_new(rate: f64, duration: Duration) -> Result<Self, LoadError> {
        Self::with_spells(rate, duration, &[])
    }

    /// The schedule of `rate` requests per second for `duration`, except during each of
    /// `spells` (in time order, not overlapping, each inside the duration), which run at
    /// their own rate.
    pub fn with_spells(rate: f64, duration: Duration, spells: &[Spell]) -> Result<Self, LoadError> {
        check_rate(rate)?;
        if duration.is_zero() {
            return Err(LoadError::InvalidConfig(
                "duration must be above zero".into(),
            ));
        }
        // Stretches as (start, end, rate), covering [0, duration) with no gap.
        let mut stretches = Vec::with_capacity(2 * spells.len() + 1);
        let mut at = Duration::ZERO;
        for spell in spells {
            check_rate(spell.rate)?;
            let end = spell.start + spell.length;
            if spell.start < at || end > duration || spell.length.is_zero() {
                return Err(LoadError::InvalidConfig(format!(
                    "a spell at {:?} for {:?} must be non-empty, after the previous one and inside the {duration:?} run",
                    spell.start, spell.length
                )));
            }
            stretches.push((at, spell.start, rate));
            stretches.push((spell.start, end, spell.rate));
            at = end;
        }
        stretches.push((at, duration, rate));
        let mut segments = Vec::with_capacity(stretches.len());
        let mut first = 0;
        for (start, end, rate) in stretches {
            if end <= start {
                continue;
            }
            let interval_ns = 1e9 / rate;
            // Requests whose due time lies strictly inside [start, end).
            let count = ((end - start).as_nanos() as f64 / interval_ns).ceil() as u64;
            segments.push(Segment {
                start_ns: start.as_nanos() as f64,
                interval_ns,
                first,
                count,
            });
            first += count;
        }
        Ok(Schedule {
            duration,
            segments: segments.into(),
            total: first.max(1),
        })
    }

    /// The rate over the whole run: every request scheduled, over the duration.
    pub fn mean_rate(&self) -> f64 {
        self.total as f64 / self.duration.as_secs_f64()
    }

    /// The gap between two consecutive requests at the end of the run.
    pub fn interval(&self) -> Duration {
        // Never empty: a positive duration has at least one stretch.
        let last = self.segments[self.segments.len() - 1].interval_ns;
        Duration::from_nanos(last.round() as u64)
    }

    /// How many requests the whole run schedules.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The segment holding request `index` (the last one past the end).
    fn segment_of(&self, index: u64) -> &Segment {
        let i = self.segments.partition_point(|s| s.first <= index);
        &self.segments[i.saturating_sub(1)]
    }

    /// When request `index` is due, as an offset from the start.
    pub fn offset(&self, index: u64) -> Duration {
        let s = self.segment_of(index);
        let ns = s.start_ns + (index - s.first) as f64 * s.interval_ns;
        Duration::from_nanos(ns.round() as u64)
    }

    /// How many requests are due once `elapsed` has passed since the start: every
    /// request whose offset is at most `elapsed`, capped at [`Schedule::total`].
    pub fn due(&self, elapsed: Duration) -> u64 {
        let ns = elapsed.as_nanos() as f64;
        let i = self.segments.partition_point(|s| s.start_ns <= ns);
        let s = &self.segments[i.saturating_sub(1)];
        let k = s.first + (((ns - s.start_ns) / s.interval_ns).floor() as u64 + 1).min(s.count);
        // Floating point may put the boundary one off; settle it with `offset`, which
        // is the definition workers use.
        let k = if k > 0 && self.offset(k - 1) > elapsed {
            k - 1
        } else if self.offset(k) <= elapsed {
            k + 1
        } else {
            k
        };
        k.min(self.total)
    }
}

/// A deterministic weighted request mix.
///
/// Built with smooth weighted round-robin (as nginx balances upstreams), so weights
/// `3:1` give `A A B A` rather than `A A A B`: every window of `sum(weights)` consecutive
/// requests holds each entry exactly `weight` times, and the entries are spread out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMix {
    order: Vec<usize>,
}

impl RequestMix {
    /// The mix of entries with these weights (entry `i` has weight `weights[i]`).
    ///
    /// Fails on an empty list, a zero weight, or a total weight above 1,000,000 (the
    /// mix is unrolled into one cycle of that length).
    pub fn try_new(weights: &[u32]) -> Result<Self, LoadError> {
        if weights.is_empty() {
            return Err(LoadError::InvalidConfig(
                "the request mix needs at least one request".into(),
            ));
        }
        if let Some(i) = weights.iter().position(|w| *w == 0) {
            return Err(LoadError::InvalidConfig(format!(
                "request {i} of the mix has weight 0; weights are at least 1"
            )));
        }
        let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if sum > 1_000_000 {
            return Err(LoadError::InvalidConfig(format!(
                "the weights of the request mix add up to {sum}; at most 1000000 is supported"
            )));
        }
        let sum = sum as i64;
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(sum as usize);
        for _ in 0..sum {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += i64::from(*w);
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by(|(ia, a), (ib, b)| a.cmp(b).then(ib.cmp(ia)))
                .expect("weights is not empty");
            current[best] -= sum;
            order.push(best);
        }
        Ok(RequestMix { order })
    }

    /// The mix entry request `index` uses.
    pub fn pick(&self, index: u64) -> usize {
        self.order[(index % self.order.len() as u64) as usize]
    }

    /// Length of one full cycle (the sum of the weights).
    pub fn cycle_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_requests_strictly_inside_the_duration() {
        let s = Schedule::try_new(500.0, Duration::from_secs(10)).unwrap();
        assert_eq!(s.total(), 5000);
        assert_eq!(s.interval(), Duration::from_millis(2));
        assert_eq!(s.offset(4999), Duration::from_millis(9998));
        // A fractional rate: 0.5/s over 3 s is due at 0 s and 2 s.
        let s = Schedule::try_new(0.5, Duration::from_secs(3)).unwrap();
        assert_eq!(s.total(), 2);
        // 3 per second over 1 s: 0, 333.3 ms, 666.7 ms.
        let s = Schedule::try_new(3.0, Duration::from_secs(1)).unwrap();
        assert_eq!(s.total(), 3);
        assert_eq!(s.offset(2), Duration::from_nanos(666_666_667));
    }

    #[test]
    fn due_releases_every_request_whose_time_has_come_in_one_batch() {
        let s = Schedule::try_new(30_000.0, Duration::from_secs(3)).unwrap();
        assert_eq!(s.due(Duration::ZERO), 1);
        // A dispatcher that wakes 1 ms late releases the 30 requests due by then at once.
        assert_eq!(s.due(Duration::from_millis(1)), 31);
        assert_eq!(s.due(Duration::from_secs(1)), 30_001);
        assert_eq!(s.due(Duration::from_secs(60)), 90_000);
    }

    #[test]
    fn due_agrees_with_offset_at_every_boundary() {
        for rate in [1.0, 3.0, 7.0, 999.0, 1000.0, 29_999.0, 30_000.0, 123_456.7] {
            let s = Schedule::try_new(rate, Duration::from_secs(2)).unwrap();
            for k in (0..s.total()).step_by(((s.total() / 500) as usize).max(1)) {
                let at = s.offset(k);
                assert_eq!(s.due(at), k + 1, "rate {rate}, request {k} at its own time");
                if !at.is_zero() {
                    assert_eq!(
                        s.due(at - Duration::from_nanos(1)),
                        k,
                        "rate {rate}, 1 ns before request {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn spells_change_the_rate_only_while_they_last() {
        // 100/s for 10 s, with 1000/s from 2 s to 4 s and 10/s from 6 s to 8 s.
        let spells = [
            Spell {
                start: Duration::from_secs(2),
                length: Duration::from_secs(2),
                rate: 1000.0,
            },
            Spell {
                start: Duration::from_secs(6),
                length: Duration::from_secs(2),
                rate: 10.0,
            },
        ];
        let s = Schedule::with_spells(100.0, Duration::from_secs(10), &spells).unwrap();
        assert_eq!(s.total(), 200 + 2000 + 200 + 20 + 200);
        assert!((s.mean_rate() - 262.0).abs() < 1e-9);
        // The last base request before the surge, the surge's first and last, and the
        // first base request after it.
        assert_eq!(s.offset(199), Duration::from_millis(1990));
        assert_eq!(s.offset(200), Duration::from_secs(2));
        assert_eq!(s.offset(2199), Duration::from_millis(3999));
        assert_eq!(s.offset(2200), Duration::from_secs(4));
        assert_eq!(s.offset(2419), Duration::from_millis(7900));
        assert_eq!(s.due(Duration::from_millis(2500)), 200 + 501);
        assert_eq!(s.due(Duration::from_millis(7950)), 2420);
        assert_eq!(s.due(Duration::from_secs(60)), s.total());
        for k in (0..s.total()).step_by(7) {
            let at = s.offset(k);
            assert_eq!(s.due(at), k + 1, "request {k} at its own time");
            if !at.is_zero() {
                assert_eq!(s.due(at - Duration::from_nanos(1)), k, "1 ns before {k}");
            }
        }
        // Offsets never go backwards across a boundary.
        assert!((1..s.total()).all(|k| s.offset(k) > s.offset(k - 1)));
    }

    #[test]
    fn spells_out_of_order_or_outside_the_run_are_refused() {
        let spell = |start, length| Spell {
            start: Duration::from_secs(start),
            length: Duration::from_secs(length),
            rate: 50.0,
        };
        let run = Duration::from_secs(10);
        assert!(Schedule::with_spells(10.0, run, &[spell(8, 3)]).is_err());
        assert!(Schedule::with_spells(10.0, run, &[spell(4, 2), spell(5, 1)]).is_err());
        assert!(Schedule::with_spells(10.0, run, &[spell(1, 0)]).is_err());
        // Back to back, and one filling the run, are fine.
        assert!(Schedule::with_spells(10.0, run, &[spell(0, 5), spell(5, 5)]).is_ok());
    }

    #[test]
    fn schedule_rejects_nonsense_rates_and_durations() {
        assert!(Schedule::try_new(0.0, Duration::from_secs(1)).is_err());
        assert!(Schedule::try_new(-1.0, Duration::from_secs(1)).is_err());
        assert!(Schedule::try_new(f64::NAN, Duration::from_secs(1)).is_err());
        assert!(Schedule::try_new(2e6, Duration::from_secs(1)).is_err());
        assert!(Schedule::try_new(10.0, Duration::ZERO).is_err());
    }

    #[test]
    fn mix_spreads_entries_and_keeps_exact_proportions() {
        let mix = RequestMix::try_new(&[3, 1]).unwrap();
        let picks: Vec<_> = (0..4).map(|i| mix.pick(i)).collect();
        assert_eq!(picks, [0, 0, 1, 0]);
        let mix = RequestMix::try_new(&[5, 3, 2]).unwrap();
        let mut counts = [0u32; 3];
        for i in 0..1000 {
            counts[mix.pick(i)] += 1;
        }
        assert_eq!(counts, [500, 300, 200]);
        // Never more than two of the heaviest in a row with 5:3:2.
        let run = (0..10)
            .collect::<Vec<_>>()
            .windows(3)
            .filter(|w| w.iter().all(|i| mix.pick(*i) == 0))
            .count();
        assert_eq!(run, 0);
    }

    #[test]
    fn mix_rejects_empty_and_zero_weights() {
        assert!(RequestMix::try_new(&[]).is_err());
        assert!(RequestMix::try_new(&[1, 0]).is_err());
        assert!(RequestMix::try_new(&[u32::MAX]).is_err());
    }
}
