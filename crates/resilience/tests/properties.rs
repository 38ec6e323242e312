//! Property tests for the invariants the fleet relies on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use faultline_resilience::breaker::{CircuitBreaker, Outcome};
use faultline_resilience::clock::{Clock, Rng};
use faultline_resilience::ratelimit::{Quota, RateLimiter};
use faultline_resilience::retry::{Backoff, BackoffKind, RetryBudget};
use proptest::prelude::*;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn kind() -> impl Strategy<Value = BackoffKind> {
    prop_oneof![
        Just(BackoffKind::Constant),
        Just(BackoffKind::Exponential),
        Just(BackoffKind::FullJitter),
        Just(BackoffKind::EqualJitter),
        Just(BackoffKind::Decorrelated),
    ]
}

proptest! {
    #[test]
    fn backoff_always_lies_between_min_and_max(
        kind in kind(),
        min_ns in 1u64..10_000_000_000,
        extra_ns in 0u64..100_000_000_000,
        retry in 0u32..200,
        previous_ns in 0u64..u64::MAX / 2,
        seed: u64,
    ) {
        let (min, max) = (Duration::from_nanos(min_ns), Duration::from_nanos(min_ns + extra_ns));
        let b = Backoff::try_new(kind, min, max).unwrap();
        let rng = Rng::seeded(seed);
        for r in retry..retry + 5 {
            let d = b.delay(r, Duration::from_nanos(previous_ns), &rng);
            prop_assert!(d >= min && d <= max, "{kind:?} retry {r}: {d:?} not in [{min:?}, {max:?}]");
        }
    }

    #[test]
    fn rate_limiter_never_exceeds_its_rate_over_any_window(
        count in 1u32..50,
        period_ms in 10u64..2_000,
        burst in 1u32..20,
        steps in prop::collection::vec((0u64..200, 1u32..6), 1..60),
    ) {
        let rt = paused_runtime();
        rt.block_on(async {
            let quota = Quota::try_new(count, Duration::from_millis(period_ms), burst).unwrap();
            let t = quota.emission_interval().as_nanos();
            let rl = RateLimiter::new(quota).with_clock(Clock::tokio());
            let start = tokio::time::Instant::now();
            let mut admitted: Vec<u128> = Vec::new();
            for (advance_ms, tries) in steps {
                tokio::time::advance(Duration::from_millis(advance_ms)).await;
                for _ in 0..tries {
                    if rl.check().is_ok() {
                        admitted.push(start.elapsed().as_nanos());
                    }
                }
            }
            // GCRA bound: in any interval [a, b], at most burst + (b - a) / T conform.
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let n = (j - i + 1) as u128;
                    let allowed = u128::from(burst) + (admitted[j] - admitted[i]) / t;
                    prop_assert!(n <= allowed, "{n} admitted in {}ns, allowed {allowed}", admitted[j] - admitted[i]);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn retry_budget_is_never_exceeded(
        min_per_sec in 0u32..5,
        ratio_pct in 0u32..100,
        steps in prop::collection::vec((0u64..150, 0u32..10, 0u32..10), 1..80),
    ) {
        let rt = paused_runtime();
        rt.block_on(async {
            let window = Duration::from_secs(1);
            let ratio = f64::from(ratio_pct) / 100.0;
            let budget = RetryBudget::try_new(window, min_per_sec, ratio).unwrap().with_clock(Clock::tokio());
            let start = tokio::time::Instant::now();
            let mut deposits: Vec<u64> = Vec::new();
            let mut withdrawals: Vec<u64> = Vec::new();
            for (advance_ms, requests, retries) in steps {
                tokio::time::advance(Duration::from_millis(advance_ms)).await;
                let now = start.elapsed().as_millis() as u64;
                for _ in 0..requests {
                    budget.deposit();
                    deposits.push(now);
                }
                for _ in 0..retries {
                    if budget.try_withdraw() {
                        withdrawals.push(now);
                        // Deposits counted are at most those of (now - 1s, now]; withdrawals
                        // remembered cover at least [now - 900ms, now] (10 buckets of 100ms).
                        let dep = deposits.iter().filter(|&&d| d + 1_000 > now).count() as u64;
                        let used = withdrawals.iter().filter(|&&w| w + 900 >= now).count() as u64;
                        let units = u64::from(min_per_sec) * 1_000 + dep * u64::from(ratio_pct) * 10;
                        prop_assert!(used * 1_000 <= units, "{used} retries > budget of {units} units at {now}ms");
                    }
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn breaker_never_admits_more_than_n_half_open_probes_under_concurrency(
        max_probes in 1u32..5,
        extra_calls in 0u32..6,
        fail_pct in 0u64..100,
        threads in 2usize..6,
    ) {
        let b = CircuitBreaker::builder()
            .count_window(4)
            .minimum_calls(2)
            .failure_rate(0.5)
            // A 1ns open wait sends the breaker round open -> half-open all the time.
            .open_wait(Duration::from_nanos(1))
            .half_open_max_concurrent(max_probes)
            .half_open_calls(max_probes + extra_calls)
            .build()
            .unwrap();
        b.force_open();
        b.reset();
        for _ in 0..4 {
            b.try_acquire().unwrap().record(Outcome::Failure);
        }
        let in_flight = AtomicU32::new(0);
        let peak = AtomicU32::new(0);
        let probes = AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (b, in_flight, peak, probes) = (&b, &in_flight, &peak, &probes);
                s.spawn(move || {
                    let rng = Rng::seeded(t as u64);
                    for _ in 0..2_000 {
                        let Ok(p) = b.try_acquire() else { continue };
                        if !p.is_probe() {
                            p.record(if rng.between(0, 99) < fail_pct { Outcome::Failure } else { Outcome::Success });
                            continue;
                        }
                        probes.fetch_add(1, Ordering::Relaxed);
                        let now = in_flight.fetch_add(1, Ordering::AcqRel) + 1;
                        peak.fetch_max(now, Ordering::AcqRel);
                        // Hold the probe a little (a spin, not a sleep) so probes overlap.
                        for _ in 0..200 {
                            std::hint::spin_loop();
                        }
                        std::thread::yield_now();
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        match rng.between(0, 9) {
                            0 => drop(p),
                            r if (r * 10) < fail_pct => p.record(Outcome::Failure),
                            _ => p.record(Outcome::Success),
                        }
                    }
                });
            }
        });
        prop_assert!(probes.load(Ordering::Relaxed) > 0, "the test must exercise half-open");
        prop_assert!(peak.load(Ordering::Relaxed) <= max_probes,
            "{} concurrent probes > cap {max_probes}", peak.load(Ordering::Relaxed));
    }
}
