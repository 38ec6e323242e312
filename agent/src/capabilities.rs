//! `GET /v1/capabilities`: what this host lets the agent do. The controller's preflight.
//!
//! Privileged mechanisms (netem, tbf, htb, ifb, nftables with set timeouts and
//! `redirect`) are probed by trial: each is really set up inside a scratch network
//! namespace that exists only for the probe and vanishes with it, so no real namespace
//! is touched and the answer is what the kernel and tools allow, not what a module list
//! suggests. The rest is read-only: `/proc`, `/sys`, a `pidfd_open` on the agent
//! itself and a connect to the Docker socket.

use std::collections::BTreeMap;
use std::path::Path;

use faultline_spec::wire::Capabilities;

/// Fault kinds the unprivileged agent applies, as `kind` or `kind.action`.
pub const FAULT_KINDS: &[&str] = &[
    "network.latency",
    "network.loss",
    "network.bandwidth",
    "network.reset",
    "network.partition",
    "http",
    "cpu",
    "memory",
    "process",
];

/// Effective capability bits from `/proc/self/status` (`CapEff`).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// Outcome of each trial: `Err` says what is missing.
struct Trials {
    netem: Result<(), String>,
    tbf: Result<(), String>,
    htb: Result<(), String>,
    ifb: Result<(), String>,
    nftables: Result<(), String>,
}

impl Trials {
    fn unprivileged() -> Self {
        let why = || Err("needs privileges (root or CAP_NET_ADMIN + CAP_SYS_ADMIN)".to_string());
        Self {
            netem: why(),
            tbf: why(),
            htb: why(),
            ifb: why(),
            nftables: why(),
        }
    }
}

