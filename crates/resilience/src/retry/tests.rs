use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn backoff(kind: BackoffKind) -> Backoff {
    Backoff::try_new(kind, ms(100), ms(1_000)).unwrap()
}

/// Runs a call that always fails and returns the sleeps between attempts, measured on paused
/// time.
async fn observed_delays(retry: &Retry) -> Vec<Duration> {
    let stamps = Mutex::new(Vec::new());
    let _: Result<(), ()> = retry
        .call(|| {
            stamps.lock().unwrap().push(Instant::now());
            async { Err(()) }
        })
        .await;
    let s = stamps.into_inner().unwrap();
    s.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn constant_backoff_waits_min_between_attempts() {
    let r = Retry::builder(backoff(BackoffKind::Constant))
        .max_attempts(4)
        .build()
        .unwrap();
    assert_eq!(observed_delays(&r).await, vec![ms(100); 3]);
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_doubles_up_to_max() {
    let r = Retry::builder(backoff(BackoffKind::Exponential))
        .max_attempts(7)
        .build()
        .unwrap();
    assert_eq!(
        observed_delays(&r).await,
        vec![ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]
    );
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_under_the_exponential_curve() {
    let r = Retry::builder(backoff(BackoffKind::FullJitter))
        .max_attempts(6)
        .seed(7)
        .build()
        .unwrap();
    let d = observed_delays(&r).await;
    assert_eq!(d.len(), 5);
    for (i, d) in d.iter().enumerate() {
        let cap = ms(100 << i).min(ms(1_000));
        assert!(
            *d >= ms(100) && *d <= cap,
            "retry {i}: {d:?} not in [100ms, {cap:?}]"
        );
    }
    assert!(d.windows(2).any(|w| w[0] != w[1]), "jitter varies: {d:?}");
}

#[tokio::test(start_paused = true)]
async fn equal_jitter_keeps_at_least_half_the_exponential_wait() {
    let r = Retry::builder(backoff(BackoffKind::EqualJitter))
        .max_attempts(6)
        .seed(11)
        .build()
        .unwrap();
    for (i, d) in observed_delays(&r).await.iter().enumerate() {
        let e = ms(100 << i).min(ms(1_000));
        assert!(
            *d >= (e / 2).max(ms(100)) && *d <= e,
            "retry {i}: {d:?} vs {e:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_grows_from_the_previous_delay() {
    let r = Retry::builder(backoff(BackoffKind::Decorrelated))
        .max_attempts(8)
        .seed(3)
        .build()
        .unwrap();
    let d = observed_delays(&r).await;
    let mut prev = ms(100);
    for d in d {
        assert!(
            d >= ms(100) && d <= (prev * 3).min(ms(1_000)),
            "{d:?} after {prev:?}"
        );
        prev = d;
    }
}

#[tokio::test(start_paused = true)]
async fn retry_stops_on_success_and_on_non_retryable_results() {
    let calls = AtomicU32::new(0);
    let r = Retry::builder(backoff(BackoffKind::Constant))
        .max_attempts(5)
        .build()
        .unwrap();
    let out: Result<u32, u32> = r
        .call(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { if n < 3 { Err(n) } else { Ok(n) } }
        })
        .await;
    assert_eq!(out, Ok(3));
    calls.store(0, Ordering::SeqCst);
    // A 400 (client error) must not be retried.
    let out: Result<(), u16> = r
        .call_if(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(400) }
            },
            |r| match r {
                Err(code) if *code >= 500 => RetryDecision::Retry,
                _ => RetryDecision::Done,
            },
        )
        .await;
    assert_eq!(out, Err(400));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_overrides_a_shorter_backoff() {
    let r = Retry::builder(backoff(BackoffKind::Constant))
        .max_attempts(2)
        .build()
        .unwrap();
    let start = Instant::now();
    let _: Result<(), ()> = r
        .call_if(
            || async { Err(()) },
            |_| RetryDecision::RetryAfter(Duration::from_secs(3)),
        )
        .await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_allowed_ends_retries() {
    let calls = AtomicU32::new(0);
    let r = Retry::builder(backoff(BackoffKind::Constant))
        .max_attempts(5)
        .max_retry_after(Duration::from_secs(10))
        .build()
        .unwrap();
    let start = Instant::now();
    let _: Result<(), ()> = r
        .call_if(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(()) }
            },
            |_| RetryDecision::RetryAfter(Duration::from_secs(11)),
        )
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_never_sleeps_past_the_deadline() {
    let calls = AtomicU32::new(0);
    let r = Retry::builder(backoff(BackoffKind::Exponential))
        .max_attempts(10)
        .deadline(ms(650))
        .build()
        .unwrap();
    let start = Instant::now();
    let _: Result<(), ()> = r
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(()) }
        })
        .await;
    // Sleeps 100 + 200 = 300ms; the next 400ms would end at 700ms > 650ms.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), ms(300));
}

#[tokio::test(start_paused = true)]
async fn retry_budget_caps_retries_at_ratio_plus_floor() {
    // 20% of requests plus 1/s over a 10s window: 10 reserve.
    let budget = Arc::new(
        RetryBudget::try_new(Duration::from_secs(10), 1, 0.2)
            .unwrap()
            .with_clock(crate::clock::Clock::tokio()),
    );
    let exhausted = Arc::new(AtomicU32::new(0));
    let e = exhausted.clone();
    let r = Retry::builder(backoff(BackoffKind::Constant))
        .max_attempts(3)
        .budget(budget.clone())
        .event_sink(Arc::new(move |ev: &Event<'_>| {
            if matches!(ev, Event::RetryBudgetExhausted { .. }) {
                e.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    for _ in 0..50 {
        let _: Result<(), ()> = r
            .call(|| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err(()) }
            })
            .await;
    }
    // 50 requests deposit 10 retries, the floor adds 10 over the window: at most 20 retries,
    // and the window (10s) is longer than the test's total sleeps (<= 20 * 100ms).
    let retries = attempts.load(Ordering::SeqCst) - 50;
    assert_eq!(retries, 20);
    assert!(exhausted.load(Ordering::SeqCst) > 0);
    assert_eq!(budget.available(), 0);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_refills_as_the_window_slides() {
    let budget = RetryBudget::try_new(Duration::from_secs(1), 0, 0.5)
        .unwrap()
        .with_clock(crate::clock::Clock::tokio());
    budget.deposit();
    budget.deposit();
    assert!(budget.try_withdraw());
    assert!(!budget.try_withdraw());
    tokio::time::advance(Duration::from_millis(1_100)).await;
    assert_eq!(
        budget.available(),
        0,
        "old deposits and withdrawals left the window"
    );
    budget.deposit();
    budget.deposit();
    assert!(budget.try_withdraw());
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(
        parse_retry_after("Wed, 32 Oct 2015 07:28:30 GMT", now),
        None
    );
}

#[test]
fn invalid_backoff_and_budget_are_rejected() {
    assert!(Backoff::try_new(BackoffKind::Constant, Duration::ZERO, ms(1)).is_err());
    assert!(Backoff::try_new(BackoffKind::Constant, ms(2), ms(1)).is_err());
    assert!(RetryBudget::try_new(Duration::ZERO, 1, 0.1).is_err());
    assert!(RetryBudget::try_new(Duration::from_secs(1), 1, -0.1).is_err());
    assert!(
        Retry::builder(backoff(BackoffKind::Constant))
            .max_attempts(0)
            .build()
            .is_err()
    );
}
