//! Stress charged to a target's cgroup (cgroup v1 on this machine), through a real
//! `chaos agent`: CPU burners under a 50% CFS quota, read back from `cpuacct.usage`, and
//! memory that shows in the cgroup's `memory.usage_in_bytes`. Needs root.

mod common;

#[path = "../../agent/tests/netns_common.rs"]
mod netns_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Reaped, start_agent};

const TOKEN: &str = "cgroup-stress-token-0123456789";

/// A target process in its own v1 `cpu`, `cpuacct` and `memory` cgroups, with a CPU quota
/// of half a CPU. Dropping it kills the target and removes the cgroups.
struct CgroupTarget {
    dirs: Vec<PathBuf>,
    target: Option<Reaped>,
}

impl CgroupTarget {
    fn new(tag: &str) -> Self {
        let name = format!("faultline-test-{}-{tag}", std::process::id());
        let dirs: Vec<PathBuf> = ["cpu", "cpuacct", "memory"]
            .iter()
            .map(|c| PathBuf::from("/sys/fs/cgroup").join(c).join(&name))
            .collect();
        let mut t = CgroupTarget {
            dirs: Vec::new(),
            target: None,
        };
        for d in &dirs {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            t.dirs.push(d.clone());
        }
        std::fs::write(dirs[0].join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(dirs[0].join("cpu.cfs_quota_us"), "50000").unwrap();
        let child = Reaped(Command::new("sleep").arg("600").spawn().unwrap());
        for d in &dirs {
            std::fs::write(d.join("cgroup.procs"), child.0.id().to_string()).unwrap();
        }
        t.target = Some(child);
        t
    }

    fn pid(&self) -> u32 {
        self.target.as_ref().unwrap().0.id()
    }

    fn read(&self, i: usize, file: &str) -> u64 {
        std::fs::read_to_string(self.dirs[i].join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for CgroupTarget {
    fn drop(&mut self) {
        self.target = None;
        std::thread::sleep(Duration::from_millis(50));
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn cgroup_v1_or_skip() -> bool {
    if !netns_common::privileged_or_skip("cgroup stress") {
        return false;
    }
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!(
            "SKIPPED cgroup stress: this test sets up cgroup v1 hierarchies; the host has v2"
        );
        return false;
    }
    true
}

#[test]
fn cpu_stress_in_a_half_cpu_cgroup_is_charged_there_and_held_at_its_quota() {
    if !cgroup_v1_or_skip() {
        return;
    }
    let cg = CgroupTarget::new("cpu");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let (_agent, api, _out) = start_agent(dir.path());
    let body = format!(
        r#"{{"id":"cpu-1","experiment":"cg","target":{{"name":"t","pid":{}}},"fault":{{"cpu":{{"load":"80%"}}}},"ttl":"30s"}}"#,
        cg.pid()
    );
    let (status, text) = call(api, "POST", "/v1/faults", &body);
    assert_eq!(status, 201, "{text}");
    assert!(text.contains(r#""backend":"cgroup""#), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    let (u0, t0) = (cg.read(1, "cpuacct.usage"), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let usage = (cg.read(1, "cpuacct.usage") - u0) as f64 / 1e9 / t0.elapsed().as_secs_f64();
    let throttled = std::fs::read_to_string(cg.dirs[0].join("cpu.stat")).unwrap();
    // The target's quota governs the burners: squeezing it to 0.2 CPU mid-fault throttles
    // them to that.
    std::fs::write(cg.dirs[0].join("cpu.cfs_quota_us"), "20000").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (u1, t1) = (cg.read(1, "cpuacct.usage"), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let squeezed = (cg.read(1, "cpuacct.usage") - u1) as f64 / 1e9 / t1.elapsed().as_secs_f64();
    let throttled_after = std::fs::read_to_string(cg.dirs[0].join("cpu.stat")).unwrap();
    eprintln!("quota squeezed to 0.2 CPU mid-fault: cpuacct.usage shows {squeezed:.3} CPUs");
    assert!(
        squeezed <= 0.2 + 0.02,
        "the quota throttles the burners: {squeezed}"
    );
    let nr = |t: &str| -> u64 {
        t.lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(nr(&throttled_after) > nr(&throttled), "{throttled_after}");
    let (status, text) = call(api, "DELETE", "/v1/faults/cpu-1", "");
    assert_eq!(status, 200, "{text}");
    eprintln!(
        "cpu 80% in a 0.5-CPU cgroup: cpuacct.usage shows {usage:.3} CPUs (the quota is 0.500); cpu.stat: {}",
        throttled.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    // Every CPU-second the burners used was charged to the target's cgroup: the cgroup's
    // accounting and the burners' own /proc accounting agree (the target itself sleeps).
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let state: serde_json::Value = serde_json::from_str(body).unwrap();
    let m = &state["effect"]["metrics"];
    let (burned, charged) = (
        m["utilization"].as_f64().unwrap() * m["workers"].as_f64().unwrap(),
        m["cgroup_cpu_usage"].as_f64().unwrap(),
    );
    eprintln!(
        "over the whole fault: burners used {burned:.3} CPU, the cgroup was charged {charged:.3}"
    );
    assert!(
        (burned - charged).abs() <= 0.03,
        "burned {burned}, charged {charged}"
    );
    // 0.8 CPU asked of a 0.5-CPU cgroup: its usage sits near the quota, and the quota
    // throttled the burners (nr_throttled grew while they ran).
    assert!(
        (0.45..=0.52).contains(&usage),
        "cgroup usage {usage}, quota 0.5"
    );
    assert!(nr(&throttled) > 0, "throttled at the quota: {throttled}");
}

#[test]
fn memory_stress_shows_in_the_target_cgroups_memory_usage_and_is_released() {
    if !cgroup_v1_or_skip() {
        return;
    }
    let cg = CgroupTarget::new("mem");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let (_agent, api, _out) = start_agent(dir.path());
    let before = cg.read(2, "memory.usage_in_bytes");
    let body = format!(
        r#"{{"id":"mem-1","experiment":"cg","target":{{"name":"t","pid":{}}},"fault":{{"memory":{{"size":"128MiB"}}}},"ttl":"30s"}}"#,
        cg.pid()
    );
    let (status, text) = call(api, "POST", "/v1/faults", &body);
    assert_eq!(status, 201, "{text}");
    let during = cg.read(2, "memory.usage_in_bytes");
    let (status, text) = call(api, "DELETE", "/v1/faults/mem-1", "");
    assert_eq!(status, 200, "{text}");
    let after = cg.read(2, "memory.usage_in_bytes");
    eprintln!(
        "memory 128MiB: target cgroup memory.usage_in_bytes {} -> {} -> {} MiB after revert",
        before >> 20,
        during >> 20,
        after >> 20
    );
    assert!(during - before >= 127 << 20, "{before} -> {during}");
    assert!(during - after >= 127 << 20, "released: {during} -> {after}");
}

/// The dead man's switch for stress (issue 17): burner threads and the memfd die with a
/// SIGKILLed agent, so the target's cgroup stops being charged at once, long before the
/// 30 s lease ends, with no agent and nothing for the watchdog to do.
#[test]
fn cpu_and_memory_stress_end_at_once_when_the_agent_is_killed() {
    if !cgroup_v1_or_skip() {
        return;
    }
    let cg = CgroupTarget::new("kill");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let (mut agent, api, _out) = start_agent(dir.path());
    let mem_before = cg.read(2, "memory.usage_in_bytes");
    for fault in [
        r#"{"cpu":{"load":"80%"}}"#,
        r#"{"memory":{"size":"64MiB"}}"#,
    ] {
        let id = if fault.contains("cpu") {
            "cpu-k"
        } else {
            "mem-k"
        };
        let body = format!(
            r#"{{"id":"{id}","experiment":"cg","target":{{"name":"t","pid":{}}},"fault":{fault},"ttl":"30s"}}"#,
            cg.pid()
        );
        let (status, text) = call(api, "POST", "/v1/faults", &body);
        assert_eq!(status, 201, "{text}");
    }
    let cpu_rate = |over: Duration| {
        let u0 = cg.read(1, "cpuacct.usage");
        std::thread::sleep(over);
        (cg.read(1, "cpuacct.usage") - u0) as f64 / 1e9 / over.as_secs_f64()
    };
    let burning = cpu_rate(Duration::from_millis(500));
    let mem_during = cg.read(2, "memory.usage_in_bytes");
    agent.0.kill().unwrap();
    let killed = Instant::now();
    agent.0.wait().unwrap();
    let after_kill = cpu_rate(Duration::from_millis(500));
    let mem_after = cg.read(2, "memory.usage_in_bytes");
    eprintln!(
        "agent SIGKILLed: target cgroup CPU {burning:.3} -> {after_kill:.3} CPUs, memory {} -> {} MiB, measured within {:?} of the kill",
        mem_during >> 20,
        mem_after >> 20,
        killed.elapsed()
    );
    assert!(burning >= 0.4, "the burners ran: {burning}");
    assert!(
        after_kill <= 0.02,
        "the burners died with the agent: {after_kill}"
    );
    assert!(
        mem_during - mem_before >= 63 << 20,
        "{mem_before} -> {mem_during}"
    );
    assert!(
        mem_during - mem_after >= 63 << 20,
        "released: {mem_during} -> {mem_after}"
    );
}

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    common::call(addr, TOKEN, method, path, body)
}
