//! Issue 6 acceptance: through the proxy, 1,000 requests with `delay 100ms, jitter 20ms`
//! one way. The mean added delay is within ±2 ms of 100 ms; by the proxy's own clock at
//! least 98% of the chunks were held at most 120 ms and none over 150 ms; at the client
//! every sample is at least 78 ms and at least 95% are at most 122 ms once the client's
//! own mean overhead is taken off; each tenth of the jitter range holds 10% ± 4% of the
//! samples (also each 10 ms bucket holds 25% ± 6%).
//!
//! Both upper bounds are quantiles, not maxima. A client sample is the proxy's hold plus
//! two loopback hops, the echo server and the client's own wake-up, and on a busy 2-core
//! VM any of those can be descheduled for 10-20 ms (a CI run saw a 136 ms sample while
//! the proxy's own maximum hold was 120.3 ms). The proxy's hold runs from a chunk's
//! arrival to its write, so it holds the pump's own wake-up too: another CI run failed a
//! 122 ms bound on its maximum at 122.3 ms, every other check passing. On a quiet host
//! 1-7 holds in 1,000 end past 120 ms (maximum 121.2 ms, 9 runs); with both cores busy,
//! 17-27 (maximum 128 ms). The quantiles catch a proxy that is late in general (2 ms
//! late would put ~5% of holds past 120 ms, and move the mean); the 150 ms bound catches
//! a lost wake-up.
//!
//! The client's tail is looser than the proxy's (5%, not 2%) because it holds the client's
//! and the echo server's wake-ups as well as the proxy's: a CI run counted 27 client
//! samples past 122 ms net of a 1.2 ms overhead while the proxy's own clock held only 3
//! chunks past 120 ms, every other check passing. A proxy late in general is still caught
//! by the mean (±2 ms) and by its own 120 ms quantile; 4 ms late would also put ~50
//! client samples past 122 ms (the jitter holds 25 samples per ms).
//!
//! The buckets and the client's tail test the jitter's shape, so they are counted after
//! taking off the mean overhead the client adds beyond its idle baseline: client mean
//! minus the proxy's own mean over the same 1,000 chunks (about 1 ms under load). Without
//! it every sample moves up by that much: the top bucket, which also keeps samples above
//! 120 ms, gains a steady 2-3 points (a CI run failed with 29.7% in the top 10 ms bucket),
//! and the jitter's dense upper edge (25 samples per ms) crosses 122 ms (a CI run counted
//! 25 raw samples above it with a 1.3 ms overhead, while the proxy held only 6 chunks
//! past 120 ms). The bands are
//! at least 4.2 binomial standard deviations for 1,000 samples (σ 0.95 points at 10%,
//! 1.37 at 25%), so a correct proxy fails one of the 14 about once in 2,500 runs.
//!
//! Real time is inherent: the proxy's accuracy against the wall clock is what is tested.
//! Requests run on 50 concurrent connections, so the test takes about two seconds.

mod common;

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::wire::FaultRequest;

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
                        v.push(common::round_trip(&mut s).await);
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
    let mut samples_ms = Vec::new();
    for rtts in per_connection {
        for rtt in rtts {
            samples_ms.push(rtt.saturating_sub(baseline).as_secs_f64() * 1000.0);
        }
    }
    let state = agent.revert("accuracy").await.unwrap().unwrap();
    assert_eq!(samples_ms.len(), 1000);

    let n = samples_ms.len() as f64;
    let mean = samples_ms.iter().sum::<f64>() / n;
    let min = samples_ms.iter().cloned().fold(f64::MAX, f64::min);
    let max = samples_ms.iter().cloned().fold(0.0, f64::max);
    let proxy_mean = state.effect.metrics["mean_added_delay_ms"];
    let overhead = (mean - proxy_mean).max(0.0);
    let shape: Vec<f64> = samples_ms.iter().map(|s| s - overhead).collect();
    let tenths: Vec<f64> = (0..10)
        .map(|i| {
            let lo = 80.0 + 4.0 * i as f64;
            let count = shape
                .iter()
                .filter(|s| (**s >= lo || i == 0) && (**s < lo + 4.0 || i == 9))
                .count();
            count as f64 / n
        })
        .collect();
    let tens: Vec<f64> = (0..4)
        .map(|i| {
            let lo = 80.0 + 10.0 * i as f64;
            let count = shape
                .iter()
                .filter(|s| (**s >= lo || i == 0) && (**s < lo + 10.0 || i == 3))
                .count();
            count as f64 / n
        })
        .collect();
    eprintln!(
        "baseline {baseline:?}; added delay mean {mean:.3} ms, min {min:.3}, max {max:.3}; \
         client overhead {overhead:.3} ms; 4 ms buckets {tenths:.3?}; 10 ms buckets {tens:.3?}; \
         proxy says: {}; its holds by bucket (le ms: count) {:?}",
        state.effect.summary,
        state
            .effect
            .delay_histogram
            .iter()
            .filter(|b| (80.0..=150.0).contains(&b.le_ms))
            .map(|b| (b.le_ms, b.count))
            .collect::<Vec<_>>()
    );
    assert!((mean - 100.0).abs() <= 2.0, "mean {mean:.3} ms");
    // The tail is judged like the buckets: after taking off the client's own mean overhead,
    // which the proxy did not add.
    let late = shape.iter().filter(|s| **s > 122.0).count();
    assert!(min >= 78.0, "samples in [{min:.3}, {max:.3}] ms");
    assert!(
        late <= samples_ms.len() / 20,
        "{late} samples above 122 ms after {overhead:.3} ms client overhead \
         (samples in [{min:.3}, {max:.3}] ms)"
    );
    // The proxy's own holds, from its histogram: at least 98% within the 120 ms bucket,
    // every one within the 150 ms bucket.
    let held_within = |le: f64| {
        state
            .effect
            .delay_histogram
            .iter()
            .find(|b| b.le_ms == le)
            .map_or(0, |b| b.count)
    };
    let proxy_max = state.effect.metrics["max_added_delay_ms"];
    assert!(
        held_within(120.0) >= 980,
        "the proxy held {} of 1000 chunks over 120 ms (max {proxy_max:.3} ms)",
        1000 - held_within(120.0)
    );
    assert_eq!(
        held_within(150.0),
        1000,
        "the proxy held a chunk over 150 ms (max {proxy_max:.3} ms)"
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
            (0.19..=0.31).contains(share),
            "10 ms bucket {i} holds {:.1}%",
            share * 100.0
        );
    }
    // The proxy's own measurement agrees with the client's.
    assert!(
        (proxy_mean - 100.0).abs() <= 2.0,
        "proxy measured {proxy_mean:.3} ms"
    );
    assert_eq!(state.effect.metrics["delayed_chunks"], 1000.0);
}
