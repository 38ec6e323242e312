use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

type Seen = Arc<Mutex<Vec<(State, State)>>>;

fn recorder() -> (Seen, Arc<dyn EventSink>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let sink: Arc<dyn EventSink> = Arc::new(move |e: &Event<'_>| {
        if let Event::BreakerTransition { from, to, .. } = e {
            s.lock().unwrap().push((*from, *to));
        }
    });
    (seen, sink)
}

fn record(b: &CircuitBreaker, outcome: Outcome) {
    b.try_acquire().expect("admitted").record(outcome);
}

fn small(sink: Arc<dyn EventSink>) -> CircuitBreaker {
    CircuitBreaker::builder()
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_wait(Duration::from_secs(10))
        .half_open_max_concurrent(2)
        .event_sink(sink)
        .build()
        .unwrap()
}

/// resilience4j: minimumNumberOfCalls 10, failureRateThreshold 50, COUNT_BASED window 10.
#[tokio::test(start_paused = true)]
async fn resilience4j_scenario_closed_after_four_failures_open_after_five() {
    let b = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(10)
        .failure_rate(0.5)
        .build()
        .unwrap();
    for _ in 0..6 {
        record(&b, Outcome::Success);
    }
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.metrics().window.calls, 10);
    assert_eq!(b.state(), State::Closed, "4/10 failures = 40% < 50%");

    let b = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(10)
        .failure_rate(0.5)
        .build()
        .unwrap();
    for _ in 0..5 {
        record(&b, Outcome::Success);
    }
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "9 calls: below the minimum, no verdict"
    );
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open, "5/10 failures = 50% >= 50%");
}

#[tokio::test(start_paused = true)]
async fn breaker_gives_no_verdict_below_minimum_calls() {
    let b = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(5)
        .failure_rate(0.5)
        .build()
        .unwrap();
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn breaker_walks_closed_open_half_open_closed() {
    let (seen, sink) = recorder();
    let b = small(sink);
    for o in [
        Outcome::Success,
        Outcome::Success,
        Outcome::Failure,
        Outcome::Failure,
    ] {
        record(&b, o);
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.try_acquire().unwrap_err().state, State::Open);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(
        b.try_acquire().is_err(),
        "still open 1ms before the wait ends"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let p1 = b.try_acquire().expect("first probe");
    assert_eq!(b.state(), State::HalfOpen);
    let p2 = b.try_acquire().expect("second probe");
    assert_eq!(
        b.try_acquire().unwrap_err().state,
        State::HalfOpen,
        "third probe rejected"
    );
    p1.record(Outcome::Success);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "one outcome of two is not a verdict"
    );
    p2.record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().window.calls, 0, "closing clears the window");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_reopens_from_half_open_with_growing_wait() {
    let (seen, sink) = recorder();
    let b = CircuitBreaker::builder()
        .count_window(2)
        .minimum_calls(2)
        .failure_rate(0.5)
        .open_wait(Duration::from_secs(1))
        .exponential_open_wait(2.0, Duration::from_secs(3))
        .half_open_max_concurrent(1)
        .event_sink(sink)
        .build()
        .unwrap();
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    // Wait 1s, probe fails -> open for 2s; probe fails -> open for 3s (capped).
    for wait_ms in [1_000u64, 2_000, 3_000, 3_000] {
        tokio::time::advance(Duration::from_millis(wait_ms - 1)).await;
        assert!(b.try_acquire().is_err(), "open before {wait_ms}ms");
        tokio::time::advance(Duration::from_millis(1)).await;
        record(&b, Outcome::Failure);
        assert_eq!(b.state(), State::Open);
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    record(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    // closed->open, 4 x (open->half-open->open), open->half-open->closed.
    assert_eq!(seen.lock().unwrap().len(), 1 + 4 * 2 + 2);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_on_slow_call_rate() {
    let b = CircuitBreaker::builder()
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(1.0)
        .slow_calls(Duration::from_millis(100), 0.5)
        .build()
        .unwrap();
    for delay in [10u64, 150, 10] {
        let r: Result<(), Error<()>> = b
            .call(|| async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(())
            })
            .await;
        assert!(r.is_ok());
    }
    assert_eq!(b.state(), State::Closed, "1 slow of 3 calls: below minimum");
    let _ = b
        .call(|| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<(), ()>(())
        })
        .await;
    assert_eq!(
        b.metrics().window.slow,
        2,
        "a call of exactly the limit counts as slow"
    );
    assert_eq!(b.state(), State::Open, "2 slow of 4 = 50%");
}

#[tokio::test(start_paused = true)]
async fn breaker_time_window_forgets_old_failures() {
    let b = CircuitBreaker::builder()
        .time_window(Duration::from_secs(10), 10)
        .minimum_calls(4)
        .failure_rate(0.5)
        .build()
        .unwrap();
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        b.metrics().window.calls,
        0,
        "old buckets fell out of the window"
    );
    record(&b, Outcome::Success);
    record(&b, Outcome::Success);
    record(&b, Outcome::Success);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Closed, "1 of 4 in the window");
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open, "3 of 6 in the window");
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_and_disabled_admits_until_reset() {
    let (seen, sink) = recorder();
    let b = small(sink);
    b.force_open();
    assert_eq!(b.state(), State::ForcedOpen);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(b.try_acquire().unwrap_err().state, State::ForcedOpen);
    b.disable();
    for _ in 0..100 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Disabled);
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Disabled),
            (State::Disabled, State::Closed)
        ]
    );
    assert_eq!(b.metrics().rejected_total, 1);
}

