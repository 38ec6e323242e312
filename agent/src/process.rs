//! Process faults: SIGKILL, SIGTERM, and SIGSTOP continued at the end of the lease.
//!
//! Signals go through a pidfd where the kernel has `pidfd_open` (Linux 5.3+): once the
//! pidfd is open it names that one process, so a recycled PID is never signalled. The
//! process start time from `/proc/PID/stat` is read before and after opening the pidfd
//! to prove the pidfd refers to the process that was asked for, and it is journalled so
//! a restarted agent continues a stopped process only if it is still the same one.

use std::os::fd::OwnedFd;
use std::time::Instant;

use faultline_spec::Signal;
use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use rustix::process::{Pid, PidfdFlags};

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;

/// Facts about a process read from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Scheduler state: `R`, `S`, `D`, `T` (stopped), `Z`, ...
    pub state: char,
    /// Start time in clock ticks since boot; differs for a recycled PID.
    pub start_time: u64,
}

/// Reads state and start time of `pid`, `None` when it does not exist.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); starttime is field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// A handle on one specific process: a pidfd when available, else the PID plus the
/// start time, re-checked before every signal.
#[derive(Debug)]
pub struct ProcessRef {
    pid: u32,
    start_time: u64,
    pidfd: Option<OwnedFd>,
}

impl ProcessRef {
    /// Opens `pid`, which must still have `start_time` when given.
    pub fn open(pid: u32, start_time: Option<u64>) -> Result<Self, FaultError> {
        let gone = || FaultError::TargetNotFound(format!("process {pid} does not exist"));
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| FaultError::Invalid(format!("{pid} is not a valid PID")))?;
        let before = proc_stat(pid).ok_or_else(gone)?;
        if start_time.is_some_and(|s| s != before.start_time) {
            return Err(FaultError::TargetNotFound(format!(
                "process {pid} was recycled (start time changed)"
            )));
        }
        let pidfd = match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => Some(fd),
            Err(rustix::io::Errno::SRCH) => return Err(gone()),
            // ENOSYS (old kernel) or a seccomp filter: fall back to kill(2).
            Err(_) => None,
        };
        let after = proc_stat(pid).ok_or_else(gone)?;
        if after.start_time != before.start_time {
            return Err(FaultError::TargetNotFound(format!(
                "process {pid} was recycled while it was opened"
            )));
        }
        Ok(Self {
            pid,
            start_time: before.start_time,
            pidfd,
        })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time it was opened with.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Whether signals go through a pidfd.
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// The pidfd, when there is one: readable once the process has exited.
    pub fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Delivers `sig` to exactly this process.
    pub fn signal(&self, sig: rustix::process::Signal) -> Result<(), FaultError> {
        let what = format!("signal {sig:?} to process {}", self.pid);
        match &self.pidfd {
            Some(fd) => rustix::process::pidfd_send_signal(fd, sig)
                .map_err(|e| FaultError::io(what, e.into())),
            None => {
                // Without a pidfd, re-check the start time right before kill(2); the
                // remaining window is documented in docs/agent.md.
                if proc_stat(self.pid).map(|s| s.start_time) != Some(self.start_time) {
                    return Err(FaultError::TargetNotFound(format!(
                        "process {} is gone or recycled",
                        self.pid
                    )));
                }
                let pid = Pid::from_raw(self.pid as i32).expect("validated in open");
                rustix::process::kill_process(pid, sig).map_err(|e| FaultError::io(what, e.into()))
            }
        }
    }
}

