//! Proves the per-call paths allocate nothing, by counting heap blocks with dhat's testing
//! allocator. dhat allows one profiler per process, so this file holds a single test.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use faultline_resilience::balance::{Balancer, BalancerConfig};
use faultline_resilience::breaker::{CircuitBreaker, Outcome};
use faultline_resilience::ratelimit::{Quota, RateLimiter};
use faultline_resilience::retry::{Backoff, BackoffKind, Retry, RetryBudget};
use faultline_resilience::stack::Stack;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future must complete at once"),
    }
}

/// Heap blocks allocated while running `f` 1000 times; the least of three rounds.
///
/// dhat counts every thread of the process, and the test harness's own threads allocate now
/// and then; a real per-call allocation shows in every round (>= 1000 blocks), a stray one
/// from another thread does not.
fn blocks_allocated(mut f: impl FnMut()) -> u64 {
    f(); // first call may initialise lazily (thread-locals, clock calibration)
    (0..3)
        .map(|_| {
            let before = dhat::HeapStats::get().total_blocks;
            for _ in 0..1_000 {
                f();
            }
            dhat::HeapStats::get().total_blocks - before
        })
        .min()
        .unwrap_or(u64::MAX)
}

#[test]
fn per_call_paths_allocate_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();

    let breaker = CircuitBreaker::builder().build().unwrap();
    let time_breaker = CircuitBreaker::builder()
        .time_window(Duration::from_secs(10), 10)
        .slow_calls(Duration::from_secs(1), 0.5)
        .build()
        .unwrap();
    // Never trips (rate 1.0 with alternating outcomes), so the failure path stays on closed.
    let tolerant = CircuitBreaker::builder().failure_rate(1.0).build().unwrap();
    let backoff = Backoff::try_new(
        BackoffKind::FullJitter,
        Duration::from_millis(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let budget = Arc::new(RetryBudget::try_new(Duration::from_secs(10), 10, 0.2).unwrap());
    let retry = Retry::builder(backoff).budget(budget).build().unwrap();
    let limiter = RateLimiter::new(Quota::per_second(1_000_000_000).unwrap());
    let lb = Balancer::try_new(vec![1, 2, 3, 4], BalancerConfig::default()).unwrap();
    let stack = Stack::new()
        .rate_limiter(Arc::new(RateLimiter::new(
            Quota::per_second(1_000_000_000).unwrap(),
        )))
        .retry(retry.clone())
        .breaker(breaker.clone());

    let results = [
        (
            "breaker permit",
            blocks_allocated(|| breaker.try_acquire().unwrap().record(Outcome::Success)),
        ),
        (
            "breaker call",
            blocks_allocated(|| {
                now_or_never(breaker.call(|| async { Ok::<_, ()>(1) })).unwrap();
            }),
        ),
        (
            "time-window breaker call",
            blocks_allocated(|| {
                now_or_never(time_breaker.call(|| async { Ok::<_, ()>(1) })).unwrap();
            }),
        ),
        (
            "breaker failure",
            blocks_allocated(|| {
                tolerant.try_acquire().unwrap().record(Outcome::Failure);
                tolerant.try_acquire().unwrap().record(Outcome::Success);
            }),
        ),
        (
            "retry call",
            blocks_allocated(|| {
                now_or_never(retry.call(|| async { Ok::<_, ()>(1) })).unwrap();
            }),
        ),
        (
            "rate limiter check",
            blocks_allocated(|| {
                limiter.check().unwrap();
            }),
        ),
        (
            "p2c pick",
            blocks_allocated(|| lb.pick_p2c().success(Duration::from_millis(3))),
        ),
        (
            "round-robin pick",
            blocks_allocated(|| lb.pick_round_robin().success(Duration::from_millis(3))),
        ),
        (
            "stack call",
            blocks_allocated(|| {
                now_or_never(stack.call(|| async { Ok::<_, ()>(1) })).unwrap();
            }),
        ),
    ];
    let allocating: Vec<_> = results.iter().filter(|(_, n)| *n > 0).collect();
    assert!(
        allocating.is_empty(),
        "allocations per 1000 calls: {allocating:?}"
    );
}
