//! The dead man's switch (issue 17): a real `chaos agent` applies a fault with a 3 s
//! lease and is SIGKILLed right after; nobody renews the lease and no agent starts again.
//! Its watchdog ends the fault by TTL + 1 s: a SIGSTOPped target runs again, tc shaping
//! (htb on the egress device, the ifb device for ingress) is gone, and a latency redirect
//! into the dead agent's proxy stops matching (its kernel timeout) and its table is gone. A restarted
//! agent takes over from a live watchdog instead: the watchdog exits before reverting
//! anything and the agent reverts each leftover once.
//!
//! Real time is inherent: when the effect ends, measured from the apply request, is what
//! is tested. The bounds are the lease (not before TTL - 0.2 s, since the journalled
//! deadline is taken just before the apply) and TTL + 1 s.

mod common;

#[path = "../../agent/tests/netns_common.rs"]
mod netns_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Reaped, start_agent, state_of};
use faultline_spec::wire::FaultRequest;
use faultline_spec::{
    Bandwidth, BandwidthLimit, Direction, FaultKind, NetworkAction, NetworkFault,
};
use netns_common::NetPair;

const TOKEN: &str = "watchdog-test-token-0123456789";
const TTL: Duration = Duration::from_secs(3);

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    common::call(addr, TOKEN, method, path, body)
}

fn state_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    dir
}

/// The live watchdog's PID, from the agent's state directory.
fn watchdog_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("state/watchdog.pid")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    !matches!(state_of(pid), None | Some('Z'))
}

