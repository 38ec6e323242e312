//! HTTP faults for a node target through the nft-redirect proxy (the compose mode's
//! `http` faults), in network namespaces the test creates; aborts are counted at the
//! client. Runs as root (scripts/ci).

mod netns_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use faultline_spec::{FaultKind, HttpAbort, HttpFault, Percent};
use netns_common::NetPair;

/// A minimal HTTP/1.1 server: one request per connection, always 200.
fn http_ok(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(s);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
}

/// Status codes of `n` requests, each on its own connection, from the client namespace.
fn statuses(pair: &NetPair, addr: SocketAddr, n: usize) -> Vec<u16> {
    NetPair::in_ns(&pair.client, move || {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // One write: `write!` would send the head and the body in separate writes,
                // and a server that answers after the head and closes (as the abort does)
                // resets the connection under the body's write.
                let request = format!(
                    "POST /notify HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{:02}",
                    i % 100
                );
                s.write_all(request.as_bytes()).unwrap();
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_proxy_aborts_the_asked_share_of_http_requests_into_the_target() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("redirect http abort", 33) else {
        return;
    };
    let (l, addr) = pair.target_listener();
    http_ok(l);
    let (agent, _dir) = netns_common::agent_with_state_dir().await;
    let before = tokio::task::block_in_place(|| statuses(&pair, addr, 20));
    assert!(before.iter().all(|&c| c == 200), "{before:?}");

    let fault = FaultKind::Http(HttpFault {
        abort: Some(HttpAbort {
            status: 503,
            percent: Percent::from_fraction(0.5).unwrap(),
        }),
        delay: None,
        paths: Vec::new(),
        methods: Vec::new(),
    });
    let out = agent
        .apply(netns_common::request_on_pid(
            "abort",
            "redirect-http",
            pid,
            fault,
            60,
        ))
        .await
        .unwrap();
    assert_eq!(out.state.backend, "redirect");
    let n = 200;
    let during = tokio::task::block_in_place(|| statuses(&pair, addr, n));
    let aborted = during.iter().filter(|&&c| c == 503).count();
    let ok = during.iter().filter(|&&c| c == 200).count();
    eprintln!("redirect http abort 50%: {aborted}/{n} answered 503, {ok} answered 200");
    assert_eq!(aborted + ok, n, "every request is answered: {during:?}");
    // Binomial(200, 0.5): 70..130 holds with probability > 0.9999.
    assert!((70..=130).contains(&aborted), "{aborted}/{n} aborted");

    agent.revert("abort").await.unwrap();
    assert!(!pair.tables().contains("faultline_"), "{}", pair.tables());
    let after = tokio::task::block_in_place(|| statuses(&pair, addr, 20));
    assert!(after.iter().all(|&c| c == 200), "after revert: {after:?}");
}
