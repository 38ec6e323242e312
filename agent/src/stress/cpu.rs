//! CPU stress: burner threads running a short duty cycle.
//!
//! Each worker is an agent thread that, in every 10 ms period, burns CPU until its *own*
//! thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) reaches `load` of the wall time elapsed
//! since it started, then sleeps to the end of the period. Because the loop counts CPU
//! time rather than wall time, being preempted does not make it overshoot: time spent
//! off the CPU is not counted as burned. A deficit of at most 100 ms is carried
//! over, so a long stall does not turn into a 100% burst afterwards.
//!
//! Workers are pinned to the target's CPU affinity (`sched_getaffinity` on the target
//! PID), so they compete with the target for the same CPUs. What they burned is read
//! from the kernel's per-thread accounting in `/proc/self/task/TID/stat`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use faultline_spec::CpuFault;
use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use rustix::process::Pid;
use rustix::thread::CpuSet;

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;

/// Length of one duty cycle.
const PERIOD: Duration = Duration::from_millis(10);
/// CPU time the duty cycle may owe before the rest is forgiven: enough to make up for a
/// brief preemption, too little to turn a long stall into a burst.
const MAX_DEBT: Duration = Duration::from_millis(100);
/// Upper bound on workers per fault, so a typo cannot spawn a million threads.
const MAX_WORKERS: u32 = 1024;

/// CPU seconds a thread of this process has used, from `/proc/self/task/TID/stat`
/// (utime + stime, fields 14 and 15). `None` once the thread has exited.
pub fn thread_cpu_seconds(tid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) as f64 / rustix::param::clock_ticks_per_second() as f64)
}

fn thread_cpu_time() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs the duty cycle until `stop` is set.
fn burn(load: f64, stop: &AtomicBool) {
    let start_wall = Instant::now();
    let start_cpu = thread_cpu_time();
    // CPU time forgiven because the thread could not get it (preemption, contention).
    let mut forgiven = Duration::ZERO;
    let mut period_end = start_wall + PERIOD;
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let target = (period_end - start_wall).mul_f64(load);
        let used = thread_cpu_time() - start_cpu + forgiven;
        if target > used + MAX_DEBT {
            forgiven += target - used - MAX_DEBT;
        }
        loop {
            let used = thread_cpu_time() - start_cpu + forgiven;
            if used >= target || Instant::now() >= period_end {
                break;
            }
            for _ in 0..256 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let now = Instant::now();
        if now < period_end {
            std::thread::sleep(period_end - now);
        }
        period_end += PERIOD;
        let now = Instant::now();
        if now > period_end + PERIOD {
            // Slept far too long (suspended, heavily loaded): restart the grid from now.
            period_end = now + PERIOD;
        }
    }
}

/// `cpu: {load, workers}` as burner threads.
#[derive(Debug, Clone)]
pub struct CpuStress {
    load: f64,
    workers: u32,
    /// cgroup v1 `tasks` files each burner thread writes its TID to before burning, so
    /// its CPU time is charged to (and limited by) the target's cgroup.
    join_tasks: Vec<std::path::PathBuf>,
}

impl CpuStress {
    /// The same burners, charged to a cgroup: each thread joins every `tasks` file
    /// (cgroup v1 moves single threads) and `total_cpus` of CPU time is spread over
    /// enough workers that none burns more than one CPU.
    pub fn in_cgroup(mut self, tasks: Vec<std::path::PathBuf>, total_cpus: f64) -> Self {
        let workers = (total_cpus.ceil() as u32).max(self.workers).max(1);
        self.workers = workers.min(MAX_WORKERS);
        self.load = (total_cpus / f64::from(self.workers)).min(1.0);
        self.join_tasks = tasks;
        self
    }

    /// Load per worker, 0..1.
    pub fn load(&self) -> f64 {
        self.load
    }

    /// Number of burner threads.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Checks the request: load above zero, a sane number of workers.
    pub fn new(fault: &CpuFault) -> Result<Self, FaultError> {
        let load = fault.load.fraction();
        if load <= 0.0 {
            return Err(FaultError::Invalid("cpu load must be above 0%".into()));
        }
        let workers = fault.workers.unwrap_or(1);
        if workers == 0 || workers > MAX_WORKERS {
            return Err(FaultError::Invalid(format!(
                "cpu workers must be between 1 and {MAX_WORKERS}, got {workers}"
            )));
        }
        Ok(Self {
            load,
            workers,
            join_tasks: Vec::new(),
        })
    }
}

/// Running burner threads; stopping and joining them is the revert (also on drop).
#[derive(Debug)]
pub struct CpuHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<f64>>,
    tids: Vec<i32>,
    started: Instant,
    load: f64,
    pinned: Option<u32>,
    final_cpu: Option<(f64, Duration)>,
}

impl CpuHandle {
    /// Kernel thread ids of the burner threads, for reading their `/proc` accounting.
    pub fn thread_ids(&self) -> &[i32] {
        &self.tids
    }

    fn effect(&self, cpu: f64, wall: Duration) -> ObservedEffect {
        let workers = self.tids.len().max(1) as f64;
        let utilization = if wall.is_zero() {
            0.0
        } else {
            cpu / wall.as_secs_f64() / workers
        };
        let mut effect = ObservedEffect::default();
        effect.metrics.insert("cpu_seconds".into(), cpu);
        effect.metrics.insert("utilization".into(), utilization);
        effect.metrics.insert("target_load".into(), self.load);
        effect.metrics.insert("workers".into(), workers);
        if let Some(n) = self.pinned {
            effect.metrics.insert("pinned_cpus".into(), f64::from(n));
        }
        effect.summary = format!(
            "burned {cpu:.2} CPU-s over {:.2} s on {} worker(s) ({:.1}% per worker, asked {:.1}%)",
            wall.as_secs_f64(),
            self.tids.len(),
            utilization * 100.0,
            self.load * 100.0
        );
        effect
    }

