//! The composed stack and the tower layers, on paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use faultline_resilience::breaker::{CircuitBreaker, Outcome, State};
use faultline_resilience::bulkhead::Bulkhead;
use faultline_resilience::clock::Clock;
use faultline_resilience::ratelimit::{Quota, RateLimiter};
use faultline_resilience::retry::{Backoff, BackoffKind, Retry, RetryBudget, RetryDecision};
use faultline_resilience::stack::{Stack, default_retry_on};
use faultline_resilience::{Error, Event};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn retry(attempts: u32) -> Retry {
    Retry::builder(Backoff::try_new(BackoffKind::Constant, ms(100), ms(100)).unwrap())
        .max_attempts(attempts)
        .build()
        .unwrap()
}

fn breaker(window: u32) -> CircuitBreaker {
    CircuitBreaker::builder()
        .count_window(window)
        .minimum_calls(window)
        .failure_rate(0.5)
        .open_wait(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn hung_attempt_times_out_is_retried_and_counted_by_the_breaker() {
    let b = breaker(10);
    let stack = Stack::new()
        .retry(retry(3))
        .breaker(b.clone())
        .attempt_timeout(ms(200))
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let r = stack
        .call(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, ()>(n)
            }
        })
        .await;
    assert_eq!(r, Ok(1));
    assert_eq!(start.elapsed(), ms(300), "200ms timeout + 100ms backoff");
    let w = b.metrics().window;
    assert_eq!(
        (w.calls, w.failures),
        (2, 1),
        "the breaker saw both attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn open_breaker_stops_remaining_retries_at_once() {
    let b = breaker(2);
    let stack = Stack::new().retry(retry(5)).breaker(b.clone());
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let r: Result<(), Error<&str>> = stack
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("503") }
        })
        .await;
    assert_eq!(
        r,
        Err(Error::Inner("503")),
        "the failure that tripped the breaker"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "opened after two failures");
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        start.elapsed(),
        ms(100),
        "no backoff after the breaker opened"
    );
    let r: Result<(), Error<&str>> = stack.call(|| async { Ok(()) }).await;
    assert_eq!(r, Err(Error::BreakerOpen));
    assert_eq!(start.elapsed(), ms(100), "a rejection is not retried");
}

#[tokio::test(start_paused = true)]
async fn deadline_bounds_the_whole_call_including_retries() {
    let stack = Stack::new()
        .deadline(ms(450))
        .unwrap()
        .retry(retry(10))
        .attempt_timeout(ms(200))
        .unwrap();
    let start = Instant::now();
    let r: Result<(), Error<()>> = stack
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await;
    // 200ms timeout, 100ms backoff, then the second attempt is cut by the deadline at 450ms.
    assert_eq!(r, Err(Error::DeadlineExceeded));
    assert_eq!(start.elapsed(), ms(450));
}

