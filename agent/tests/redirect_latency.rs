//! Latency for a node target through the nft-redirect proxy, in network namespaces the
//! test creates; the delay is measured at the client. Runs as root (scripts/ci).

mod netns_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::{Direction, FaultKind, NetworkFault};
use netns_common::NetPair;

/// Mean round trip of `n` small echoes on one connection from the client namespace.
fn mean_rtt(pair: &NetPair, addr: SocketAddr, n: usize) -> Duration {
    mean_rtt_from(&pair.client, addr, n)
}

/// Mean round trip of `n` small echoes on one connection from namespace `ns`.
fn mean_rtt_from(ns: &str, addr: SocketAddr, n: usize) -> Duration {
    NetPair::in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut total = Duration::ZERO;
        let mut got = [0u8; 4];
        for _ in 0..n {
            let start = Instant::now();
            s.write_all(b"ping").unwrap();
            s.read_exact(&mut got).unwrap();
            total += start.elapsed();
        }
        total / n as u32
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_proxy_adds_the_asked_delay_measured_at_the_client() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("redirect latency", 31) else {
        return;
    };
    let (l, addr) = pair.target_listener();
    netns_common::echo_on(l);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    let base = tokio::task::block_in_place(|| mean_rtt(&pair, addr, 50));

    let delay = Duration::from_millis(50);
    let fault = FaultKind::Network(NetworkFault {
        ports: vec![addr.port()],
        ..netns_common::network(netns_common::latency_ms(50), Direction::Ingress)
    });
    let out = agent
        .apply(netns_common::request_on_pid(
            "lat", "redirect", pid, fault, 60,
        ))
        .await
        .unwrap();
    assert_eq!(out.state.backend, "redirect");
    let faulty = tokio::task::block_in_place(|| mean_rtt(&pair, addr, 100));
    let added = faulty.saturating_sub(base);
    let effect = agent.get("lat").unwrap().effect;
    eprintln!(
        "redirect latency 50ms: client mean RTT {base:?} -> {faulty:?}, added {added:?}; agent: {}",
        effect.summary
    );
    let err = added.as_secs_f64() * 1e3 - delay.as_secs_f64() * 1e3;
    assert!(err.abs() <= 2.0, "added {added:?}, asked {delay:?}");

    agent.revert("lat").await.unwrap();
    assert!(!pair.tables().contains("faultline_"), "{}", pair.tables());
    let after = tokio::task::block_in_place(|| mean_rtt(&pair, addr, 50));
    assert!(
        after < base + Duration::from_millis(5),
        "{base:?} -> {after:?} after revert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_latency_delays_the_targets_own_calls_and_the_proxy_is_not_redirected_again() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("redirect egress latency", 32) else {
        return;
    };
    // The target calls a server in the client namespace.
    let (l, addr) = pair.client_listener();
    netns_common::echo_on(l);
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let target_ns = pair.target.clone();
    let base = tokio::task::block_in_place(|| mean_rtt_from(&target_ns, addr, 50));
    let fault = FaultKind::Network(NetworkFault {
        peers: vec![faultline_spec::Peer::parse(&format!("{}/32", pair.client_ip)).unwrap()],
        ..netns_common::network(netns_common::latency_ms(30), Direction::Egress)
    });
    let out = agent
        .apply(netns_common::request_on_pid(
            "egress", "redirect", pid, fault, 60,
        ))
        .await
        .unwrap();
    assert_eq!(out.state.backend, "redirect");
    let faulty = tokio::task::block_in_place(|| mean_rtt_from(&target_ns, addr, 50));
    let added = faulty.saturating_sub(base).as_secs_f64() * 1e3;
    eprintln!(
        "redirect egress latency 30ms: target-side mean RTT {base:?} -> {faulty:?} (+{added:.2} ms)"
    );
    // The proxy's own upstream connection carries SO_MARK and is not redirected again:
    // otherwise the calls would loop and never be answered, or be delayed twice.
    assert!((added - 30.0).abs() <= 2.0, "added {added} ms");
    agent.revert("egress").await.unwrap();
    assert!(!pair.tables().contains("faultline_"));
}
