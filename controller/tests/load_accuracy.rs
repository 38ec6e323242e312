//! Load generator accuracy against a real `faultline-http` hello server on loopback.
//!
//! Real time on purpose (the issue asks for the achieved rate on a real socket), bounded to
//! 3 s per rate. The rate is only judged "when the machine can sustain it": if the 1%
//! bound is missed while the 1-minute load average exceeds the CPU count (other jobs
//! compete for the CPUs) or the generator's thread was busy more than 85% of the time (it
//! runs on this test's current-thread runtime; an unoptimised debug build saturates it at
//! 10k/s), the test prints why and does not fail. Everything else (every scheduled request measured, no errors) is always
//! checked.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use faultline_controller::load::{HttpRequest, HttpTransport, LoadConfig, Mode, start};
use faultline_controller::slo::client::ClientMeasurements;
use faultline_http::{Request, Response, Router, ServerConfig, serve_per_core};
use tokio_util::sync::CancellationToken;

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time used so far by the calling thread, from the scheduler's own accounting
/// (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[tokio::test]
async fn achieved_rate_is_within_one_percent_of_the_target_at_1k_and_10k_per_second()
-> anyhow::Result<()> {
    let server = serve_per_core("127.0.0.1:0".parse()?, 1, ServerConfig::default(), || {
        Router::new().get("/hello", |_: &Request<'_>| Response::text("Hello, World!"))
    })?;
    let base = format!("http://{}", server.local_addr());
    let mut failures = Vec::new();
    for (rate, connections) in [(1_000.0, 16), (10_000.0, 64)] {
        let request = HttpRequest::new("GET", &base, "/hello", vec![], None)?;
        let m = Arc::new(RwLock::new(ClientMeasurements::new("hello")));
        let config = LoadConfig {
            mode: Mode::Open {
                rate,
                spells: Vec::new(),
            },
            duration: Duration::from_secs(3),
            connections,
            max_connections: connections,
            timeout: Duration::from_secs(2),
            weights: vec![1],
        };
        let (cpu0, wall0) = (thread_cpu(), std::time::Instant::now());
        let run = start(
            config,
            HttpTransport::new(vec![request], connections),
            Arc::clone(&m),
            CancellationToken::new(),
        )?;
        let report = run.wait().await?;
        // The runtime is current-thread, so this thread ran the whole generator.
        let busy = (thread_cpu() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
        let expected = (3.0 * rate) as u64;
        // These hold however busy the machine is: every scheduled request is measured.
        assert_eq!(report.counts.requests, expected, "{report:#?}");
        assert_eq!(report.errors, 0, "{report:#?}");
        assert_eq!(m.read().unwrap().summary().requests, expected);
        let ratio = report.achieved_rate / rate;
        let load = load_average().unwrap_or(0.0);
        eprintln!(
            "{rate}/s: achieved {:.1}/s ({:.3}% of target), latency p99 {:.2} ms, send lag p99 {:.2} ms, load average {load:.2} on {} CPUs, generator thread busy {:.0}%",
            report.achieved_rate,
            100.0 * ratio,
            report.latency_ms.p99,
            report.send_lag_ms.p99,
            cpus(),
            100.0 * busy
        );
        if (ratio - 1.0).abs() > 0.01 {
            if load > cpus() as f64 || busy > 0.85 {
                eprintln!(
                    "not judging {rate}/s: the machine cannot sustain it (load average {load:.2} on {} CPUs, generator thread busy {:.0}%)",
                    cpus(),
                    100.0 * busy
                );
            } else {
                failures.push(format!(
                    "{rate}/s achieved {:.1}/s ({:.3}%)",
                    report.achieved_rate,
                    100.0 * ratio
                ));
            }
        }
    }
    server.shutdown_token().cancel();
    tokio::task::spawn_blocking(move || server.join()).await??;
    assert!(failures.is_empty(), "off by more than 1%: {failures:?}");
    Ok(())
}