#[tokio::test(start_paused = true)]
async fn a_callers_earlier_deadline_cuts_the_call_and_the_breaker_counts_it() {
    let b = breaker(1);
    let stack = |b: Option<CircuitBreaker>| {
        let s = Stack::new().deadline(ms(450)).unwrap().retry(retry(10));
        let s = match b {
            Some(b) => s.breaker(b),
            None => s,
        };
        s.attempt_timeout(ms(200)).unwrap()
    };
    let hang = || async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), ()>(())
    };
    let classify = |r: &Result<(), ()>| {
        if r.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    };
    let start = Instant::now();
    let r = stack(Some(b.clone()))
        .call_until(Some(start + ms(250)), hang, classify, default_retry_on)
        .await;
    // 200ms timeout, then a 100ms backoff would end past 250ms: no second attempt, and
    // the first attempt's timeout is the answer.
    assert_eq!(r, Err(Error::Timeout(ms(200))));
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(
        b.state(),
        State::Open,
        "the cut attempt was a breaker failure"
    );
    // The stack's own deadline still applies when the caller's is later.
    let start = Instant::now();
    let r = stack(None)
        .call_until(Some(start + ms(5000)), hang, classify, default_retry_on)
        .await;
    assert_eq!(r, Err(Error::DeadlineExceeded));
    assert_eq!(start.elapsed(), ms(450));
    // A deadline already passed makes no call at all.
    let calls = AtomicU32::new(0);
    let stack = Stack::new();
    let r = stack
        .call_until(
            Some(Instant::now()),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<(), ()>(()) }
            },
            |_: &Result<(), ()>| Outcome::Success,
            default_retry_on,
        )
        .await;
    assert_eq!(r, Err(Error::DeadlineExceeded));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_and_bulkhead_reject_before_the_call_runs() {
    let rl = Arc::new(
        RateLimiter::new(Quota::try_new(1, Duration::from_secs(1), 1).unwrap())
            .with_clock(Clock::tokio()),
    );
    let stack = Stack::new().rate_limiter(rl).retry(retry(3));
    let calls = AtomicU32::new(0);
    let run = || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, ()>(()) }
    };
    assert_eq!(stack.call(run).await, Ok(()));
    let r = stack.call(run).await;
    assert!(matches!(r, Err(Error::RateLimited { .. })), "{r:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let bh = Bulkhead::try_new(1, 0, ms(10)).unwrap();
    let held = bh.acquire::<()>().await.unwrap();
    let stack = Stack::new().bulkhead(bh);
    assert_eq!(stack.call(run).await, Err(Error::BulkheadFull));
    drop(held);
    assert_eq!(stack.call(run).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn only_calls_the_predicate_marks_retryable_are_retried() {
    let stack = Stack::new().retry(retry(4));
    let calls = AtomicU32::new(0);
    // Non-idempotent POST: never retried after it reached the upstream.
    let r: Result<(), Error<u16>> = stack
        .call_with(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(500) }
            },
            |_| faultline_resilience::breaker::Outcome::Failure,
            |_| RetryDecision::Done,
        )
        .await;
    assert_eq!(r, Err(Error::Inner(500)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    calls.store(0, Ordering::SeqCst);
    let _: Result<(), Error<u16>> = stack
        .call_with(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(500) }
            },
            |_| faultline_resilience::breaker::Outcome::Failure,
            default_retry_on,
        )
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn shared_budget_limits_retries_across_all_callers() {
    let budget = Arc::new(
        RetryBudget::try_new(Duration::from_secs(10), 0, 0.1)
            .unwrap()
            .with_clock(Clock::tokio()),
    );
    let retries = Arc::new(AtomicU32::new(0));
    let r2 = retries.clone();
    let policy = Retry::builder(Backoff::try_new(BackoffKind::Constant, ms(1), ms(1)).unwrap())
        .max_attempts(3)
        .budget(budget)
        .event_sink(Arc::new(move |e: &Event<'_>| {
            if matches!(e, Event::Retry { .. }) {
                r2.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .build()
        .unwrap();
    let stack = Stack::new().retry(policy);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let s = stack.clone();
        tasks.push(tokio::spawn(async move {
            s.call(|| async { Err::<(), _>("down") }).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    // 100 requests x 10% = 10 retries, instead of 200 without a budget.
    assert_eq!(retries.load(Ordering::SeqCst), 10);
}

#[cfg(feature = "tower")]
mod tower_layers {
    use super::*;
    use faultline_resilience::timeout::Timeout;
    use faultline_resilience::tower_support::{BreakerLayer, RateLimitLayer, TimeoutLayer};
    use tower::{Service, ServiceBuilder, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn breaker_layer_opens_and_rejects_without_calling_the_service() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let inner = tower::service_fn(move |req: u32| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { if req == 0 { Err("boom") } else { Ok(req) } }
        });
        let b = breaker(2);
        let mut svc = ServiceBuilder::new()
            .layer(BreakerLayer::new(b.clone()))
            .service(inner);
        assert_eq!(svc.ready().await.unwrap().call(1).await, Ok(1));
        assert_eq!(
            svc.ready().await.unwrap().call(0).await,
            Err(Error::Inner("boom"))
        );
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            svc.ready().await.unwrap().call(1).await,
            Err(Error::BreakerOpen)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_and_timeout_layers_reject_and_time_out() {
        let rl = Arc::new(
            RateLimiter::new(Quota::try_new(1, Duration::from_secs(1), 1).unwrap())
                .with_clock(Clock::tokio()),
        );
        let inner = tower::service_fn(|d: u64| async move {
            tokio::time::sleep(ms(d)).await;
            Ok::<_, ()>(d)
        });
        let mut svc = ServiceBuilder::new()
            .layer(RateLimitLayer::new(rl))
            .service(inner);
        assert_eq!(svc.ready().await.unwrap().call(1).await, Ok(1));
        assert!(matches!(
            svc.ready().await.unwrap().call(1).await,
            Err(Error::RateLimited { .. })
        ));
        let mut svc = ServiceBuilder::new()
            .layer(TimeoutLayer::new(Timeout::try_new(ms(50)).unwrap()))
            .service(tower::service_fn(|d: u64| async move {
                tokio::time::sleep(ms(d)).await;
                Ok::<_, ()>(d)
            }));
        assert_eq!(svc.ready().await.unwrap().call(10).await, Ok(10));
        assert_eq!(
            svc.ready().await.unwrap().call(100).await,
            Err(Error::Timeout(ms(50)))
        );
    }
}
