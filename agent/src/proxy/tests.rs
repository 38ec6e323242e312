//! Proxy behaviour on paused time: tokio's clock only moves when every task waits, so
//! added delays are measured exactly and tests take no wall-clock time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use faultline_spec::wire::ResolvedTarget;
use faultline_spec::{
    BandwidthLimit, Direction, Empty, HttpAbort, HttpDelay, HttpFault, Latency, Loss,
    NetworkAction, NetworkBackend, NetworkFault, Percent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::*;
use crate::fault::Fault;

/// An echo server on port 0.
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A minimal HTTP server answering `200 ok` to every request; counts requests seen.
async fn http_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut acc = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => acc.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = acc.windows(4).position(|w| w == b"\r\n\r\n") {
                        acc.drain(..end + 4);
                        seen.fetch_add(1, Ordering::SeqCst);
                        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(r).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn target(ids: &[&str]) -> ResolvedTarget {
    ResolvedTarget {
        name: "svc".into(),
        proxies: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn net(action: NetworkAction, direction: Direction) -> NetworkFault {
    NetworkFault {
        action,
        direction,
        peers: vec![],
        ports: vec![],
        backend: NetworkBackend::Auto,
    }
}

fn latency(ms: u64, jitter: u64) -> NetworkAction {
    NetworkAction::Latency(Latency {
        delay: faultline_spec::Duration::from_millis(ms),
        jitter: faultline_spec::Duration::from_millis(jitter),
        correlation: None,
        distribution: Default::default(),
    })
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
    start.elapsed()
}

fn close_to(d: Duration, ms: u64) -> bool {
    let ms = ms as f64;
    (d.as_secs_f64() * 1000.0 - ms).abs() <= 1.0
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_per_direction_and_reported_as_measured() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let ingress = ProxyFault::network(&net(latency(100, 0), Direction::Ingress), &reg).unwrap();
    let h = ingress.apply(&target(&["p"])).unwrap();
    let rtt = round_trip(&mut s, b"ping").await;
    assert!(close_to(rtt, 100), "ingress only: {rtt:?}");
    let egress = ProxyFault::network(&net(latency(30, 0), Direction::Egress), &reg).unwrap();
    let h2 = egress.apply(&target(&["p"])).unwrap();
    let rtt = round_trip(&mut s, b"ping").await;
    assert!(close_to(rtt, 130), "both directions: {rtt:?}");
    let effect = ingress.revert(h).unwrap();
    assert_eq!(effect.metrics["delayed_chunks"], 2.0);
    assert!(
        (effect.metrics["mean_added_delay_ms"] - 100.0).abs() <= 1.0,
        "{}",
        effect.summary
    );
    let effect = egress.revert(h2).unwrap();
    assert_eq!(effect.metrics["delayed_chunks"], 1.0);
    let rtt = round_trip(&mut s, b"ping").await;
    assert!(rtt < Duration::from_millis(1), "reverted: {rtt:?}");
}

#[tokio::test(start_paused = true)]
async fn faults_come_and_go_on_a_live_proxy_without_dropping_idle_connections() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut busy = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut idle, b"hello").await;
    for round in 0..3 {
        let fault = ProxyFault::network(&net(latency(50, 0), Direction::Both), &reg).unwrap();
        let h = fault.apply(&target(&["p"])).unwrap();
        let rtt = round_trip(&mut busy, b"x").await;
        assert!(close_to(rtt, 100), "round {round}: {rtt:?}");
        drop(h);
        let rtt = round_trip(&mut busy, b"x").await;
        assert!(rtt < Duration::from_millis(1), "round {round}: {rtt:?}");
    }
    // The connection that sat idle through every change still works.
    round_trip(&mut idle, b"still here").await;
}

#[tokio::test(start_paused = true)]
async fn delays_count_from_arrival_so_they_do_not_stack_and_order_is_kept() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let fault = ProxyFault::network(&net(latency(100, 0), Direction::Ingress), &reg).unwrap();
    let _h = fault.apply(&target(&["p"])).unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..20u8 {
            w.write_all(&[i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w
    });
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    while got.len() < 20 {
        let mut buf = [0u8; 32];
        let n = r.read(&mut buf).await.unwrap();
        for b in &buf[..n] {
            got.push(*b);
            arrivals.push(start.elapsed());
        }
    }
    let _w = writer.await.unwrap();
    assert_eq!(got, (0..20).collect::<Vec<u8>>(), "order preserved");
    // Byte i was sent at 10*i ms: it arrives 100 ms later, not 100*(i+1) ms later.
    for (i, at) in arrivals.iter().enumerate() {
        assert!(close_to(*at, 100 + 10 * i as u64), "byte {i} at {at:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn partition_forwards_nothing_until_it_is_lifted() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"before").await;
    let fault = ProxyFault::network(
        &net(NetworkAction::Partition(Empty {}), Direction::Both),
        &reg,
    )
    .unwrap();
    let h = fault.apply(&target(&["p"])).unwrap();
    s.write_all(b"during").await.unwrap();
    let mut buf = [0u8; 6];
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut buf)).await;
    assert!(r.is_err(), "nothing may get through a partition");
    // A new connection is held too: it never reaches the upstream.
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    fresh.write_all(b"new").await.unwrap();
    let mut b3 = [0u8; 3];
    assert!(
        tokio::time::timeout(Duration::from_secs(5), fresh.read_exact(&mut b3))
            .await
            .is_err()
    );
    let effect = fault.revert(h).unwrap();
    assert!(effect.metrics["held_streams"] >= 2.0, "{}", effect.summary);
    // Held bytes flow once the partition heals, as TCP retransmission would deliver them.
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during");
    fresh.read_exact(&mut b3).await.unwrap();
    assert_eq!(&b3, b"new");
}

#[tokio::test(start_paused = true)]
async fn reset_sends_rst_to_open_and_new_connections() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"hi").await;
    let fault =
        ProxyFault::network(&net(NetworkAction::Reset(Empty {}), Direction::Both), &reg).unwrap();
    let h = fault.apply(&target(&["p"])).unwrap();
    let mut buf = [0u8; 8];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    let r = fresh.read(&mut buf).await;
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let effect = fault.revert(h).unwrap();
    assert_eq!(
        effect.metrics["reset_connections"], 2.0,
        "{}",
        effect.summary
    );
    let mut after = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut after, b"back").await;
}