/// Continues a process stopped by an earlier agent, if it is still the same process.
/// Returns `Ok(false)` when the process is gone or was recycled (nothing to do).
pub fn continue_leftover(pid: u32, start_time: u64) -> Result<bool, FaultError> {
    match ProcessRef::open(pid, Some(start_time)) {
        Ok(p) => p.signal(rustix::process::Signal::CONT).map(|()| true),
        Err(FaultError::TargetNotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn to_rustix(sig: Signal) -> rustix::process::Signal {
    match sig {
        Signal::Kill => rustix::process::Signal::KILL,
        Signal::Term => rustix::process::Signal::TERM,
        Signal::Stop => rustix::process::Signal::STOP,
    }
}

fn signal_name(sig: Signal) -> &'static str {
    match sig {
        Signal::Kill => "SIGKILL",
        Signal::Term => "SIGTERM",
        Signal::Stop => "SIGSTOP",
    }
}

/// Sends one signal to the target's PID; SIGSTOP is continued on revert.
#[derive(Debug)]
pub struct SignalFault {
    signal: Signal,
}

impl SignalFault {
    /// A fault delivering `signal`.
    pub fn new(signal: Signal) -> Self {
        Self { signal }
    }
}

/// The applied signal: the process handle, kept open so SIGCONT reaches the same process.
#[derive(Debug)]
pub struct SignalHandle {
    process: ProcessRef,
    signal: Signal,
    delivered_at: Instant,
    /// The state `/proc` showed once the signal settled (`T` for a stopped process).
    state_after: Option<char>,
    /// The state after SIGCONT, once the fault is reverted.
    state_resumed: Option<char>,
    continued: bool,
}

impl SignalHandle {
    fn effect(&self) -> ObservedEffect {
        let mut effect = ObservedEffect {
            signal: Some(self.signal),
            ..Default::default()
        };
        let held = self.delivered_at.elapsed().as_secs_f64();
        effect
            .metrics
            .insert("pid".into(), f64::from(self.process.pid()));
        effect.metrics.insert("delivered".into(), 1.0);
        effect.metrics.insert(
            "pidfd".into(),
            if self.process.has_pidfd() { 1.0 } else { 0.0 },
        );
        let state_name = |s: Option<char>| s.map_or("gone".to_string(), |c| c.to_string());
        let state = state_name(self.state_after);
        effect.summary = if self.signal == Signal::Stop {
            effect.metrics.insert("stopped_seconds".into(), held);
            effect.metrics.insert(
                "stopped".into(),
                if matches!(self.state_after, Some('T' | 't')) {
                    1.0
                } else {
                    0.0
                },
            );
            format!(
                "{} delivered to pid {}; state after: {state}; stopped {held:.2} s{}",
                signal_name(self.signal),
                self.process.pid(),
                if self.continued {
                    format!(", continued (state {})", state_name(self.state_resumed))
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "{} delivered to pid {}; state after: {state}",
                signal_name(self.signal),
                self.process.pid()
            )
        };
        effect
    }

    fn cont(&mut self) -> Result<(), FaultError> {
        if self.signal == Signal::Stop && !self.continued {
            self.continued = true;
            match self.process.signal(rustix::process::Signal::CONT) {
                // The process died while stopped: nothing is left to undo.
                Err(FaultError::TargetNotFound(_)) => {}
                Err(FaultError::Io { source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {}
                other => other?,
            }
        }
        Ok(())
    }
}

impl Drop for SignalHandle {
    fn drop(&mut self) {
        if let Err(e) = self.cont() {
            tracing::warn!(pid = self.process.pid(), error = %e, "could not continue a stopped process");
        }
    }
}

/// Waits briefly for the kernel to show the signal's effect in `/proc`, so the observed
/// state is what the signal did rather than a race.
fn observe_state(pid: u32, signal: Signal) -> Option<char> {
    let deadline = Instant::now() + std::time::Duration::from_millis(200);
    loop {
        let state = proc_stat(pid).map(|s| s.state);
        let settled = match (signal, state) {
            (_, None) => true,
            (Signal::Stop, Some(c)) => c == 'T' || c == 't',
            (Signal::Kill, Some(c)) => c == 'Z' || c == 'X',
            (Signal::Term, Some(_)) => true,
        };
        if settled || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

impl Fault for SignalFault {
    type Handle = SignalHandle;

    fn backend(&self) -> &'static str {
        "signal"
    }

    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        let pid = crate::target::pid(target)?;
        if self.signal != Signal::Stop {
            return Ok(RevertRecord::DiesWithAgent);
        }
        let stat = proc_stat(pid)
            .ok_or_else(|| FaultError::TargetNotFound(format!("process {pid} does not exist")))?;
        Ok(RevertRecord::ContinueProcess {
            pid,
            start_time: stat.start_time,
        })
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        let pid = crate::target::pid(target)?;
        if pid == std::process::id() {
            return Err(FaultError::Invalid(
                "refusing to signal the agent itself".into(),
            ));
        }
        proc_stat(pid)
            .map(drop)
            .ok_or_else(|| FaultError::TargetNotFound(format!("process {pid} does not exist")))
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<SignalHandle, FaultError> {
        self.check(target)?;
        let pid = crate::target::pid(target)?;
        let process = ProcessRef::open(pid, None)?;
        process.signal(to_rustix(self.signal))?;
        let delivered_at = Instant::now();
        let state_after = observe_state(pid, self.signal);
        Ok(SignalHandle {
            process,
            signal: self.signal,
            delivered_at,
            state_after,
            state_resumed: None,
            // Only SIGSTOP has something to undo.
            continued: self.signal != Signal::Stop,
        })
    }

    fn observe(&self, handle: &SignalHandle) -> ObservedEffect {
        handle.effect()
    }

    fn revert(&self, mut handle: SignalHandle) -> Result<ObservedEffect, FaultError> {
        handle.cont()?;
        if self.signal == Signal::Stop {
            // The stop's own state stays the evidence; this says the process runs again.
            handle.state_resumed = proc_stat(handle.process.pid()).map(|s| s.state);
        }
        Ok(handle.effect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> Reaped {
        Reaped(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn target(pid: u32) -> ResolvedTarget {
        ResolvedTarget {
            name: "sleeper".into(),
            pid: Some(pid),
            ..Default::default()
        }
    }

    #[test]
    fn sigstop_stops_the_process_and_revert_continues_it() {
        let child = sleeper();
        let pid = child.0.id();
        let fault = SignalFault::new(Signal::Stop);
        let record = fault.revert_record(&target(pid)).unwrap();
        assert!(matches!(record, RevertRecord::ContinueProcess { pid: p, .. } if p == pid));
        let handle = fault.apply(&target(pid)).unwrap();
        assert_eq!(proc_stat(pid).unwrap().state, 'T');
        let effect = fault.observe(&handle);
        assert_eq!(effect.signal, Some(Signal::Stop));
        assert!(
            effect.summary.contains("state after: T"),
            "{}",
            effect.summary
        );
        assert_eq!(effect.metrics["stopped"], 1.0);
        let effect = fault.revert(handle).unwrap();
        let state = proc_stat(pid).unwrap().state;
        assert!(state == 'S' || state == 'R', "state after SIGCONT: {state}");
        // The final evidence still shows what the stop did, and that it was undone.
        assert!(
            effect.summary.contains("state after: T")
                && (effect.summary.contains("continued (state S)")
                    || effect.summary.contains("continued (state R)")),
            "{}",
            effect.summary
        );
        assert_eq!(effect.metrics["stopped"], 1.0);
    }

    #[test]
    fn a_dropped_sigstop_handle_continues_the_process() {
        let child = sleeper();
        let pid = child.0.id();
        let fault = SignalFault::new(Signal::Stop);
        let handle = fault.apply(&target(pid)).unwrap();
        assert_eq!(proc_stat(pid).unwrap().state, 'T');
        drop(handle);
        assert_ne!(proc_stat(pid).unwrap().state, 'T');
    }

    #[test]
    fn sigkill_kills_the_process() {
        let mut child = sleeper();
        let pid = child.0.id();
        let fault = SignalFault::new(Signal::Kill);
        let handle = fault.apply(&target(pid)).unwrap();
        let status = child.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert_eq!(fault.observe(&handle).signal, Some(Signal::Kill));
    }

    #[test]
    fn a_leftover_with_a_different_start_time_is_not_continued() {
        let child = sleeper();
        let pid = child.0.id();
        let stat = proc_stat(pid).unwrap();
        ProcessRef::open(pid, None)
            .unwrap()
            .signal(rustix::process::Signal::STOP)
            .unwrap();
        // A recycled PID has another start time: it must not be touched.
        assert!(!continue_leftover(pid, stat.start_time + 1).unwrap());
        assert_eq!(observe_state(pid, Signal::Stop), Some('T'));
        assert!(continue_leftover(pid, stat.start_time).unwrap());
        assert_ne!(proc_stat(pid).unwrap().state, 'T');
    }

    #[test]
    fn a_missing_pid_is_target_not_found() {
        let fault = SignalFault::new(Signal::Term);
        // PIDs above pid_max never exist.
        let err = fault.apply(&target(i32::MAX as u32)).unwrap_err();
        assert!(matches!(err, FaultError::TargetNotFound(_)), "{err}");
    }
}
