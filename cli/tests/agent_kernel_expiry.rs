//! Kernel-enforced expiry: a real `chaos agent` applies a partition through nftables to a
//! target in a network namespace the test created, and is SIGKILLed. Nobody renews the
//! lease, so the set elements time out in the kernel and traffic recovers within
//! TTL + 1 s with the agent dead, and the agent's watchdog deletes the inert table by
//! then too; a restarted agent finds nothing left. Needs root, nft and ip (scripts/ci
//! runs as root).

mod common;

#[path = "../../agent/tests/netns_common.rs"]
mod netns_common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::start_agent;

use netns_common::NetPair;

const TOKEN: &str = "kernel-expiry-token-0123456789";

#[test]
fn a_sigkilled_agents_partition_ends_by_kernel_timeout_and_its_watchdog_removes_the_table() {
    if !netns_common::privileged_or_skip("kernel expiry") {
        return;
    }
    let mut pair = NetPair::new(21);
    let pid = pair.target_pid();
    let (listener, addr) = pair.target_listener();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let connect = |timeout: Duration| {
        NetPair::in_ns(&pair.client, move || {
            TcpStream::connect_timeout(&addr, timeout).is_ok()
        })
    };
    assert!(connect(Duration::from_secs(1)), "baseline");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let (mut agent, api, _out) = start_agent(dir.path());
    const TTL: Duration = Duration::from_secs(3);
    let body = format!(
        r#"{{"id":"part-1","experiment":"expiry","target":{{"name":"t","pid":{pid}}},"fault":{{"network":{{"partition":{{}}}}}},"ttl":"3s"}}"#
    );
    let applied = Instant::now();
    let (status, text) = call(api, "POST", "/v1/faults", &body);
    assert_eq!(status, 201, "{text}");
    assert!(text.contains(r#""backend":"nftables""#), "{text}");
    assert!(!connect(Duration::from_millis(300)), "partition in force");

    // SIGKILL: no destructor, no revert. The kernel timeout is all that is left.
    agent.0.kill().unwrap();
    let killed = Instant::now();
    agent.0.wait().unwrap();
    // Applied at most a few ms before the kill; the lease elements carry the TTL.
    let recovered = loop {
        if connect(Duration::from_millis(100)) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < TTL + Duration::from_secs(1),
            "traffic did not recover within TTL + 1 s of the agent's death"
        );
    };
    eprintln!(
        "partition with ttl {TTL:?}: traffic recovered {recovered:?} after SIGKILL, {:?} after the apply request (agent dead)",
        applied.elapsed()
    );
    assert!(recovered <= TTL + Duration::from_secs(1));
    // The inert table is the agent's watchdog's to delete, at the same deadline.
    while pair.tables().contains("faultline_") {
        assert!(
            applied.elapsed() < TTL + Duration::from_secs(1),
            "the watchdog did not delete the table within TTL + 1 s: {}",
            pair.tables()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let (_agent, api, _out) = start_agent(dir.path());
    let (status, text) = call(api, "GET", "/v1/faults", "");
    assert_eq!(status, 200);
    assert!(text.ends_with(r#"{"faults":[]}"#), "{text}");
}

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    common::call(addr, TOKEN, method, path, body)
}