    fn stop(&mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().unwrap_or(0.0))
            .sum()
    }
}

impl Drop for CpuHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CPUs the target may run on (the burners follow it), or `None` without a PID.
fn affinity(target: &ResolvedTarget) -> Result<Option<CpuSet>, FaultError> {
    Ok(match target.pid {
        Some(pid) => {
            let p = i32::try_from(pid)
                .ok()
                .and_then(Pid::from_raw)
                .ok_or_else(|| FaultError::Invalid(format!("{pid} is not a valid PID")))?;
            match rustix::thread::sched_getaffinity(Some(p)) {
                Ok(set) => Some(set),
                Err(rustix::io::Errno::SRCH) => {
                    return Err(FaultError::TargetNotFound(format!(
                        "process {pid} does not exist"
                    )));
                }
                Err(e) => {
                    return Err(FaultError::io(
                        format!("sched_getaffinity({pid})"),
                        e.into(),
                    ));
                }
            }
        }
        None => None,
    })
}

impl Fault for CpuStress {
    type Handle = CpuHandle;

    fn backend(&self) -> &'static str {
        "burner"
    }

    fn revert_record(&self, _: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Ok(RevertRecord::DiesWithAgent)
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        affinity(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<CpuHandle, FaultError> {
        let affinity = affinity(target)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let mut handle = CpuHandle {
            stop: stop.clone(),
            threads: Vec::new(),
            tids: Vec::new(),
            started: Instant::now(),
            load: self.load,
            pinned: affinity.as_ref().map(CpuSet::count),
            final_cpu: None,
        };
        for i in 0..self.workers {
            let stop = stop.clone();
            let tid_tx = tid_tx.clone();
            let load = self.load;
            let join_tasks = self.join_tasks.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cpu-burner-{i}"))
                .spawn(move || {
                    let tid = rustix::thread::gettid().as_raw_nonzero().get();
                    let pinned = match &affinity {
                        Some(set) => {
                            rustix::thread::sched_setaffinity(None, set).map_err(|e| e.to_string())
                        }
                        None => Ok(()),
                    }
                    .and_then(|()| {
                        join_tasks.iter().try_for_each(|f| {
                            std::fs::write(f, tid.to_string())
                                .map_err(|e| format!("join {}: {e}", f.display()))
                        })
                    });
                    let failed = pinned.is_err();
                    let _ = tid_tx.send((tid, pinned));
                    if failed {
                        return 0.0;
                    }
                    burn(load, &stop);
                    // Read the thread's own accounting before it exits and its /proc entry goes.
                    thread_cpu_seconds(tid).unwrap_or(0.0)
                })
                .map_err(|e| FaultError::io("spawn a cpu burner thread", e))?;
            handle.threads.push(thread);
            let (tid, pinned) = tid_rx
                .recv()
                .map_err(|_| FaultError::Invalid("a cpu burner thread died at start".into()))?;
            if let Err(e) = pinned {
                // Dropping the handle stops the workers already started.
                return Err(FaultError::io(
                    "pin a burner to the target's CPUs",
                    std::io::Error::other(e),
                ));
            }
            handle.tids.push(tid);
        }
        handle.started = Instant::now();
        Ok(handle)
    }

    fn observe(&self, handle: &CpuHandle) -> ObservedEffect {
        if let Some((cpu, wall)) = handle.final_cpu {
            return handle.effect(cpu, wall);
        }
        let cpu: f64 = handle
            .tids
            .iter()
            .filter_map(|t| thread_cpu_seconds(*t))
            .sum();
        handle.effect(cpu, handle.started.elapsed())
    }

    fn revert(&self, mut handle: CpuHandle) -> Result<ObservedEffect, FaultError> {
        let wall = handle.started.elapsed();
        let cpu = handle.stop();
        handle.final_cpu = Some((cpu, wall));
        Ok(handle.effect(cpu, wall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_spec::Percent;

    fn fault(load: f64, workers: Option<u32>) -> CpuFault {
        CpuFault {
            load: Percent::from_fraction(load).unwrap(),
            workers,
        }
    }

    #[test]
    fn zero_load_and_absurd_worker_counts_are_invalid() {
        assert!(CpuStress::new(&fault(0.0, None)).is_err());
        assert!(CpuStress::new(&fault(0.5, Some(0))).is_err());
        assert!(CpuStress::new(&fault(0.5, Some(MAX_WORKERS + 1))).is_err());
    }

    #[test]
    fn burners_are_pinned_to_the_target_affinity_and_stop_on_drop() {
        let stress = CpuStress::new(&fault(0.1, Some(2))).unwrap();
        let me = ResolvedTarget {
            name: "self".into(),
            pid: Some(std::process::id()),
            ..Default::default()
        };
        let mine = rustix::thread::sched_getaffinity(None).unwrap();
        let handle = stress.apply(&me).unwrap();
        let tids = handle.tids.clone();
        for tid in &tids {
            let set = rustix::thread::sched_getaffinity(Pid::from_raw(*tid)).unwrap();
            assert_eq!(set, mine);
        }
        drop(handle);
        for tid in &tids {
            assert!(
                thread_cpu_seconds(*tid).is_none(),
                "thread {tid} still runs"
            );
        }
    }
}
