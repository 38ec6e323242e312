//! Generator behaviour on paused tokio time against a simulated server.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::slo::client::ClientMeasurements;

/// A server that answers after `service`, except that every request arriving inside
/// `stall` waits until the stall ends.
struct Fake {
    start: Instant,
    service: Duration,
    stall: Option<(Duration, Duration)>,
    /// Send time (offset from start) and mix entry of every request received.
    sends: Mutex<Vec<(Duration, usize)>>,
}

#[derive(Clone)]
struct FakeServer(Arc<Fake>);

impl FakeServer {
    fn new(service: Duration, stall: Option<(Duration, Duration)>) -> Self {
        FakeServer(Arc::new(Fake {
            start: Instant::now(),
            service,
            stall,
            sends: Mutex::new(Vec::new()),
        }))
    }

    fn sends(&self) -> Vec<(Duration, usize)> {
        self.0.sends.lock().unwrap().clone()
    }
}

impl Transport for FakeServer {
    async fn send(&self, entry: usize, timeout: Duration) -> Outcome {
        let f = &self.0;
        let at = Instant::now() - f.start;
        f.sends.lock().unwrap().push((at, entry));
        let ready = match f.stall {
            Some((from, to)) if at >= from && at < to => to + f.service,
            _ => at + f.service,
        };
        match tokio::time::timeout(timeout, tokio::time::sleep_until(f.start + ready)).await {
            Ok(()) => Outcome::Status(200),
            Err(_) => Outcome::Timeout,
        }
    }
}

fn measurements() -> Arc<RwLock<ClientMeasurements>> {
    Arc::new(RwLock::new(ClientMeasurements::new("target")))
}

/// Starts a run whose measurements and cancellation the test does not watch.
fn start_unobserved<T: Transport>(
    config: LoadConfig,
    transport: T,
) -> Result<LoadHandle, LoadError> {
    start(config, transport, measurements(), CancellationToken::new())
}

fn open(rate: f64, secs: u64, connections: usize, timeout_ms: u64) -> LoadConfig {
    LoadConfig {
        mode: Mode::Open {
            rate,
            spells: Vec::new(),
        },
        duration: Duration::from_secs(secs),
        connections,
        max_connections: connections,
        timeout: Duration::from_millis(timeout_ms),
        weights: vec![1],
    }
}

#[tokio::test(start_paused = true)]
async fn open_model_sends_each_request_at_its_scheduled_time() {
    let server = FakeServer::new(Duration::from_millis(3), None);
    let run = start_unobserved(open(100.0, 1, 4, 1000), server.clone()).unwrap();
    let report = run.wait().await.unwrap();
    let sends = server.sends();
    assert_eq!(sends.len(), 100);
    for (k, (at, _)) in sends.iter().enumerate() {
        let due = Duration::from_millis(10 * k as u64);
        // tokio's timer has millisecond resolution.
        assert!(
            *at >= due && *at <= due + Duration::from_millis(1),
            "request {k} due at {due:?} was sent at {at:?}"
        );
    }
    assert_eq!(report.counts.requests, 100);
    assert_eq!(report.counts.ok, 100);
    assert_eq!(report.scheduled, Some(100));
    assert!((report.achieved_rate - 100.0).abs() < 1.0, "{report:?}");
    assert!(report.latency_ms.max >= 3.0 && report.latency_ms.max <= 4.1);
}

