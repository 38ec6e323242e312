//! Crash recovery with `chaos agent` as a real process: a SIGSTOP fault is applied to a
//! child target, the agent is SIGKILLed (no guard runs), and the restarted agent reads
//! its journal and continues the target, which shows state R or S again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "crash-test-token-0123456789";

/// Kills and reaps a child on drop, so a failing test leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state_of(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

fn start_agent(dir: &std::path::Path) -> (Reaped, SocketAddr, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["agent", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    let status = text[9..12].parse().unwrap();
    (status, text)
}

#[test]
fn a_restarted_agent_continues_a_process_stopped_before_it_was_killed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let target = Reaped(Command::new("sleep").arg("300").spawn().unwrap());
    let pid = target.0.id();

    let (mut agent, addr, _out) = start_agent(dir.path());
    let body = format!(
        r#"{{"id":"stop-1","experiment":"crash","target":{{"name":"sleep","pid":{pid}}},"fault":{{"process":{{"signal":"SIGSTOP"}}}},"ttl":"5m"}}"#
    );
    let (status, text) = call(addr, "POST", "/v1/faults", &body);
    assert_eq!(status, 201, "{text}");
    assert_eq!(state_of(pid), Some('T'), "SIGSTOP applied");

    // SIGKILL: no destructor, no graceful revert. Only the journal knows.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        state_of(pid),
        Some('T'),
        "still stopped after the agent died"
    );

    let (_agent, addr, _out) = start_agent(dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = state_of(pid);
        if matches!(state, Some('R' | 'S')) {
            break;
        }
        assert!(Instant::now() < deadline, "target still in state {state:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, text) = call(addr, "GET", "/v1/faults", "");
    assert_eq!(status, 200);
    assert!(text.ends_with(r#"{"faults":[]}"#), "{text}");
}

#[test]
fn chaos_agent_refuses_a_short_or_missing_token_file_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "short\n").unwrap();
    for token in [dir.path().join("token"), dir.path().join("missing")] {
        let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
            .args(["agent", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(&token)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("token file"), "{stderr}");
    }
}
