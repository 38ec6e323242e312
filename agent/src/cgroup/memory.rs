//! Memory stress charged to the target's memory cgroup.
//!
//! The agent creates a memfd and holds it. A helper process, the agent's own binary
//! re-executed with [`HELPER_ARG`], is moved into the target's memory cgroup *before* it
//! touches anything (it waits for a line on stdin), then opens the memfd through
//! `/proc/AGENT/fd/N` and writes the asked size into it. The pages are charged to the
//! cgroup that faulted them in, the target's, and stay charged after the helper exits,
//! for as long as the memfd is open: until revert, or until the agent dies.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use faultline_spec::MemoryFault;
use faultline_spec::wire::{ObservedEffect, ResolvedTarget};

use super::Cgroups;
use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;

/// First argument that makes the agent binary act as the memory-fill helper; the
/// binary's `main` hands such invocations to [`helper_main`].
pub const HELPER_ARG: &str = "__faultline-fill-memory";

/// Entry point of the helper: `HELPER_ARG PATH SIZE`. Waits for one line on stdin (sent
/// once it is in the target's cgroup), writes SIZE bytes to PATH, and returns the exit
/// code.
pub fn helper_main(args: &[String]) -> i32 {
    let (Some(path), Some(size)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: {HELPER_ARG} PATH SIZE");
        return 2;
    };
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != "go" {
        return 3;
    }
    let mut f = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("open {path}: {e}");
            return 4;
        }
    };
    let chunk = vec![0xA5u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if let Err(e) = f.write_all(&chunk[..n]) {
            eprintln!("fill: {e}");
            return 5;
        }
        left -= n as u64;
    }
    0
}

/// `memory: {size}` charged to the target's memory cgroup.
#[derive(Debug, Clone)]
pub struct CgroupMemory {
    size: u64,
    helper: PathBuf,
}

impl CgroupMemory {
    /// `helper` is the agent's own binary (it must dispatch [`HELPER_ARG`]).
    pub fn new(fault: &MemoryFault, helper: PathBuf) -> Result<Self, FaultError> {
        let size = fault.size.bytes();
        if size == 0 {
            return Err(FaultError::Invalid("memory size must be above 0".into()));
        }
        Ok(Self { size, helper })
    }
}

/// The memfd holding the charged pages; closing it (revert, drop, agent death) frees them.
#[derive(Debug)]
pub struct CgroupMemoryHandle {
    memfd: Option<File>,
    size: u64,
    cgroups: Cgroups,
    growth: u64,
}

impl CgroupMemoryHandle {
    fn effect(&self) -> ObservedEffect {
        let mut e = ObservedEffect::default();
        let held = if self.memfd.is_some() { self.size } else { 0 };
        e.metrics.insert("bytes_held".into(), held as f64);
        e.metrics
            .insert("cgroup_memory_growth_bytes".into(), self.growth as f64);
        if let Some(u) = self.cgroups.memory_usage_bytes() {
            e.metrics.insert("cgroup_memory_bytes".into(), u as f64);
        }
        e.summary = format!(
            "holding {} MiB charged to the target's memory cgroup (its usage grew by {} MiB)",
            self.size >> 20,
            self.growth >> 20
        );
        e
    }
}

impl CgroupMemory {
    /// The target's cgroups and the `cgroup.procs` file the helper joins, once the
    /// host is known to have the memory to hold.
    fn procs(&self, target: &ResolvedTarget) -> Result<(Cgroups, std::path::PathBuf), FaultError> {
        crate::stress::memory::check_available(self.size)?;
        let pid = crate::target::pid(target)?;
        let cgroups = Cgroups::of_pid(pid)?;
        let procs = match &cgroups {
            Cgroups::V1(_) => cgroups
                .v1("memory")
                .ok_or_else(|| FaultError::Unsupported("no v1 memory controller".into()))?
                .join("cgroup.procs"),
            Cgroups::V2(dir) => dir.join("cgroup.procs"),
        };
        Ok((cgroups, procs))
    }
}

impl Fault for CgroupMemory {
    type Handle = CgroupMemoryHandle;

    fn backend(&self) -> &'static str {
        "cgroup"
    }

    fn revert_record(&self, _: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Ok(RevertRecord::DiesWithAgent)
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        self.procs(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<CgroupMemoryHandle, FaultError> {
        let (cgroups, procs) = self.procs(target)?;
        let memfd: File =
            rustix::fs::memfd_create("faultline-memory", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| FaultError::io("memfd_create", e.into()))?
                .into();
        let before = cgroups.memory_usage_bytes().unwrap_or(0);
        let path = format!("/proc/{}/fd/{}", std::process::id(), memfd.as_raw_fd());
        let mut child = Command::new(&self.helper)
            .args([HELPER_ARG, &path, &self.size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                FaultError::io(
                    format!("start the memory helper {}", self.helper.display()),
                    e,
                )
            })?;
        let joined = std::fs::write(&procs, child.id().to_string());
        if let Err(e) = joined {
            let _ = child.kill();
            let _ = child.wait();
            return Err(FaultError::io(
                format!("move the memory helper into {}", procs.display()),
                e,
            ));
        }
        let mut stdin = child.stdin.take().expect("piped");
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| FaultError::io("wait for the memory helper", e))?;
        if !out.status.success() {
            return Err(FaultError::io(
                "memory helper",
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            ));
        }
        let filled = memfd
            .metadata()
            .map_err(|e| FaultError::io("stat the memfd", e))?
            .len();
        if filled != self.size {
            return Err(FaultError::Unsupported(format!(
                "the memory helper {} filled {filled} of {} bytes: the binary does not act as the helper ({HELPER_ARG})",
                self.helper.display(),
                self.size
            )));
        }
        let after = cgroups.memory_usage_bytes().unwrap_or(0);
        Ok(CgroupMemoryHandle {
            memfd: Some(memfd),
            size: self.size,
            cgroups,
            growth: after.saturating_sub(before),
        })
    }

    fn observe(&self, h: &CgroupMemoryHandle) -> ObservedEffect {
        h.effect()
    }

    fn revert(&self, mut h: CgroupMemoryHandle) -> Result<ObservedEffect, FaultError> {
        let e = h.effect();
        h.memfd = None;
        Ok(e)
    }
}
