//! Per-call overhead of the policies, compared in the same run with `failsafe` (breaker) and
//! `governor` (rate limiter). Async calls are polled once with a no-op waker: every future here
//! completes at once, so the figure is the policy's own cost, not an executor's.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_resilience::balance::{Balancer, BalancerConfig};
use faultline_resilience::breaker::{CircuitBreaker, Outcome};
use faultline_resilience::ratelimit::{Quota, RateLimiter};
use faultline_resilience::retry::{Backoff, BackoffKind, Retry, RetryBudget};

/// Poll a future that must complete without waiting.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future must complete at once"),
    }
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("breaker_closed_call");
    let ours = CircuitBreaker::builder().build().expect("breaker");
    let ours_time = CircuitBreaker::builder()
        .time_window(Duration::from_secs(10), 10)
        .build()
        .expect("breaker");
    let theirs = failsafe::Config::new().build();

    g.bench_function("faultline_sync_permit", |b| {
        b.iter(|| {
            let p = ours.try_acquire().expect("closed");
            let r = black_box(Ok::<u64, ()>(1));
            p.record(Outcome::Success);
            r
        })
    });
    g.bench_function("failsafe_sync_call", |b| {
        b.iter(|| failsafe::CircuitBreaker::call(&theirs, || black_box(Ok::<u64, ()>(1))))
    });
    g.bench_function("faultline_async_call", |b| {
        b.iter(|| now_or_never(ours.call(|| async { black_box(Ok::<u64, ()>(1)) })))
    });
    g.bench_function("faultline_async_call_time_window", |b| {
        b.iter(|| now_or_never(ours_time.call(|| async { black_box(Ok::<u64, ()>(1)) })))
    });
    g.bench_function("failsafe_async_call", |b| {
        b.iter(|| {
            now_or_never(failsafe::futures::CircuitBreaker::call(&theirs, async {
                black_box(Ok::<u64, ()>(1))
            }))
        })
    });
    g.finish();
}

fn retry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let backoff = Backoff::try_new(
        BackoffKind::FullJitter,
        Duration::from_millis(10),
        Duration::from_secs(1),
    )
    .expect("backoff");
    let plain = Retry::builder(backoff).build().expect("retry");
    let budget = Arc::new(RetryBudget::try_new(Duration::from_secs(10), 10, 0.2).expect("budget"));
    let budgeted = Retry::builder(backoff)
        .budget(budget)
        .build()
        .expect("retry");
    let mut g = c.benchmark_group("retry_successful_call");
    g.bench_function("faultline_retry", |b| {
        b.iter(|| now_or_never(plain.call(|| async { black_box(Ok::<u64, ()>(1)) })))
    });
    g.bench_function("faultline_retry_with_budget", |b| {
        b.iter(|| now_or_never(budgeted.call(|| async { black_box(Ok::<u64, ()>(1)) })))
    });
    g.finish();
}

fn rate_limit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    // A rate high enough that every check is admitted: the conforming path is the hot one.
    let ours = RateLimiter::new(Quota::per_second(1_000_000_000).expect("quota"));
    let theirs = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(1_000_000_000).expect("nonzero"),
    ));
    let mut g = c.benchmark_group("rate_limiter_check");
    g.bench_function("faultline_gcra", |b| {
        b.iter(|| black_box(ours.check().is_ok()))
    });
    g.bench_function("governor_gcra", |b| {
        b.iter(|| black_box(theirs.check().is_ok()))
    });
    g.finish();
}

fn p2c(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let lb = Balancer::try_new((0..8).collect::<Vec<u32>>(), BalancerConfig::default())
        .expect("balancer")
        .with_seed(1);
    let mut g = c.benchmark_group("balancer_pick");
    g.bench_function("faultline_p2c_peak_ewma_8", |b| {
        b.iter(|| {
            let p = lb.pick_p2c();
            black_box(p.index())
        })
    });
    g.bench_function("faultline_round_robin_8", |b| {
        b.iter(|| {
            let p = lb.pick_round_robin();
            black_box(p.index())
        })
    });
    g.finish();
}

criterion_group!(benches, breaker, retry, rate_limit, p2c);
criterion_main!(benches);