#[tokio::test(start_paused = true)]
async fn bandwidth_paces_the_stream_to_the_rate() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let fault = ProxyFault::network(
        &net(
            NetworkAction::Bandwidth(BandwidthLimit {
                rate: "400kbit/s".parse().unwrap(),
            }),
            Direction::Ingress,
        ),
        &reg,
    )
    .unwrap();
    let h = fault.apply(&target(&["p"])).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // 100 kB at 50 kB/s: two seconds.
    let payload = vec![7u8; 100_000];
    let rtt = round_trip(&mut s, &payload).await;
    assert!((rtt.as_secs_f64() - 2.0).abs() < 0.05, "took {rtt:?}");
    let effect = fault.revert(h).unwrap();
    assert_eq!(effect.metrics["paced_bytes"], 100_000.0);
}

#[tokio::test(start_paused = true)]
async fn loss_stalls_chunks_for_tcp_retransmission_timeouts() {
    let reg = ProxyRegistry::default();
    let addr = reg.create("p", echo().await).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let all = ProxyFault::network(
        &net(
            NetworkAction::Loss(Loss {
                percent: Percent::from_fraction(1.0).unwrap(),
                correlation: None,
            }),
            Direction::Ingress,
        ),
        &reg,
    )
    .unwrap();
    let h = all.apply(&target(&["p"])).unwrap();
    // Every transmission lost: 200+400+...+6400 ms of backoff before the chunk gets through.
    let rtt = round_trip(&mut s, b"x").await;
    assert!(close_to(rtt, 12_600), "{rtt:?}");
    drop(h);
    let some = ProxyFault::network(
        &net(
            NetworkAction::Loss(Loss {
                percent: Percent::from_fraction(0.3).unwrap(),
                correlation: None,
            }),
            Direction::Ingress,
        ),
        &reg,
    )
    .unwrap();
    let h = some.apply(&target(&["p"])).unwrap();
    let mut stalled = 0;
    for _ in 0..400 {
        let rtt = round_trip(&mut s, b"y").await;
        // Every round trip is either clean or a whole number of backoff steps.
        let ms = rtt.as_millis();
        assert!(
            [0, 200, 600, 1400, 3000, 6200, 12600].contains(&ms),
            "{rtt:?}"
        );
        if ms > 0 {
            stalled += 1;
        }
    }
    // 30% loss: expect ~120 of 400 stalled.
    assert!((80..=160).contains(&stalled), "{stalled} stalled");
    let effect = some.revert(h).unwrap();
    assert_eq!(effect.metrics["stalled_chunks"], f64::from(stalled));
}

fn http_fault(abort: Option<(u16, f64)>, delay_ms: Option<u64>, paths: &[&str]) -> HttpFault {
    HttpFault {
        abort: abort.map(|(status, p)| HttpAbort {
            status,
            percent: Percent::from_fraction(p).unwrap(),
        }),
        delay: delay_ms.map(|ms| HttpDelay {
            delay: faultline_spec::Duration::from_millis(ms),
            jitter: faultline_spec::Duration::ZERO,
            percent: None,
        }),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        methods: vec![],
    }
}