#[tokio::test(start_paused = true)]
async fn classifier_decides_what_counts_as_failure() {
    let b = CircuitBreaker::builder()
        .count_window(2)
        .minimum_calls(2)
        .failure_rate(0.5)
        .build()
        .unwrap();
    // A 404 is a success, a 400 says nothing, a 503 is a failure.
    let classify = |r: &Result<u16, ()>| match r {
        Ok(503) | Err(_) => Outcome::Failure,
        Ok(400) => Outcome::Ignored,
        Ok(_) => Outcome::Success,
    };
    for code in [404u16, 400, 400, 400] {
        let _ = b
            .call_classified(|| async move { Ok(code) }, classify)
            .await;
    }
    assert_eq!(b.metrics().window.calls, 1);
    let _ = b.call_classified(|| async { Ok(503) }, classify).await;
    assert_eq!(b.state(), State::Open);
    let r = b.call_classified(|| async { Ok(200) }, classify).await;
    assert_eq!(r, Err(Error::BreakerOpen));
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_frees_its_half_open_slot() {
    let (_, sink) = recorder();
    let b = small(sink);
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p1);
    let p3 = b.try_acquire().expect("slot freed by the dropped probe");
    p2.record(Outcome::Success);
    p3.record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcome_of_a_call_admitted_before_opening_is_ignored() {
    let (_, sink) = recorder();
    let b = small(sink);
    let stale = b.try_acquire().unwrap();
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = b.try_acquire().unwrap();
    stale.record(Outcome::Failure);
    assert_eq!(b.state(), State::HalfOpen, "stale outcome did not re-open");
    probe.record(Outcome::Success);
    record(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn invalid_breaker_settings_are_rejected() {
    assert!(CircuitBreaker::builder().failure_rate(0.0).build().is_err());
    assert!(CircuitBreaker::builder().failure_rate(1.5).build().is_err());
    assert!(CircuitBreaker::builder().count_window(0).build().is_err());
    assert!(CircuitBreaker::builder().minimum_calls(0).build().is_err());
    assert!(
        CircuitBreaker::builder()
            .half_open_max_concurrent(0)
            .build()
            .is_err()
    );
    assert!(
        CircuitBreaker::builder()
            .exponential_open_wait(0.5, Duration::from_secs(100))
            .build()
            .is_err()
    );
    assert!(
        CircuitBreaker::builder()
            .open_wait(Duration::from_secs(10))
            .exponential_open_wait(2.0, Duration::from_secs(1))
            .build()
            .is_err()
    );
}