/// Runs a command; `Err` carries its stderr (or why it could not start).
fn attempt(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{}` cannot run: {e}", args[0]))?;
    if let Some(text) = stdin {
        let _ = child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes());
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Tries every privileged mechanism for real, inside a scratch network namespace that
/// vanishes afterwards, so the answer is what the kernel and tools actually allow.
fn trial_in_scratch_namespace() -> Trials {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim().to_string();
    let run = || {
        let lo_up = attempt(&["ip", "link", "set", "lo", "up"], None);
        let tc = |kind: &str, module: &str, args: &[&str]| -> Result<(), String> {
            lo_up.clone()?;
            let mut a = vec!["tc", "qdisc", "replace", "dev", "lo", "root"];
            a.extend_from_slice(args);
            attempt(&a, None).map_err(|e| {
                let why = kernel_module(module, &kernel).err().unwrap_or_default();
                format!("tc {kind} failed: {e}; {module}: {why}")
            })
        };
        let netem = tc("netem", "sch_netem", &["netem", "delay", "1ms"])
            .map_err(|e| format!("the kernel has no usable sch_netem module ({e})"));
        let tbf = tc(
            "tbf",
            "sch_tbf",
            &["tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms"],
        );
        let htb = tc("htb", "sch_htb", &["handle", "1:", "htb"]);
        let ifb = attempt(&["ip", "link", "add", "flprobe0", "type", "ifb"], None)
            .map_err(|e| format!("cannot create an ifb device: {e}"));
        let nftables = attempt(
            &["nft", "-f", "-"],
            Some(
                "table inet faultline_probe {\n set s { type ipv4_addr; flags interval, timeout; elements = { 0.0.0.0/0 timeout 1s }; }\n chain c { type nat hook output priority 0; meta l4proto tcp meta mark 1 redirect to :1; }\n chain f { type filter hook input priority 0; ip saddr @s numgen random mod 100 < 1 drop; }\n}\n",
            ),
        )
        .map_err(|e| format!("nftables with set timeouts and redirect is unusable: {e}"));
        Trials {
            netem,
            tbf,
            htb,
            ifb,
            nftables,
        }
    };
    match crate::netns::run_in_scratch(run) {
        Ok(t) => t,
        Err(e) => {
            let why = || Err(format!("cannot create a scratch network namespace: {e}"));
            Trials {
                netem: why(),
                tbf: why(),
                htb: why(),
                ifb: why(),
                nftables: why(),
            }
        }
    }
}

/// Whether a kernel module is loaded, built in, or installed for loading.
fn kernel_module(name: &str, kernel: &str) -> Result<(), String> {
    if Path::new("/sys/module").join(name).exists() {
        return Ok(());
    }
    if std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.split_whitespace().next() == Some(name)))
        .unwrap_or(false)
    {
        return Ok(());
    }
    let dir = Path::new("/lib/modules").join(kernel);
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let installed = std::fs::read_to_string(dir.join("modules.dep")).unwrap_or_default();
    let needle = format!("/{name}.ko");
    if builtin.contains(&needle) || installed.contains(&needle) {
        return Ok(());
    }
    Err(format!(
        "kernel module {name} is neither loaded nor installed for kernel {kernel}"
    ))
}

fn cgroup_version() -> Option<u8> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Some(2)
    } else if Path::new("/sys/fs/cgroup/cpu").exists()
        || Path::new("/sys/fs/cgroup/memory").exists()
    {
        Some(1)
    } else {
        None
    }
}

fn docker_socket() -> Result<String, String> {
    let path = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => Ok(path),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

fn pidfd_works() -> Result<(), String> {
    rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .map(drop)
    .map_err(|e| format!("pidfd_open: {e}"))
}

/// Probes this host.
pub fn probe() -> Capabilities {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut missing = BTreeMap::new();
    let caps = effective_caps();
    let privileged = rustix::process::geteuid().is_root()
        || (caps & CAP_NET_ADMIN != 0 && caps & CAP_SYS_ADMIN != 0);
    if !privileged {
        missing.insert(
            "privileged".to_string(),
            "not root and lacking CAP_NET_ADMIN + CAP_SYS_ADMIN: network faults use the userspace proxy".to_string(),
        );
    }
    let trials = if privileged {
        trial_in_scratch_namespace()
    } else {
        Trials::unprivileged()
    };
    let mut record = |cap: &str, r: Result<(), String>| -> bool {
        match r {
            Ok(()) => true,
            Err(why) => {
                missing.insert(cap.to_string(), why);
                false
            }
        }
    };
    let netem = record("netem", trials.netem);
    let tbf = record("tbf", trials.tbf);
    let htb = record("htb", trials.htb);
    let ifb = record("ifb", trials.ifb);
    let nftables = record("nftables", trials.nftables);
    let docker = docker_socket()
        .map_err(|why| missing.insert("docker".into(), why))
        .ok();
    let pidfd = pidfd_works()
        .map_err(|why| missing.insert("pidfd".into(), why))
        .is_ok();
    let cgroup = cgroup_version();
    if cgroup.is_none() {
        missing.insert(
            "cgroup".into(),
            "no cgroup filesystem at /sys/fs/cgroup".into(),
        );
    }
    let mut network_backends: BTreeMap<String, Vec<String>> =
        ["latency", "loss", "bandwidth", "reset", "partition"]
            .into_iter()
            .map(|a| (a.to_string(), vec!["proxy".to_string()]))
            .collect();
    let mut add = |action: &str, backend: &str| {
        network_backends
            .get_mut(action)
            .expect("known action")
            .push(backend.to_string());
    };
    if netem {
        add("latency", "netem");
    }
    if nftables {
        // The redirect proxy needs the nft `redirect` rule.
        add("latency", "redirect");
        for a in ["loss", "reset", "partition"] {
            add(a, "nftables");
        }
    }
    if htb && ifb {
        add("bandwidth", "tc");
    }
    let mut fault_kinds: Vec<String> = FAULT_KINDS.iter().map(|s| s.to_string()).collect();
    if docker.is_some() {
        fault_kinds.push("container".into());
    }
    let tbf = tbf && htb;
    Capabilities {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel,
        privileged,
        netem,
        nftables,
        tbf,
        ifb,
        cgroup_version: cgroup,
        docker_socket: docker,
        pidfd,
        fault_kinds,
        network_backends,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_match_what_this_host_shows() {
        let c = probe();
        assert_eq!(
            c.kernel,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap()
                .trim()
        );
        assert_eq!(
            c.privileged,
            rustix::process::geteuid().is_root() || {
                let caps = effective_caps();
                caps & CAP_NET_ADMIN != 0 && caps & CAP_SYS_ADMIN != 0
            }
        );
        // pidfd_open exists since Linux 5.3; report and reason must agree either way.
        assert_eq!(c.pidfd, !c.missing.contains_key("pidfd"));
        assert_eq!(
            c.cgroup_version.is_some(),
            !c.missing.contains_key("cgroup")
        );
        assert!(c.fault_kinds.iter().any(|k| k == "cpu"));
        assert_eq!(c.network_backends["latency"][0], "proxy");
        // Each capability is either usable or has a reason, never both or neither.
        for (name, has) in [("netem", c.netem), ("nftables", c.nftables), ("ifb", c.ifb)] {
            assert_eq!(
                has,
                !c.missing.contains_key(name),
                "{name}: {:?}",
                c.missing
            );
        }
        assert_eq!(
            c.network_backends["loss"].contains(&"nftables".to_string()),
            c.nftables
        );
        // Reported capabilities are ones that can be used: none without privileges.
        if !c.privileged {
            assert!(!c.netem && !c.nftables && !c.tbf && !c.ifb);
            assert_eq!(c.network_backends["latency"], ["proxy"]);
        }
    }
}
