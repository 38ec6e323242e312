//! Helpers shared by the tests that run `chaos agent` as a real process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Kills and reaps a child on drop, so a failing test leaves no process behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state letter of `/proc/PID/stat` (R, S, T, Z, ...), `None` when the process is gone.
pub fn state_of(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

/// Starts `chaos agent` on a loopback port with `dir/token` and `dir/state`; returns it,
/// its address (from its first output line) and the rest of its standard output.
pub fn start_agent(dir: &Path) -> (Reaped, SocketAddr, BufReader<ChildStdout>) {
    start_agent_with(dir, &[])
}

/// [`start_agent`] with more `chaos agent` arguments.
pub fn start_agent_with(
    dir: &Path,
    extra: &[&str],
) -> (Reaped, SocketAddr, BufReader<ChildStdout>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chaos"));
    command
        .args(["agent", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra);
    announced(command)
}

/// Spawns `command`, a `chaos agent` possibly wrapped (e.g. by `unshare`), and reads the
/// address it announces on its first output line.
pub fn announced(mut command: Command) -> (Reaped, SocketAddr, BufReader<ChildStdout>) {
    let mut child = command
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

/// One agent API call with the bearer `token`; the status and the whole response.
pub fn call(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    (text[9..12].parse().unwrap(), text)
}

/// Reads `child`'s piped stderr on a thread until a line contains `needle` (the runner's
/// progress lines say when faults are on), and returns the lines read. After `timeout`
/// without it, kills the child and fails with what it printed.
pub fn await_stderr_line(
    child: &mut Child,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("stderr is not piped"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return Ok(seen);
                }
            }
            Err(_) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                anyhow::bail!("no stderr line held {needle:?}:\n{}", seen.join("\n"));
            }
            Err(_) => {}
        }
    }
}