/// Polls `done` every 10 ms until it holds; returns when, measured from `since`. Fails
/// once TTL + 1 s has passed.
fn ended_within_bound(since: Instant, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    loop {
        if done() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() <= TTL + Duration::from_secs(1),
            "{what} still in force {:?} after the apply, past TTL + 1 s",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The request body of a SIGSTOP of `pid` under a `ttl` lease.
fn sigstop(id: &str, pid: u32, ttl: &str) -> String {
    format!(
        r#"{{"id":"{id}","experiment":"watchdog","target":{{"name":"sleep","pid":{pid}}},"fault":{{"process":{{"signal":"SIGSTOP"}}}},"ttl":"{ttl}"}}"#
    )
}

/// [`ended_within_bound`] for a fault's effect, which must also last its whole lease (the
/// journalled deadline is taken just before the apply, hence 200 ms of slack).
fn ended_by_its_lease(since: Instant, what: &str, done: impl FnMut() -> bool) -> Duration {
    let ended = ended_within_bound(since, what, done);
    assert!(
        ended >= TTL - Duration::from_millis(200),
        "{what} ended early, {ended:?} after the apply"
    );
    ended
}

fn apply_then_kill(dir: &Path, requests: &[String]) -> (Instant, u32) {
    let (mut agent, api, _out) = start_agent(dir);
    let watchdog = watchdog_pid(dir).expect("the agent started a watchdog");
    assert!(alive(watchdog));
    let applied = Instant::now();
    for body in requests {
        let (status, text) = call(api, "POST", "/v1/faults", body);
        assert_eq!(status, 201, "{text}");
    }
    // SIGKILL: no destructor, no revert, no restart.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    (applied, watchdog)
}

#[test]
fn a_sigstopped_target_runs_again_by_its_lease_after_the_agent_is_killed() {
    let dir = state_dir();
    let target = Reaped(Command::new("sleep").arg("300").spawn().unwrap());
    let pid = target.0.id();
    let (applied, watchdog) = apply_then_kill(dir.path(), &[sigstop("stop-1", pid, "3s")]);
    assert_eq!(
        state_of(pid),
        Some('T'),
        "still stopped right after the kill"
    );
    let ended = ended_by_its_lease(applied, "SIGSTOP", || {
        matches!(state_of(pid), Some('R' | 'S'))
    });
    eprintln!(
        "SIGSTOP with ttl {TTL:?}: the target ran again {ended:?} after the apply (agent dead)"
    );
    let gone = ended_within_bound(applied, "the watchdog", || !alive(watchdog));
    eprintln!("the watchdog exited {gone:?} after the apply");
}

#[test]
fn tc_shaping_in_both_directions_ends_by_its_lease_after_the_agent_is_killed() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("watchdog tc", 61) else {
        return;
    };
    let dir = state_dir();
    let qdiscs_before = pair.qdiscs();
    let links_before = pair.links();
    let bodies: Vec<String> = [
        ("bw-egress", Direction::Egress),
        ("bw-ingress", Direction::Ingress),
    ]
    .into_iter()
    .map(|(id, direction)| {
        let action = NetworkAction::Bandwidth(BandwidthLimit {
            rate: Bandwidth(1_000_000),
        });
        let fault = FaultKind::Network(netns_common::network(action, direction));
        let mut request: FaultRequest = netns_common::request_on_pid(id, "watchdog", pid, fault, 3);
        request.ttl = faultline_spec::Duration::from_secs(TTL.as_secs());
        serde_json::to_string(&request).unwrap()
    })
    .collect();
    let (applied, watchdog) = apply_then_kill(dir.path(), &bodies);
    assert!(
        pair.qdiscs().contains("htb"),
        "shaping in force: {}",
        pair.qdiscs()
    );
    assert_ne!(pair.links(), links_before, "the ifb device is there");
    let ended = ended_by_its_lease(applied, "tc shaping", || {
        pair.qdiscs() == qdiscs_before && pair.links() == links_before
    });
    eprintln!(
        "tc shaping (egress htb, ingress ifb) with ttl {TTL:?}: removed {ended:?} after the apply (agent dead)"
    );
    ended_within_bound(applied, "the watchdog", || !alive(watchdog));
}

/// One echo round trip from the client namespace: `None` when the connection is refused,
/// reset or times out (a redirect into a dead proxy refuses).
fn round_trip(ns: &str, addr: SocketAddr) -> Option<Duration> {
    NetPair::in_ns(ns, move || {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.write_all(b"ping").ok()?;
        let mut got = [0u8; 4];
        s.read_exact(&mut got).ok()?;
        Some(start.elapsed())
    })
}

#[test]
fn a_redirect_into_a_dead_proxy_ends_by_its_lease_after_the_agent_is_killed() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("watchdog redirect", 62) else {
        return;
    };
    let (listener, addr) = pair.target_listener();
    netns_common::echo_on(listener);
    let base = round_trip(&pair.client, addr).expect("baseline round trip");
    let dir = state_dir();
    let fault = FaultKind::Network(NetworkFault {
        ports: vec![addr.port()],
        ..netns_common::network(netns_common::latency_ms(200), Direction::Ingress)
    });
    let request =
        netns_common::request_on_pid("lat-redirect", "watchdog", pid, fault, TTL.as_secs());
    let (applied, watchdog) =
        apply_then_kill(dir.path(), &[serde_json::to_string(&request).unwrap()]);
    // The proxy died with the agent; the redirect to it stays until its lease ends.
    let during = round_trip(&pair.client, addr);
    assert!(
        during.is_none_or(|rtt| rtt >= Duration::from_millis(200)),
        "the redirect is still in force: {during:?}"
    );
    let ended = ended_by_its_lease(applied, "the redirect", || {
        round_trip(&pair.client, addr).is_some_and(|rtt| rtt < base + Duration::from_millis(50))
    });
    eprintln!(
        "redirect latency with ttl {TTL:?}: direct round trips again {ended:?} after the apply (agent dead; during: {during:?})"
    );
    ended_within_bound(applied, "the watchdog", || !alive(watchdog));
    assert!(!pair.tables().contains("faultline_"), "{}", pair.tables());
}

#[test]
fn a_restarted_agent_takes_over_from_a_live_watchdog_and_reverts_each_leftover_once() {
    let dir = state_dir();
    let target = Reaped(Command::new("sleep").arg("300").spawn().unwrap());
    let pid = target.0.id();
    let (_, old_watchdog) = apply_then_kill(dir.path(), &[sigstop("stop-long", pid, "60s")]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(old_watchdog), "the watchdog waits for the 60 s lease");
    assert_eq!(state_of(pid), Some('T'));

    let (_agent, api, _out) = start_agent(dir.path());
    assert!(
        !alive(old_watchdog),
        "the old watchdog exited before the agent served"
    );
    let new_watchdog = watchdog_pid(dir.path()).expect("the new agent's watchdog");
    assert_ne!(new_watchdog, old_watchdog);
    assert!(alive(new_watchdog));
    assert!(
        matches!(state_of(pid), Some('R' | 'S')),
        "the agent continued it"
    );
    // Reverted once, by the agent: the journal it started holds nothing, and the old
    // watchdog never wrote a revert (it would have left the journal before the agent read it).
    let journal = std::fs::read_to_string(dir.path().join("state/journal.log")).unwrap();
    assert!(journal.is_empty(), "{journal}");
    let (status, text) = call(api, "GET", "/v1/faults", "");
    assert_eq!(status, 200);
    assert!(text.ends_with(r#"{"faults":[]}"#), "{text}");
}
