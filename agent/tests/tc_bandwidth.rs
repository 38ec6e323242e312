//! Bandwidth caps with htb (egress) and ifb + htb (ingress) in a network namespace the
//! test creates; the rate is measured by the receiving side. Runs as root (scripts/ci).

mod netns_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::wire::FaultRequest;
use faultline_spec::{Bandwidth, BandwidthLimit, Direction, FaultKind, NetworkAction};
use netns_common::NetPair;

const SIZE: usize = 3 << 20;
/// Bytes received before the rate is timed: leaves out slow start and htb's burst.
const WARMUP: usize = 256 << 10;

fn serve(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let buf = vec![1u8; 64 << 10];
                let mut left = SIZE;
                while left > 0 {
                    let n = left.min(buf.len());
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
}

/// Downloads from `addr` inside namespace `ns`; the steady rate in bits per second.
fn rate(ns: &str, addr: SocketAddr) -> f64 {
    NetPair::in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let (mut total, mut start) = (0usize, None);
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            if start.is_none() && total >= WARMUP {
                start = Some((Instant::now(), total));
            }
        }
        assert_eq!(total, SIZE);
        let (t0, b0) = start.unwrap();
        (total - b0) as f64 * 8.0 / t0.elapsed().as_secs_f64()
    })
}

fn request(id: &str, pid: u32, direction: Direction, bps: u64) -> FaultRequest {
    let action = NetworkAction::Bandwidth(BandwidthLimit {
        rate: Bandwidth(bps),
    });
    let fault = FaultKind::Network(netns_common::network(action, direction));
    netns_common::request_on_pid(id, "tc", pid, fault, 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_caps_egress_and_ingress_within_ten_percent_and_revert_leaves_nothing() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("tc bandwidth", 41) else {
        return;
    };
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    let qdiscs_before = pair.qdiscs();
    let links_before = pair.links();
    const BPS: u64 = 16_000_000;
    // Egress: the target serves, the client downloads.
    let (l, target_addr) = pair.target_listener();
    serve(l);
    // Ingress: the client serves, the target downloads.
    let (l, client_addr) = pair.client_listener();
    serve(l);
    let (client_ns, target_ns) = (pair.client.clone(), pair.target.clone());

    for (id, direction, ns, addr) in [
        ("bw-egress", Direction::Egress, &client_ns, target_addr),
        ("bw-ingress", Direction::Ingress, &target_ns, client_addr),
    ] {
        let free = tokio::task::block_in_place(|| rate(ns, addr));
        let out = agent.apply(request(id, pid, direction, BPS)).await.unwrap();
        assert_eq!(out.state.backend, "tc");
        let capped = tokio::task::block_in_place(|| rate(ns, addr));
        let effect = agent.get(id).unwrap().effect;
        eprintln!(
            "{id} {BPS} bit/s: measured {:.2} Mbit/s ({:+.1}%), uncapped {:.0} Mbit/s; {}",
            capped / 1e6,
            (capped / BPS as f64 - 1.0) * 100.0,
            free / 1e6,
            effect.summary
        );
        assert!(
            (capped / BPS as f64 - 1.0).abs() <= 0.10,
            "{id}: {capped} bit/s for {BPS}"
        );
        agent.revert(id).await.unwrap();
        assert_eq!(pair.qdiscs(), qdiscs_before, "{id}: a qdisc was left");
        assert_eq!(pair.links(), links_before, "{id}: a device was left");
        let after = tokio::task::block_in_place(|| rate(ns, addr));
        assert!(after > 3.0 * BPS as f64, "{id}: {after} bit/s after revert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_qdisc_the_agent_did_not_create_is_refused_and_left_alone() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("tc foreign qdisc", 42) else {
        return;
    };
    netns_common::sh(&[
        "tc",
        "-n",
        &pair.target,
        "qdisc",
        "add",
        "dev",
        &pair.target_dev,
        "root",
        "tbf",
        "rate",
        "1gbit",
        "burst",
        "64kb",
        "latency",
        "50ms",
    ]);
    let before = pair.qdiscs();
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let err = agent
        .apply(request("bw-foreign", pid, Direction::Egress, 8_000_000))
        .await
        .expect_err("an existing root qdisc must not be replaced");
    assert!(err.to_string().contains("tc qdisc add"), "{err}");
    assert_eq!(pair.qdiscs(), before, "the operator's qdisc is untouched");
}
