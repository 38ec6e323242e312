//! nftables loss, partition and reset in a network namespace the test creates, applied
//! through the agent to a target named by PID. Runs as root (scripts/ci).

mod netns_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use faultline_spec::wire::FaultRequest;
use faultline_spec::{Direction, Empty, FaultKind, Loss, NetworkAction, Percent};
use netns_common::NetPair;

fn request(id: &str, pid: u32, action: NetworkAction, ttl_s: u64) -> FaultRequest {
    let fault = FaultKind::Network(netns_common::network(action, Direction::Ingress));
    netns_common::request_on_pid(id, "nft", pid, fault, ttl_s)
}

/// Accepts and answers every connection with `size` bytes, in its own thread.
fn serve(listener: std::net::TcpListener, size: usize) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let buf = vec![7u8; 64 * 1024];
                let mut left = size;
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

/// Connects from the client namespace; the result of the attempt and how long it took.
fn connect(
    pair: &NetPair,
    addr: SocketAddr,
    timeout: Duration,
) -> (std::io::Result<TcpStream>, Duration) {
    NetPair::in_ns(&pair.client, move || {
        let start = Instant::now();
        let r = TcpStream::connect_timeout(&addr, timeout);
        (r, start.elapsed())
    })
}

fn download(ns: &str, addr: SocketAddr) -> (usize, Duration) {
    NetPair::in_ns(ns, move || {
        let start = Instant::now();
        // Under 30% loss the SYN-ACK is lost 30% of the time and TCP retries the SYN after
        // 1, 3, 7 and 15 s: a 2 s timeout failed one connection in eleven.
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).unwrap();
        // Each lost retransmission doubles the sender's RTO (from 200 ms): eight in a row
        // stall the stream for 51 s, and CI once read nothing for 30 s. TCP itself gives
        // up only after minutes, so wait up to TCP_RTO_MAX (120 s) for the next segment
        // before calling the download failed.
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("download failed after {total} bytes: {e}"),
            }
        }
        (total, start.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_makes_connections_time_out_and_revert_restores_them() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("partition", 11) else {
        return;
    };
    let (l, addr) = pair.target_listener();
    serve(l, 10);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    assert!(
        connect(&pair, addr, Duration::from_secs(1)).0.is_ok(),
        "baseline"
    );

    let out = agent
        .apply(request("part", pid, NetworkAction::Partition(Empty {}), 30))
        .await
        .unwrap();
    assert_eq!(out.state.backend, "nftables");
    let (r, took) = connect(&pair, addr, Duration::from_millis(800));
    let e = r.expect_err("a partitioned target must not accept connections");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(took >= Duration::from_millis(790), "{took:?}");
    let effect = agent.get("part").unwrap().effect;
    assert!(
        effect.metrics["matched_packets"] >= 1.0,
        "{}",
        effect.summary
    );

    agent.revert("part").await.unwrap();
    assert!(!pair.tables().contains("faultline_"), "{}", pair.tables());
    assert!(
        connect(&pair, addr, Duration::from_secs(1)).0.is_ok(),
        "after revert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_refuses_connections_at_once_with_an_rst() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("reset", 12) else {
        return;
    };
    let (l, addr) = pair.target_listener();
    serve(l, 10);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    agent
        .apply(request("rst", pid, NetworkAction::Reset(Empty {}), 30))
        .await
        .unwrap();
    let (r, took) = connect(&pair, addr, Duration::from_secs(2));
    let e = r.expect_err("a reset target must refuse connections");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(took < Duration::from_millis(200), "RST took {took:?}");
    agent.revert("rst").await.unwrap();
    assert!(!pair.tables().contains("faultline_"));
    assert!(
        connect(&pair, addr, Duration::from_secs(1)).0.is_ok(),
        "after revert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_loss_drops_that_share_and_forces_retransmissions() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("loss", 13) else {
        return;
    };
    // The target downloads from a server in the client namespace: ingress loss at the
    // target drops the data segments, so the sender has to retransmit.
    let (l, addr) = pair.client_listener();
    const SIZE: usize = 512 << 10;
    serve(l, SIZE);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    let target_ns = pair.target.clone();

    let retrans = || NetPair::snmp(&pair.client, "Tcp", "RetransSegs");
    let r0 = retrans();
    let (n, clean) = tokio::task::block_in_place(|| download(&target_ns, addr));
    assert_eq!(n, SIZE);
    let clean_retrans = retrans() - r0;

    let rx = |p: &NetPair| -> u64 {
        netns_common::sh(&[
            "ip",
            "netns",
            "exec",
            &p.target,
            "cat",
            &format!("/sys/class/net/{}/statistics/rx_packets", p.target_dev),
        ])
        .trim()
        .parse()
        .unwrap()
    };
    agent
        .apply(request(
            "loss",
            pid,
            NetworkAction::Loss(Loss {
                percent: Percent::from_fraction(0.3).unwrap(),
                correlation: None,
            }),
            60,
        ))
        .await
        .unwrap();
    let (rx0, r1) = (rx(&pair), retrans());
    let (n, lossy) = tokio::task::block_in_place(|| download(&target_ns, addr));
    assert_eq!(n, SIZE, "TCP still delivers everything");
    let (arrived, lossy_retrans) = (rx(&pair) - rx0, retrans() - r1);
    let dropped = agent.get("loss").unwrap().effect.metrics["matched_packets"];
    let share = dropped / arrived as f64;
    eprintln!(
        "loss 30%: {arrived} packets arrived at the target, {dropped} dropped ({:.1}%); sender retransmitted segments {clean_retrans} -> {lossy_retrans}; 512 KiB download {clean:?} -> {lossy:?}",
        share * 100.0
    );
    assert!(arrived > 300, "{arrived} packets is too few to judge");
    // ±3 standard deviations of a binomial share at ~500 packets.
    assert!((0.24..=0.36).contains(&share), "dropped share {share}");
    assert!(
        lossy_retrans as f64 >= 0.8 * dropped,
        "{clean_retrans} -> {lossy_retrans}, {dropped} dropped"
    );
    assert!(lossy > clean * 2, "download {clean:?} -> {lossy:?}");

    agent.revert("loss").await.unwrap();
    assert!(!pair.tables().contains("faultline_"));
    // The lossy connection may still be closing, its last segments on a backed-off
    // retransmission timer: those would be counted against the clean download below (a
    // CI run counted more than 5). Wait until no connection but the listener is left.
    let busy = |ns: &str| {
        netns_common::sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "ss",
            "-Htn",
            "state",
            "established",
            "state",
            "fin-wait-1",
            "state",
            "fin-wait-2",
            "state",
            "close-wait",
            "state",
            "last-ack",
            "state",
            "closing",
            "state",
            "syn-sent",
            "state",
            "syn-recv",
        ])
    };
    let settle = Instant::now();
    while !(busy(&pair.client).trim().is_empty() && busy(&pair.target).trim().is_empty()) {
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "the lossy connection did not close: {} / {}",
            busy(&pair.client),
            busy(&pair.target)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r2 = retrans();
    let (_, after) = tokio::task::block_in_place(|| download(&target_ns, addr));
    let after_retrans = retrans() - r2;
    assert!(
        after_retrans <= clean_retrans + 5,
        "traffic is normal again: {after_retrans} retransmissions after revert, {clean_retrans} before the fault"
    );
    eprintln!("download after revert {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewal_refreshes_the_kernel_timeout() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("renewal", 14) else {
        return;
    };
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    agent
        .apply(request("renew", pid, NetworkAction::Partition(Empty {}), 3))
        .await
        .unwrap();
    let expires = |p: &NetPair| -> f64 {
        let t = netns_common::sh(&["ip", "netns", "exec", &p.target, "nft", "list", "ruleset"]);
        let e = t
            .split("expires ")
            .nth(1)
            .expect("an element with a timeout");
        let e = e.split([',', ' ', '}']).next().unwrap();
        // `2s990ms` or `990ms`.
        let (s, ms) = e
            .split_once('s')
            .filter(|(_, r)| r.ends_with("ms"))
            .map_or(("0", e), |(s, r)| (s, r));
        s.parse::<f64>().unwrap_or(0.0)
            + ms.trim_end_matches("ms").parse::<f64>().unwrap_or(0.0) / 1000.0
    };
    let before = expires(&pair);
    assert!(before <= 3.0, "{before}");
    agent
        .renew("renew", faultline_spec::Duration::from_secs(20))
        .unwrap();
    let after = expires(&pair);
    assert!(after > 15.0, "renewed element expires in {after} s");
    agent.revert("renew").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_and_peers_narrow_a_partition_to_the_matching_traffic() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("narrowing", 15) else {
        return;
    };
    let (l1, hit) = pair.target_listener();
    let (l2, spared) = pair.target_listener();
    serve(l1, 10);
    serve(l2, 10);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    let mut req = request("narrow", pid, NetworkAction::Partition(Empty {}), 30);
    let FaultKind::Network(n) = &mut req.fault else {
        unreachable!()
    };
    n.ports = vec![hit.port()];
    n.peers = vec![faultline_spec::Peer::parse(&format!("{}/32", pair.client_ip)).unwrap()];
    agent.apply(req).await.unwrap();
    assert!(
        connect(&pair, hit, Duration::from_millis(500)).0.is_err(),
        "the named port from the named peer is partitioned"
    );
    assert!(
        connect(&pair, spared, Duration::from_secs(1)).0.is_ok(),
        "another port is not"
    );
    agent.revert("narrow").await.unwrap();

    // A peer that is not the client leaves the client's traffic alone.
    let mut req = request("other-peer", pid, NetworkAction::Partition(Empty {}), 30);
    let FaultKind::Network(n) = &mut req.fault else {
        unreachable!()
    };
    n.peers = vec![faultline_spec::Peer::parse("192.0.2.0/24").unwrap()];
    agent.apply(req).await.unwrap();
    assert!(connect(&pair, hit, Duration::from_secs(1)).0.is_ok());
    agent.revert("other-peer").await.unwrap();
    assert!(!pair.tables().contains("faultline_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_reset_refuses_the_targets_own_calls() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("egress reset", 16) else {
        return;
    };
    let (l, addr) = pair.client_listener();
    serve(l, 10);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    let mut req = request("egress-rst", pid, NetworkAction::Reset(Empty {}), 30);
    let FaultKind::Network(n) = &mut req.fault else {
        unreachable!()
    };
    n.direction = Direction::Egress;
    agent.apply(req).await.unwrap();
    let target_ns = pair.target.clone();
    let call = move || {
        NetPair::in_ns(&target_ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop)
        })
    };
    let e = call().expect_err("the target's outgoing connection must be reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    agent.revert("egress-rst").await.unwrap();
    assert!(call().is_ok(), "after revert");
}
