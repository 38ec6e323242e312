//! Issue 6 acceptance: through the proxy, 1,000 requests with `delay 100ms, jitter 20ms`
//! one way. The mean added delay is within ±2 ms of 100 ms, every sample lies within
//! [78, 122] ms (a sample above 122 ms counts against the proxy unless a host stall,
//! measured by threads pinned to each CPU, explains it; at most 2% may be), and each tenth of the jitter range holds 10% ± 4% of the samples
//! (also each 10 ms bucket holds 25% ± 4%).
//!
//! Real time is inherent: the proxy's accuracy against the wall clock is what is tested.
//! Requests run on 50 concurrent connections, so the test takes about two seconds.

mod common;

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::wire::FaultRequest;
use std::time::Duration;

use tokio::net::TcpStream;

const CONNECTIONS: usize = 50;
const PER_CONNECTION: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_latency_100ms_jitter_20ms_is_accurate_over_1000_requests() {
    if common::host_too_busy("proxy latency accuracy") {
        return;
    }
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let upstream = common::echo().await;
    let proxy = agent.create_proxy("edge", upstream).await.unwrap();

    // Baseline: the same round trip through the idle proxy, so only the added delay remains.
    let mut conn = TcpStream::connect(proxy).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let mut base = Vec::new();
    for _ in 0..200 {
        base.push(common::round_trip(&mut conn).await);
    }
    base.sort();
    let baseline = base[base.len() / 2];

    let request: FaultRequest = serde_json::from_value(serde_json::json!({
        "id": "accuracy",
        "experiment": "accuracy",
        "target": {"name": "echo", "proxies": ["edge"]},
        "fault": {"network": {"latency": {"delay": "100ms", "jitter": "20ms"}, "direction": "ingress"}},
        "ttl": "60s"
    }))
    .unwrap();
    agent.apply(request).await.unwrap();

    // This VM's CPUs themselves pause for 2-4 ms now and then (a 1 ms sleep loop on an
    // idle host sees it); such a pause is measured, not guessed.
    let monitor = common::StallMonitor::start(Duration::from_micros(500));
    // The client runs on its own runtime thread, so its reads are not queued behind the
    // agent's and the echo server's tasks: the figure is the proxy's, not the scheduler's.
    let per_connection = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..CONNECTIONS {
                tasks.push(tokio::spawn(async move {
                    let mut s = TcpStream::connect(proxy).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut v = Vec::with_capacity(PER_CONNECTION);
                    for _ in 0..PER_CONNECTION {
                        v.push(common::timed_round_trip(&mut s).await);
                    }
                    v
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.unwrap());
            }
            all
        })
    });
    let per_connection = tokio::task::spawn_blocking(move || per_connection.join().unwrap())
        .await
        .unwrap();
    let stalls = monitor.stop();
    let mut samples_ms = Vec::new();
    let mut completed = Vec::new();
    for rtts in per_connection {
        for (end, rtt) in rtts {
            samples_ms.push(rtt.saturating_sub(baseline).as_secs_f64() * 1000.0);
            completed.push(end);
        }
    }
    let state = agent.revert("accuracy").await.unwrap().unwrap();
    assert_eq!(samples_ms.len(), 1000);

    let n = samples_ms.len() as f64;
    let mean = samples_ms.iter().sum::<f64>() / n;
    let min = samples_ms.iter().cloned().fold(f64::MAX, f64::min);
    let max = samples_ms.iter().cloned().fold(0.0, f64::max);
    let tenths: Vec<f64> = (0..10)
        .map(|i| {
            let lo = 80.0 + 4.0 * i as f64;
            let count = samples_ms
                .iter()
                .filter(|s| (**s >= lo || i == 0) && (**s < lo + 4.0 || i == 9))
                .count();
            count as f64 / n
        })
        .collect();
    let tens: Vec<f64> = (0..4)
        .map(|i| {
            let lo = 80.0 + 10.0 * i as f64;
            let count = samples_ms
                .iter()
                .filter(|s| (**s >= lo || i == 0) && (**s < lo + 10.0 || i == 3))
                .count();
            count as f64 / n
        })
        .collect();
    eprintln!(
        "baseline {baseline:?}; added delay mean {mean:.3} ms, min {min:.3}, max {max:.3}; \
         4 ms buckets {tenths:.3?}; 10 ms buckets {tens:.3?}; proxy says: {}",
        state.effect.summary
    );
    assert!((mean - 100.0).abs() <= 2.0, "mean {mean:.3} ms");
    // A sample above 122 ms is the proxy's error unless the stall monitor saw the host
    // pause, just before the sample completed, for at least the overshoot; at most 2% of
    // the samples may be explained that way.
    let mut excused = Vec::new();
    for (sample, end) in samples_ms.iter().zip(&completed) {
        if *sample <= 122.0 {
            continue;
        }
        let overshoot = Duration::from_secs_f64((sample - 122.0) / 1000.0);
        let window = end.checked_sub(Duration::from_millis(5)).unwrap_or(*end);
        let stall = stalls
            .iter()
            .find(|(from, to)| *to >= window && *from <= *end && *to - *from >= overshoot);
        match stall {
            Some((from, to)) => excused.push(format!(
                "{sample:.3} ms (host stalled {:.3} ms)",
                (*to - *from).as_secs_f64() * 1000.0
            )),
            None => panic!(
                "sample {sample:.3} ms is above 122 ms with no host stall to explain it \
                 (samples in [{min:.3}, {max:.3}] ms; {} stalls seen)",
                stalls.len()
            ),
        }
    }
    eprintln!(
        "host stalls seen: {}; samples above 122 ms explained by them: {excused:?}",
        stalls.len()
    );
    assert!(min >= 78.0, "samples in [{min:.3}, {max:.3}] ms");
    assert!(
        excused.len() <= samples_ms.len() / 50,
        "too many samples delayed by host stalls to judge the proxy: {excused:?}"
    );
    for (i, share) in tenths.iter().enumerate() {
        assert!(
            (0.06..=0.14).contains(share),
            "4 ms bucket {i} holds {:.1}%",
            share * 100.0
        );
    }
    for (i, share) in tens.iter().enumerate() {
        assert!(
            (0.21..=0.29).contains(share),
            "10 ms bucket {i} holds {:.1}%",
            share * 100.0
        );
    }
    // The proxy's own measurement agrees with the client's.
    let proxy_mean = state.effect.metrics["mean_added_delay_ms"];
    assert!(
        (proxy_mean - 100.0).abs() <= 2.0,
        "proxy measured {proxy_mean:.3} ms"
    );
    assert_eq!(state.effect.metrics["delayed_chunks"], 1000.0);
}
