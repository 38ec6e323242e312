//! Crash recovery with `chaos agent` as a real process: a SIGSTOP fault is applied to a
//! child target, the agent is SIGKILLed (no guard runs), and the restarted agent reads
//! its journal and continues the target, which shows state R or S again.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Reaped, start_agent, state_of};

const TOKEN: &str = "crash-test-token-0123456789";

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

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    common::call(addr, TOKEN, method, path, body)
}
