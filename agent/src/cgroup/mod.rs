//! Stress charged to the target's cgroup, so the target's own limits apply to it.
//!
//! - CPU: the agent's burner threads join the target's cgroup. cgroup v1 moves single
//!   threads (`tasks`), so they join the target's `cpu` and `cpuacct` cgroups and are
//!   throttled by its CFS quota and counted in its `cpuacct.usage`. `load` means what it
//!   means everywhere (a share of one CPU per worker); the target's quota caps it, so
//!   `load: 80%` under a 0.5-CPU quota holds the cgroup at its quota.
//! - Memory: pages are charged to the memory cgroup of the process that faults them in,
//!   so a helper process (the agent's own binary, re-executed) joins the target's memory
//!   cgroup and fills a memfd that the agent holds. The memory stays charged while the
//!   agent holds the memfd and is freed when it closes it: on revert, or when the agent
//!   dies.
//!
//! cgroup v2 forbids moving a thread into another process's domain cgroup, so there CPU
//! stress needs a helper process too; this agent refuses v2 cgroup stress with a clear
//! error rather than silently burning outside the target's cgroup.

pub mod memory;

use std::path::{Path, PathBuf};
use std::time::Instant;

use faultline_spec::CpuFault;
use faultline_spec::wire::{ObservedEffect, ResolvedTarget};

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;
use crate::stress::cpu::{CpuHandle, CpuStress};

/// Where cgroup hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// A process's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v1: directory per controller (`cpu`, `cpuacct`, `memory`, ...).
    V1(Vec<(String, PathBuf)>),
    /// cgroup v2: the one directory.
    V2(PathBuf),
}