async fn http_get(s: &mut TcpStream, path: &str) -> std::io::Result<(u16, Duration)> {
    let start = Instant::now();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut acc = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        acc.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&acc).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if acc.len() >= head_end + 4 + len {
                let status = text[9..12].parse().unwrap();
                return Ok((status, start.elapsed()));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn http_abort_answers_the_status_and_the_upstream_never_sees_the_request() {
    let reg = ProxyRegistry::default();
    let (up, seen) = http_upstream().await;
    let addr = reg.create("p", up).await.unwrap();
    let fault = ProxyFault::http(&http_fault(Some((503, 1.0)), None, &["/api/*"]), &reg).unwrap();
    let h = fault.apply(&target(&["p"])).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        http_get(&mut s, "/healthz").await.unwrap().0,
        200,
        "path not matched"
    );
    assert_eq!(http_get(&mut s, "/api/orders/1").await.unwrap().0, 503);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let effect = fault.revert(h).unwrap();
    assert_eq!(effect.metrics["aborted_requests"], 1.0);

    let half = ProxyFault::http(&http_fault(Some((500, 0.5)), None, &[]), &reg).unwrap();
    let h = half.apply(&target(&["p"])).unwrap();
    let mut aborted = 0;
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if http_get(&mut s, "/x").await.unwrap().0 == 500 {
            aborted += 1;
        }
    }
    assert!(
        (70..=130).contains(&aborted),
        "{aborted} of 200 aborted at 50%"
    );
    assert_eq!(
        half.revert(h).unwrap().metrics["aborted_requests"],
        f64::from(aborted)
    );
}

#[tokio::test(start_paused = true)]
async fn http_delay_slows_only_the_chosen_paths_on_a_keep_alive_connection() {
    let reg = ProxyRegistry::default();
    let (up, _) = http_upstream().await;
    let addr = reg.create("p", up).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let fault = ProxyFault::http(&http_fault(None, Some(250), &["/slow"]), &reg).unwrap();
    let h = fault.apply(&target(&["p"])).unwrap();
    for _ in 0..3 {
        let (status, took) = http_get(&mut s, "/slow/1").await.unwrap();
        assert_eq!(status, 200);
        assert!(close_to(took, 250), "{took:?}");
        let (_, took) = http_get(&mut s, "/fast").await.unwrap();
        assert!(took < Duration::from_millis(1), "{took:?}");
    }
    // One more, still held when the fault ends: it counts as delayed, and it is still
    // delivered after its delay.
    s.write_all(b"GET /slow/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let effect = fault.revert(h).unwrap();
    assert_eq!(
        effect.metrics["delayed_requests"], 4.0,
        "{}",
        effect.summary
    );
    assert_eq!(effect.metrics["matched_requests"], 4.0);
    assert!(
        effect.summary.contains("1 still held"),
        "{}",
        effect.summary
    );
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the held request is released"
    );
}

#[tokio::test(start_paused = true)]
async fn removing_a_proxy_closes_it_and_unknown_ids_are_errors() {
    let reg = ProxyRegistry::default();
    let up = echo().await;
    let addr = reg.create("p", up).await.unwrap();
    assert!(matches!(
        reg.create("p", addr).await,
        Err(ProxyError::Conflict { .. })
    ));
    assert_eq!(reg.list().len(), 1);
    reg.remove("p").unwrap();
    assert!(matches!(reg.remove("p"), Err(ProxyError::NotFound(_))));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn the_proxy_refuses_while_its_upstream_refuses_and_listens_again_on_the_same_address() {
    let reg = ProxyRegistry::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let addr = reg.create("p", up).await.unwrap();
    // A connection made while the upstream listens stays up through the outage.
    let accepted = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        s
    });
    let mut early = TcpStream::connect(addr).await.unwrap();
    let mut upstream_side = accepted.await.unwrap();
    // The upstream goes away (its listener closed, as a draining server's is): the first
    // caller after that is cut, since the proxy only learns it by dialing, and from then on
    // callers are refused before anything is sent, as they would be by the upstream itself.
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(first.read(&mut buf).await, Ok(0) | Err(_)));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    early.write_all(b"ping").await.unwrap();
    let n = upstream_side.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping");
    // The upstream listens again on its address: within a probe interval the proxy does too,
    // on its own old address, so callers need no new configuration.
    let back = TcpListener::bind(up).await.unwrap();
    tokio::time::sleep(PROBE_EVERY * 3).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    let (mut s, _) = back.accept().await.unwrap(); // the proxy's probe
    drop(s);
    again.write_all(b"pong").await.unwrap();
    (s, _) = back.accept().await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(reg.list()[0].listen, addr);
}
