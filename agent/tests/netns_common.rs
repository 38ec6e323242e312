//! Helpers for privileged tests: network namespaces the test creates itself, joined by a
//! veth pair with addresses in a private range that exist only inside them.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::wire::{FaultRequest, ResolvedTarget};
use faultline_spec::{Direction, FaultKind, Latency, NetworkAction, NetworkFault};

/// Whether privileged network tests can run. Outside CI a missing prerequisite skips
/// (with the reason printed); under `CI=true` it fails, naming what to install.
pub fn privileged_or_skip(test: &str) -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root (run the tests as root, as scripts/ci does)".to_string());
    }
    for (bin, pkg) in [("nft", "nftables"), ("ip", "iproute2"), ("tc", "iproute2")] {
        if Command::new(bin)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            missing.push(format!("`{bin}` (apt-get install {pkg})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    faultline_testkit::skip(format_args!("{test}: needs {}", missing.join(", ")))
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An agent keeping its journal under a fresh temporary directory; the directory is
/// deleted when the returned guard drops, so keep it as long as the agent.
pub async fn agent_with_state_dir() -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = Agent::start(AgentConfig {
        state_dir: Some(dir.path().join("state")),
        ..Default::default()
    })
    .await
    .unwrap();
    (agent, dir)
}

/// A request for `fault` on the process `pid` (see [`NetPair::target_pid`]), leased for
/// `ttl_s` seconds.
pub fn request_on_pid(
    id: &str,
    experiment: &str,
    pid: u32,
    fault: FaultKind,
    ttl_s: u64,
) -> FaultRequest {
    FaultRequest {
        id: id.into(),
        experiment: experiment.into(),
        target: ResolvedTarget {
            name: "target".into(),
            pid: Some(pid),
            ..Default::default()
        },
        fault,
        ttl: faultline_spec::Duration::from_secs(ttl_s),
    }
}

/// `action` on all of the target's traffic in `direction` (every peer, every port), on
/// the default backend; narrow it with struct update syntax.
pub fn network(action: NetworkAction, direction: Direction) -> NetworkFault {
    NetworkFault {
        action,
        direction,
        peers: Vec::new(),
        ports: Vec::new(),
        backend: Default::default(),
    }
}

/// A fixed delay of `ms` milliseconds: no jitter, no correlation.
pub fn latency_ms(ms: u64) -> NetworkAction {
    NetworkAction::Latency(Latency {
        delay: faultline_spec::Duration::from_millis(ms),
        jitter: Default::default(),
        correlation: None,
        distribution: Default::default(),
    })
}

/// Two namespaces `client` and `target` joined by a veth pair: the client has
/// `10.213.N.1/24`, the target `10.213.N.2/24`. Dropping it deletes both namespaces
/// (and with them the veth pair and anything in them).
pub struct NetPair {
    /// Client namespace name.
    pub client: String,
    /// Target namespace name.
    pub target: String,
    /// Client address.
    pub client_ip: Ipv4Addr,
    /// Target address.
    pub target_ip: Ipv4Addr,
    /// The target-side veth device.
    pub target_dev: String,
    sleepers: Vec<Child>,
}

impl NetPair {
    /// For test `test`: the pair from [`NetPair::new`] with a process in its target
    /// namespace and that process's PID, or `None` when [`privileged_or_skip`] skips.
    pub fn with_target_or_skip(test: &str, n: u8) -> Option<(Self, u32)> {
        if !privileged_or_skip(test) {
            return None;
        }
        let mut pair = Self::new(n);
        let pid = pair.target_pid();
        Some((pair, pid))
    }

    /// Creates the pair; `n` picks the subnet and must be unique per test binary.
    pub fn new(n: u8) -> Self {
        let id = format!("fl{}n{n}", std::process::id());
        let pair = NetPair {
            client: format!("{id}c"),
            target: format!("{id}t"),
            client_ip: Ipv4Addr::new(10, 213, n, 1),
            target_ip: Ipv4Addr::new(10, 213, n, 2),
            target_dev: format!("v{id}t"),
            sleepers: Vec::new(),
        };
        let (c, t) = (pair.client.as_str(), pair.target.as_str());
        let (vc, vt) = (format!("v{id}c"), pair.target_dev.clone());
        sh(&["ip", "netns", "add", c]);
        sh(&["ip", "netns", "add", t]);
        sh(&[
            "ip", "link", "add", &vc, "netns", c, "type", "veth", "peer", "name", &vt, "netns", t,
        ]);
        for (ns, dev, ip) in [(c, &vc, pair.client_ip), (t, &vt, pair.target_ip)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            // One MSS per packet (no 64 KiB GSO super-packets), so packet counts mean
            // what they mean on a real wire.
            sh(&[
                "ip",
                "-n",
                ns,
                "link",
                "set",
                dev,
                "gso_max_segs",
                "1",
                "up",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// A process living in the target namespace, to name it by PID as the agent does.
    pub fn target_pid(&mut self) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.target, "sleep", "600"])
            .spawn()
            .expect("spawn a process in the target namespace");
        let pid = child.id();
        self.sleepers.push(child);
        // `ip netns exec` enters the namespace, then execs: wait until it has.
        let want = std::fs::metadata(format!("/run/netns/{}", self.target)).unwrap();
        use std::os::unix::fs::MetadataExt;
        for _ in 0..200 {
            if std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want.ino())
            {
                return pid;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("process {pid} never entered {}", self.target);
    }

    /// Runs `f` on a thread inside namespace `ns`.
    pub fn in_ns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
        let file = std::fs::File::open(Path::new("/run/netns").join(ns)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// A listening socket on the target address, port 0.
    pub fn target_listener(&self) -> (TcpListener, SocketAddr) {
        let ip = self.target_ip;
        Self::in_ns(&self.target, move || {
            let l = TcpListener::bind((ip, 0)).unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        })
    }

    /// A listening socket on the client address, port 0.
    pub fn client_listener(&self) -> (TcpListener, SocketAddr) {
        let ip = self.client_ip;
        Self::in_ns(&self.client, move || {
            let l = TcpListener::bind((ip, 0)).unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        })
    }

    /// nftables tables in the target namespace.
    pub fn tables(&self) -> String {
        sh(&["ip", "netns", "exec", &self.target, "nft", "list", "tables"])
    }

    /// qdiscs in the target namespace.
    pub fn qdiscs(&self) -> String {
        sh(&["tc", "-n", &self.target, "qdisc", "show"])
    }

    /// Names of the links in the target namespace.
    pub fn links(&self) -> Vec<String> {
        sh(&["ip", "-n", &self.target, "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
            .collect()
    }

    /// A counter from `/proc/net/snmp` (e.g. `Tcp`, `RetransSegs`) in namespace `ns`.
    pub fn snmp(ns: &str, group: &str, field: &str) -> u64 {
        let text = sh(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]);
        let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
        let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let i = names.iter().position(|n| *n == field).unwrap();
        values[i].parse().unwrap()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.target] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Echoes every byte on each connection `listener` accepts, one thread per connection.
pub fn echo_on(listener: std::net::TcpListener) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}