#[tokio::test(start_paused = true)]
async fn stalled_server_shows_up_as_high_latency_not_as_fewer_samples() {
    // 100 req/s for 2 s over 2 connections; the server stalls from 0.5 s to 1.0 s.
    let server = FakeServer::new(
        Duration::from_millis(1),
        Some((Duration::from_millis(500), Duration::from_millis(1000))),
    );
    let m = measurements();
    let run = start(
        open(100.0, 2, 2, 5000),
        server.clone(),
        Arc::clone(&m),
        CancellationToken::new(),
    )
    .unwrap();
    let stats = run.stats().clone();
    let report = run.wait().await.unwrap();
    // Every scheduled request is measured, stalled or not.
    assert_eq!(report.counts.requests, 200);
    assert_eq!(report.counts.ok, 200);
    assert_eq!(m.read().unwrap().summary().requests, 200);
    // The first request into the stall waited ~500 ms.
    assert!(report.latency_ms.max >= 499.0, "{:?}", report.latency_ms);
    // Requests scheduled during the stall are late by how long they were queued, from
    // 500 ms down to 0: about 25 of them (0.5 s..0.75 s) exceed 250 ms. A generator that
    // measured from the actual send would see at most one slow request per connection.
    let h = stats.latency_histogram();
    let slow = h.count_between(250_000, u64::MAX);
    assert!((24..=27).contains(&slow), "{slow} requests over 250 ms");
    // Only the two connections' requests reached the server during the stall.
    let during = server
        .sends()
        .iter()
        .filter(|(at, _)| *at >= Duration::from_millis(500) && *at < Duration::from_millis(1000))
        .count();
    assert_eq!(during, 2);
    // The third request of the stall (due at 520 ms) could only start at 1001 ms.
    assert!(report.send_lag_ms.max >= 480.0, "{:?}", report.send_lag_ms);
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_as_errors_with_the_timeout_as_latency_and_the_run_ends_within_one_timeout()
{
    // The server needs 1 s; the timeout is 100 ms; one connection.
    let server = FakeServer::new(Duration::from_secs(1), None);
    let begin = Instant::now();
    let run = start_unobserved(open(100.0, 1, 1, 100), server.clone()).unwrap();
    let report = run.wait().await.unwrap();
    assert!(begin.elapsed() <= Duration::from_millis(1100));
    assert_eq!(report.counts.requests, 100);
    assert_eq!(report.counts.timeouts, 100);
    assert_eq!(report.errors, 100);
    // Each request gets only what is left of its own deadline, so all end 100 ms after
    // their scheduled time even though they queue behind each other.
    assert!(
        (report.latency_ms.p50 - 100.0).abs() < 0.2,
        "{:?}",
        report.latency_ms
    );
    assert!(report.latency_ms.max <= 100.2, "{:?}", report.latency_ms);
    assert_eq!(report.started, 100);
}

/// A server that ignores the client's timeout and answers after 1 s, like a transport
/// that cannot be interrupted.
#[derive(Clone)]
struct Deaf(Arc<Mutex<u32>>);

impl Transport for Deaf {
    async fn send(&self, _entry: usize, _timeout: Duration) -> Outcome {
        *self.0.lock().unwrap() += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Outcome::Status(200)
    }
}

#[tokio::test(start_paused = true)]
async fn requests_that_wait_past_their_deadline_are_timeouts_without_being_sent() {
    let server = Deaf(Arc::new(Mutex::new(0)));
    let run = start_unobserved(open(100.0, 1, 1, 100), server.clone()).unwrap();
    let report = run.wait().await.unwrap();
    // Request 0 holds the only connection until 1 s; requests due up to 900 ms are past
    // their deadline by then. Request 91 (due 910 ms) is sent at 1 s and holds it until
    // 2 s, when 92..=99 have expired too.
    assert_eq!(*server.0.lock().unwrap(), 2);
    assert_eq!(report.started, 2);
    // The other 98 expired inside the generator, like k6's dropped iterations.
    assert_eq!(report.expired, 98);
    assert_eq!(report.waited_long, 98 + 1);
    assert_eq!(report.counts.requests, 100);
    // The two that were sent answered after their deadline: timeouts as well.
    assert_eq!(report.counts.timeouts, 100);
    assert_eq!(report.counts.ok, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_the_run_promptly_and_marks_the_report() {
    let server = FakeServer::new(Duration::from_millis(2), None);
    let cancel = CancellationToken::new();
    let run = start(
        open(100.0, 60, 4, 1000),
        server.clone(),
        measurements(),
        cancel.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(305)).await;
    cancel.cancel();
    let stopped = Instant::now();
    let report = run.wait().await.unwrap();
    assert!(stopped.elapsed() < Duration::from_millis(5));
    assert!(report.cancelled);
    assert!((30..=31).contains(&report.counts.requests), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_every_task() {
    let server = FakeServer::new(Duration::from_millis(2), None);
    let run = start_unobserved(open(100.0, 60, 4, 1000), server.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(run);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent = server.sends().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        server.sends().len(),
        sent,
        "requests kept going after the drop"
    );
    // Only the test's own reference is left: every task released its clone.
    assert_eq!(Arc::strong_count(&server.0), 1);
}

#[tokio::test(start_paused = true)]
async fn weighted_mix_reaches_the_server_in_proportion() {
    let server = FakeServer::new(Duration::from_millis(1), None);
    let mut config = open(400.0, 1, 4, 1000);
    config.weights = vec![3, 1];
    let run = start_unobserved(config, server.clone()).unwrap();
    run.wait().await.unwrap();
    let sends = server.sends();
    let first = sends.iter().filter(|(_, e)| *e == 0).count();
    assert_eq!((first, sends.len() - first), (300, 100));
}

#[tokio::test(start_paused = true)]
async fn live_stats_cover_finished_requests_while_the_run_goes_on() {
    let server = FakeServer::new(Duration::from_millis(5), None);
    let m = measurements();
    let run = start(
        open(200.0, 3, 8, 1000),
        server.clone(),
        Arc::clone(&m),
        CancellationToken::new(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 300 requests were due by 1.5 s; all but the last few have finished and been
    // recorded (batches are at most 50 ms old).
    let live = run.stats().counts().requests;
    assert!((285..=300).contains(&live), "{live} recorded at 1.5 s");
    assert_eq!(m.read().unwrap().summary().requests, live);
    let report = run.wait().await.unwrap();
    assert_eq!(report.counts.requests, 600);
    let per_second: u64 = report.seconds.iter().map(|s| s.counts.requests).sum();
    assert_eq!(per_second, 600);
}

#[tokio::test(start_paused = true)]
async fn closed_loop_keeps_every_connection_busy_for_the_duration() {
    let server = FakeServer::new(Duration::from_millis(10), None);
    let config = LoadConfig {
        mode: Mode::Closed,
        duration: Duration::from_secs(1),
        connections: 4,
        max_connections: 4,
        timeout: Duration::from_secs(1),
        weights: vec![1],
    };
    let run = start_unobserved(config, server.clone()).unwrap();
    let report = run.wait().await.unwrap();
    assert_eq!(report.counts.requests, 400);
    assert!((report.achieved_rate - 400.0).abs() < 5.0, "{report:?}");
    assert!((report.latency_ms.p50 - 10.0).abs() < 0.1);
}

#[test]
fn invalid_configurations_are_refused_with_a_reason() {
    let outside = start_unobserved(
        open(100.0, 1, 1, 100),
        FakeServer::new(Duration::from_millis(1), None),
    );
    assert!(matches!(outside, Err(LoadError::NoRuntime)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = FakeServer::new(Duration::from_millis(1), None);
        for (config, needle) in [
            (open(100.0, 1, 0, 100), "connections"),
            (
                LoadConfig {
                    max_connections: 1,
                    ..open(100.0, 1, 2, 100)
                },
                "max connections",
            ),
            (open(0.0, 1, 1, 100), "rate"),
            (open(100.0, 1, 1, 0), "timeout"),
            (
                LoadConfig {
                    weights: vec![],
                    ..open(100.0, 1, 1, 100)
                },
                "mix",
            ),
        ] {
            let e = start_unobserved(config, server.clone()).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    });
    assert!(HttpRequest::new("BREW", "http://127.0.0.1:1", "/", vec![], None).is_err());
    assert!(HttpRequest::new("GET", "https://x", "/", vec![], None).is_err());
    assert!(HttpRequest::new("GET", "http://x", "nope", vec![], None).is_err());
    assert!(
        HttpRequest::new(
            "GET",
            "http://x",
            "/",
            vec![("x".into(), "a\r\nb".into())],
            None
        )
        .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn requests_finished_before_a_stall_are_visible_while_the_stall_lasts() {
    // 100 req/s on 2 connections with 25 ms per request: the workers never go idle, so
    // they never record on the way to waiting. From 0.5 s the server holds every request
    // until 4 s.
    let server = FakeServer::new(
        Duration::from_millis(25),
        Some((Duration::from_millis(500), Duration::from_secs(4))),
    );
    let run = start_unobserved(open(100.0, 5, 2, 10_000), server.clone()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Everything sent before the stall finished long ago; both workers are stuck in a
    // request, yet the live view already holds all of them.
    let before = server
        .sends()
        .iter()
        .filter(|(at, _)| *at < Duration::from_millis(500))
        .count() as u64;
    assert!(before >= 38, "{before}");
    assert_eq!(run.stats().counts().requests, before);
    run.stop();
}

#[test]
fn an_experiment_load_section_becomes_a_config_and_http_mix() {
    use faultline_spec::{Load, LoadRequest, LoadTarget, Rate};
    use std::collections::BTreeMap;
    let load = Load {
        target: LoadTarget::Service("gateway".into()),
        rate: Rate::per_second(200.0).unwrap(),
        connections: 16,
        max_connections: 64,
        timeout: faultline_spec::Duration::from_millis(1500),
        requests: vec![
            LoadRequest {
                method: "POST".into(),
                path: "/api/orders".into(),
                body: Some(r#"{"sku":"A-1","qty":1}"#.into()),
                headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
                weight: 3,
            },
            LoadRequest {
                method: "GET".into(),
                path: "/api/orders/1".into(),
                body: None,
                headers: BTreeMap::new(),
                weight: 1,
            },
        ],
        surges: vec![faultline_spec::Surge {
            after: faultline_spec::Duration(Duration::from_secs(8)),
            duration: faultline_spec::Duration(Duration::from_secs(10)),
            rate: Rate::per_second(2500.0).unwrap(),
        }],
    };
    let (config, transport) =
        LoadConfig::from_spec(&load, "http://127.0.0.1:8080/", Duration::from_secs(60)).unwrap();
    assert_eq!(
        config.mode,
        Mode::Open {
            rate: 200.0,
            spells: vec![crate::load::Spell {
                start: Duration::from_secs(8),
                length: Duration::from_secs(10),
                rate: 2500.0,
            }],
        }
    );
    assert_eq!(
        (config.connections, config.timeout, config.weights.clone()),
        (16, Duration::from_millis(1500), vec![3, 1])
    );
    let r = transport.requests();
    assert_eq!(r[0].url, "http://127.0.0.1:8080/api/orders");
    assert_eq!(r[0].method, faultline_http::Method::Post);
    assert_eq!(&r[0].body[..], br#"{"sku":"A-1","qty":1}"#);
    assert_eq!(
        r[0].headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    assert_eq!(r[1].url, "http://127.0.0.1:8080/api/orders/1");
    assert!(r[1].body.is_empty());
}

#[test]
fn growth_opens_one_connection_per_request_no_idle_worker_takes_up_to_the_maximum() {
    // Nothing waiting, or enough idle workers: nothing to open.
    assert_eq!(generator::growth(0, 0, 4, 64), 0);
    assert_eq!(generator::growth(3, 5, 4, 64), 0);
    // Three more released than idle workers can take.
    assert_eq!(generator::growth(5, 2, 4, 64), 3);
    // Never past the maximum, and nothing once it is reached.
    assert_eq!(generator::growth(100, 0, 60, 64), 4);
    assert_eq!(generator::growth(100, 0, 64, 64), 0);
}

#[tokio::test(start_paused = true)]
async fn busy_connections_grow_the_pool_so_requests_leave_on_schedule() {
    // 100 req/s at 400 ms each needs about 40 requests in flight; 4 are opened up front.
    let server = FakeServer::new(Duration::from_millis(400), None);
    let config = LoadConfig {
        max_connections: 64,
        ..open(100.0, 2, 4, 2000)
    };
    let report = start_unobserved(config, server.clone())
        .unwrap()
        .wait()
        .await
        .unwrap();
    let sends = server.sends();
    assert_eq!(sends.len(), 200);
    for (k, (at, _)) in sends.iter().enumerate() {
        let due = Duration::from_millis(10 * k as u64);
        assert!(
            *at <= due + Duration::from_millis(1),
            "request {k} due at {due:?} was sent at {at:?}"
        );
    }
    assert!(
        (40..=44).contains(&report.peak_connections),
        "{} connections open at the peak",
        report.peak_connections
    );
    assert_eq!((report.connections, report.max_connections), (4, 64));
    assert_eq!(
        (report.delayed, report.waited_long, report.expired),
        (0, 0, 0)
    );
    assert!(report.generator_delay_ms.max <= 1.0, "{report:?}");
    assert_eq!(report.counts.ok, 200);
}

#[tokio::test(start_paused = true)]
async fn at_max_connections_requests_wait_and_the_wait_is_recorded_per_second() {
    // 8 connections at 400 ms serve 20 req/s of the 100 asked for: the rest wait inside
    // the generator until they expire at their 1 s timeout.
    let server = FakeServer::new(Duration::from_millis(400), None);
    let m = measurements();
    let config = LoadConfig {
        max_connections: 8,
        ..open(100.0, 2, 4, 1000)
    };
    let report = start(
        config,
        server.clone(),
        Arc::clone(&m),
        CancellationToken::new(),
    )
    .unwrap()
    .wait()
    .await
    .unwrap();
    assert_eq!(report.peak_connections, 8);
    assert_eq!(report.counts.requests, 200);
    // Requests queue first in, first out, so each is sent with what is left of its
    // deadline and times out: the wait, not the server, decided their fate.
    assert_eq!(report.started + report.expired, 200);
    assert!(report.waited_long >= 150, "{report:?}");
    assert!(report.delayed >= report.waited_long);
    assert!(report.generator_delay_ms.p50 >= 500.0, "{report:?}");
    assert!(report.counts.ok <= 40, "{report:?}");
    // The SLO engine sees the same figures per second.
    let summary = m.read().unwrap().summary();
    assert_eq!(summary.expired_requests, report.expired);
    assert_eq!(summary.waited_long_requests, report.waited_long);
    assert!(summary.generator_delay_ms["p50"] >= 500.0, "{summary:?}");
    let per_second: u64 = report.seconds.iter().map(|s| s.waited_long).sum();
    assert_eq!(per_second, report.waited_long);
    assert!(
        report
            .seconds
            .iter()
            .any(|s| s.generator_delay_ms.max >= 500.0)
    );
}

#[tokio::test(start_paused = true)]
async fn closed_loop_ignores_max_connections_and_records_no_generator_delay() {
    let server = FakeServer::new(Duration::from_millis(10), None);
    let config = LoadConfig {
        mode: Mode::Closed,
        max_connections: 0,
        ..open(1.0, 1, 2, 1000)
    };
    let report = start_unobserved(config, server.clone())
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(report.peak_connections, 2);
    assert_eq!(report.generator_delay_ms, Quantiles::default());
}

#[tokio::test(start_paused = true)]
async fn requests_queued_inside_the_generator_make_client_slos_inconclusive_not_no_data() {
    use crate::slo::SloStatus;
    // One connection held 1 s per request: almost everything queues in the generator
    // and nothing of the last seconds has finished, so there is nothing to judge, and
    // the reason is the generator, not a silent system.
    let server = Deaf(Arc::new(Mutex::new(0)));
    let m = measurements();
    let wall0 = std::time::SystemTime::now();
    let run = start(
        open(100.0, 5, 1, 5000),
        server,
        Arc::clone(&m),
        CancellationToken::new(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kind = faultline_spec::SloKind::Latency {
        service: "target".into(),
        quantile: 0.99,
        max: faultline_spec::Duration(Duration::from_secs(10)),
    };
    let at = wall0 + Duration::from_millis(2500);
    let e = m
        .read()
        .unwrap()
        .evaluate(&kind, Duration::from_secs(2), at)
        .unwrap();
    assert_eq!(e.status, SloStatus::Inconclusive, "{e:?}");
    let g = e.evidence.generator.unwrap();
    assert!(g.waiting >= 95, "{g:?}");
    // The oldest of them had waited at least the half second before the window.
    assert!(g.delay_ms >= 500.0, "{g:?}");
    run.stop();
    run.wait().await.unwrap();
    // Once the run is over, nothing waits any more.
    let e = m
        .read()
        .unwrap()
        .evaluate(&kind, Duration::from_secs(2), at)
        .unwrap();
    assert_eq!(e.status, SloStatus::NoData, "{e:?}");
}
