//! Kernel-enforced expiry: a real `chaos agent` applies a partition through nftables to a
//! target in a network namespace the test created, and is SIGKILLed. Nobody renews the
//! lease, so the set elements time out in the kernel and traffic recovers within
//! TTL + 1 s with the agent dead. A restarted agent then deletes the inert table from
//! its journal. Needs root, nft and ip (scripts/ci runs as root).

#[path = "../../agent/tests/netns_common.rs"]
mod netns_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use netns_common::NetPair;

const TOKEN: &str = "kernel-expiry-token-0123456789";

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &std::path::Path) -> (Reaped, SocketAddr, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["agent", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chaos agent");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Reaped(child), addr, out)
}

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    (text[9..12].parse().unwrap(), text)
}

#[test]
fn a_sigkilled_agents_partition_ends_by_kernel_timeout_and_restart_removes_the_table() {
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
    assert!(
        pair.tables().contains("faultline_"),
        "the inert table stays until an agent removes it"
    );

    let (_agent, api, _out) = start_agent(dir.path());
    assert!(
        !pair.tables().contains("faultline_"),
        "the restarted agent removed the table: {}",
        pair.tables()
    );
    let (status, text) = call(api, "GET", "/v1/faults", "");
    assert_eq!(status, 200);
    assert!(text.ends_with(r#"{"faults":[]}"#), "{text}");
}