impl Cgroups {
    /// Reads `/proc/PID/cgroup`.
    pub fn of_pid(pid: u32) -> Result<Self, FaultError> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|_| FaultError::TargetNotFound(format!("process {pid} does not exist")))?;
        Ok(Self::parse(&text, Path::new(ROOT)))
    }

    /// Parses `/proc/PID/cgroup` against hierarchies mounted under `root`.
    pub fn parse(text: &str, root: &Path) -> Self {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => continue,
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                v2 = Some(root.join(rel));
                continue;
            }
            for c in controllers.split(',') {
                // Combined hierarchies (`cpu,cpuacct`) are mounted under the joined name,
                // usually with a symlink per controller.
                let dir = [c, controllers]
                    .iter()
                    .map(|d| root.join(d))
                    .find(|d| d.exists())
                    .unwrap_or_else(|| root.join(c));
                v1.push((c.to_string(), dir.join(rel)));
            }
        }
        if v1.is_empty() || root.join("cgroup.controllers").exists() {
            if let Some(p) = v2 {
                return Cgroups::V2(p);
            }
        }
        Cgroups::V1(v1)
    }

    /// The v1 directory of `controller`.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroups::V1(list) => list
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, p)| p.as_path()),
            Cgroups::V2(_) => None,
        }
    }

    /// CPU quota in CPUs (`cfs_quota_us / cfs_period_us`, or v2 `cpu.max`); `None` when
    /// unlimited.
    pub fn cpu_quota(&self) -> Option<f64> {
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        match self {
            Cgroups::V1(_) => {
                let dir = self.v1("cpu")?;
                let quota: i64 = read(dir.join("cpu.cfs_quota_us"))?.trim().parse().ok()?;
                let period: i64 = read(dir.join("cpu.cfs_period_us"))?.trim().parse().ok()?;
                (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
            }
            Cgroups::V2(dir) => {
                let text = read(dir.join("cpu.max"))?;
                let mut it = text.split_whitespace();
                let quota: f64 = it.next()?.parse().ok()?;
                let period: f64 = it.next()?.parse().ok()?;
                Some(quota / period)
            }
        }
    }

    /// CPU time the cgroup has used, in seconds (`cpuacct.usage` or v2 `usage_usec`).
    pub fn cpu_usage_seconds(&self) -> Option<f64> {
        match self {
            Cgroups::V1(_) => {
                let ns: u64 = std::fs::read_to_string(self.v1("cpuacct")?.join("cpuacct.usage"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some(ns as f64 / 1e9)
            }
            Cgroups::V2(dir) => {
                let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let us: u64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse()
                    .ok()?;
                Some(us as f64 / 1e6)
            }
        }
    }

    /// Memory the cgroup is charged for, in bytes.
    pub fn memory_usage_bytes(&self) -> Option<u64> {
        let file = match self {
            Cgroups::V1(_) => self.v1("memory")?.join("memory.usage_in_bytes"),
            Cgroups::V2(dir) => dir.join("memory.current"),
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }
}

/// `cpu: {load, workers}` charged to the target's cgroup.
#[derive(Debug)]
pub struct CgroupCpu {
    fault: CpuFault,
}

impl CgroupCpu {
    /// Checks the request like the unprivileged burner does.
    pub fn new(fault: &CpuFault) -> Result<Self, FaultError> {
        CpuStress::new(fault)?;
        Ok(Self {
            fault: fault.clone(),
        })
    }
}

/// Burners inside the target's cgroup, with the cgroup's accounting at the start.
#[derive(Debug)]
pub struct CgroupCpuHandle {
    stress: CpuStress,
    burners: Option<CpuHandle>,
    cgroups: Cgroups,
    quota: Option<f64>,
    usage_at_start: Option<f64>,
    started: Instant,
}

impl CgroupCpuHandle {
    fn effect(&self, burner: ObservedEffect) -> ObservedEffect {
        let mut e = burner;
        let wall = self.started.elapsed().as_secs_f64();
        let usage = match (self.cgroups.cpu_usage_seconds(), self.usage_at_start) {
            (Some(now), Some(then)) if wall > 0.0 => Some((now - then) / wall),
            _ => None,
        };
        if let Some(u) = usage {
            e.metrics.insert("cgroup_cpu_usage".into(), u);
        }
        if let Some(q) = self.quota {
            e.metrics.insert("cgroup_cpu_quota".into(), q);
        }
        e.summary = format!(
            "{}; target cgroup used {} CPUs (quota {})",
            e.summary,
            usage.map_or("unknown".into(), |u| format!("{u:.3}")),
            self.quota.map_or("none".into(), |q| format!("{q:.3}"))
        );
        e
    }
}

/// The target's PID, its cgroups and the v1 `tasks` files the burner threads join.
fn cpu_tasks(
    target: &ResolvedTarget,
) -> Result<(u32, Cgroups, Vec<std::path::PathBuf>), FaultError> {
    let pid = crate::target::pid(target)?;
    let cgroups = Cgroups::of_pid(pid)?;
    let tasks = match &cgroups {
        Cgroups::V1(_) => ["cpu", "cpuacct"]
            .iter()
            .filter_map(|c| cgroups.v1(c))
            .map(|d| d.join("tasks"))
            .collect::<Vec<_>>(),
        Cgroups::V2(_) => {
            return Err(FaultError::Unsupported(
                "CPU stress inside a cgroup v2 target needs a helper process; this agent does it on cgroup v1 only".into(),
            ));
        }
    };
    Ok((pid, cgroups, tasks))
}

impl Fault for CgroupCpu {
    type Handle = CgroupCpuHandle;

    fn backend(&self) -> &'static str {
        "cgroup"
    }

    fn revert_record(&self, _: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Ok(RevertRecord::DiesWithAgent)
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        cpu_tasks(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<CgroupCpuHandle, FaultError> {
        let (pid, cgroups, tasks) = cpu_tasks(target)?;
        let quota = cgroups.cpu_quota();
        let base = CpuStress::new(&self.fault)?;
        let total = base.load() * f64::from(base.workers());
        let stress = base.in_cgroup(tasks, total);
        let target = ResolvedTarget {
            pid: Some(pid),
            ..target.clone()
        };
        let usage_at_start = cgroups.cpu_usage_seconds();
        let burners = stress.apply(&target)?;
        Ok(CgroupCpuHandle {
            stress,
            burners: Some(burners),
            cgroups,
            quota,
            usage_at_start,
            started: Instant::now(),
        })
    }

    fn observe(&self, h: &CgroupCpuHandle) -> ObservedEffect {
        match &h.burners {
            Some(b) => h.effect(h.stress.observe(b)),
            None => h.effect(ObservedEffect::default()),
        }
    }

    fn revert(&self, mut h: CgroupCpuHandle) -> Result<ObservedEffect, FaultError> {
        let burner = match h.burners.take() {
            Some(b) => h.stress.revert(b)?,
            None => ObservedEffect::default(),
        };
        Ok(h.effect(burner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines_map_each_controller_to_its_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cpu,cpuacct")).unwrap();
        std::fs::create_dir_all(dir.path().join("memory")).unwrap();
        let c = Cgroups::parse("4:memory:/a/b\n2:cpu,cpuacct:/svc\n0::/\n", dir.path());
        assert_eq!(c.v1("memory").unwrap(), dir.path().join("memory/a/b"));
        assert_eq!(c.v1("cpuacct").unwrap(), dir.path().join("cpu,cpuacct/svc"));
    }

    #[test]
    fn a_unified_hierarchy_is_v2() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let c = Cgroups::parse("0::/system.slice/x.service\n", dir.path());
        assert_eq!(c, Cgroups::V2(dir.path().join("system.slice/x.service")));
    }
}
