//! The dead man's switch: a process that outlives a dead agent and ends its faults at
//! their leases' deadlines.
//!
//! nftables ends a partition by itself (set timeouts), and stress workers and proxies die
//! with the agent. A stopped process, tc shaping, a paused or killed container and a
//! redirect table do not: before the watchdog, they lasted until an agent started again
//! with the same state directory, which may be never. So an agent with a state directory
//! starts `chaos agent-watchdog`:
//!
//! - in its own process group, without `PR_SET_PDEATHSIG`, so a SIGKILL of the agent, or
//!   of the agent's process group, does not reach it (SIGHUP is ignored);
//! - holding a pidfd on the agent (opened after checking the agent's start time, so a
//!   recycled PID is never mistaken for it), which becomes readable when the agent dies;
//! - holding nothing else: the journal already has every revert record, and every lease
//!   deadline and renewal ([`crate::journal`]). Handing it a renewal costs the agent one
//!   unsynced `write(2)`.
//!
//! While the agent lives, the watchdog sleeps in `poll(2)`. When the agent dies it reads
//! the journal, reverts each leftover at its lease's deadline with the same code a
//! restarted agent uses, journals each revert, and exits when nothing is left.
//!
//! A restarted agent takes over before it reads the journal: it finds the previous
//! watchdog through `watchdog.pid` (PID and start time, re-checked), sends it SIGTERM,
//! and waits for it to exit. The watchdog reads signals through a signalfd between
//! reverts, so it never stops half way through one: every revert it made is journalled
//! before it exits, and the agent reverts the rest exactly once.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::Signal;

use crate::journal::{self, Journal, Record};
use crate::process::{ProcessRef, proc_stat};

/// The file in the state directory naming the live watchdog: `PID START_TIME`.
pub const PID_FILE: &str = "watchdog.pid";

/// The watchdog's log in the state directory (it also logs to stderr, which may be a
/// dead container's log pipe by the time it reverts anything).
pub const LOG_FILE: &str = "watchdog.log";

/// How often liveness is checked where there is no pidfd to poll (kernels before 5.3).
const NO_PIDFD_POLL: Duration = Duration::from_millis(100);

/// How long a starting agent waits for the previous watchdog to finish its current
/// revert and exit before it kills it.
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// Watchdog failures.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// Starting or talking to the watchdog process failed.
    #[error("watchdog: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The agent to watch is not there (or is not the process it was).
    #[error("watchdog: {0}")]
    Agent(String),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WatchdogError {
    let what = what.into();
    move |source| WatchdogError::Io { what, source }
}

/// How an agent starts its watchdog: `PROGRAM agent-watchdog ARGS... --state-dir DIR
/// --agent-pid PID --agent-start-time T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogCommand {
    /// The `chaos` executable.
    pub program: std::path::PathBuf,
    /// Arguments passed on (log format, `--leave-cgroups`).
    pub args: Vec<String>,
}

/// Stops the previous agent's watchdog, if one is alive, and waits until it has exited.
/// Call before reading the journal. Returns its PID.
pub fn stop_previous(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(start))) = (fields.next(), fields.next()) else {
        return None;
    };
    let pid = u32::try_from(pid).ok()?;
    let process = ProcessRef::open(pid, Some(start)).ok()?;
    if process.signal(Signal::TERM).is_err() {
        return None;
    }
    let deadline = Instant::now() + HANDOVER_WAIT;
    while alive(pid, start) {
        if Instant::now() >= deadline {
            tracing::error!(
                pid,
                "the previous watchdog did not exit within {HANDOVER_WAIT:?}; killing it"
            );
            let _ = process.signal(Signal::KILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(pid)
}

/// A process that exists, is not a zombie and still has its start time.
fn alive(pid: u32, start: u64) -> bool {
    proc_stat(pid).is_some_and(|s| s.start_time == start && s.state != 'Z')
}

/// Starts the watchdog for this agent, in its own process group. Waits until it says it
/// watches (so it holds its pidfd on a live agent), then records it in `watchdog.pid`.
/// Returns its PID.
pub fn spawn(how: &WatchdogCommand, dir: &Path) -> Result<u32, WatchdogError> {
    let me = std::process::id();
    let start = proc_stat(me)
        .ok_or_else(|| WatchdogError::Agent("cannot read the agent's own /proc entry".into()))?
        .start_time;
    let program = &how.program;
    let mut command = Command::new(program);
    command
        .arg("agent-watchdog")
        .args(&how.args)
        .arg("--state-dir")
        .arg(dir)
        .args(["--agent-pid", &me.to_string()])
        .args(["--agent-start-time", &start.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Its own process group: a signal to the agent's group (a terminal's Ctrl-C, a
    // supervisor's `kill -- -PGID`) does not reach it.
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(io(format!("start {}", program.display())))?;
    let pid = child.id();
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(io("read the watchdog's first line"))?;
    if line.trim() != "watching" {
        let status = child.wait().map_err(io("wait for the watchdog"))?;
        return Err(WatchdogError::Agent(format!(
            "the watchdog did not start ({status}); its stderr says why"
        )));
    }
    let child_start = proc_stat(pid)
        .ok_or_else(|| WatchdogError::Agent(format!("watchdog {pid} exited at once")))?
        .start_time;
    let tmp = dir.join(format!("{PID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{pid} {child_start}\n"))
        .and_then(|()| std::fs::rename(&tmp, dir.join(PID_FILE)))
        .map_err(io(format!("write {}", dir.join(PID_FILE).display())))?;
    // Reap it when it exits while the agent lives (it should not), and say so.
    std::thread::Builder::new()
        .name("watchdog-reaper".into())
        .spawn(move || match child.wait() {
            Ok(status) => tracing::warn!(pid, %status, "the watchdog exited while the agent runs"),
            Err(e) => tracing::warn!(pid, error = %e, "could not wait for the watchdog"),
        })
        .map_err(io("start the watchdog reaper thread"))?;
    Ok(pid)
}

/// Moves this process into the root cgroup of every hierarchy mounted under `root`
/// (`/sys/fs/cgroup`): the unified root on cgroup v2, each controller's root on v1 (and
/// the unified root of a hybrid layout). A container runtime stops a container by
/// killing every process in its cgroup, so a watchdog inside it would die with the agent
/// (`docker kill`, a pod deleted). Needs a writable host cgroup tree.
pub fn leave_cgroups(root: &Path) -> Result<(), WatchdogError> {
    let me = std::process::id().to_string();
    let mut roots = Vec::new();
    if root.join("cgroup.controllers").exists() {
        roots.push(root.to_path_buf());
    } else {
        let entries = std::fs::read_dir(root).map_err(io(format!("list {}", root.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            // `cpu` and `cpuacct` are symlinks to `cpu,cpuacct`: each hierarchy once.
            let real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if real_dir && path.join("cgroup.procs").exists() {
                roots.push(path);
            }
        }
    }
    if roots.is_empty() {
        return Err(WatchdogError::Agent(format!(
            "no cgroup hierarchy under {}",
            root.display()
        )));
    }
    for hierarchy in &roots {
        let procs = hierarchy.join("cgroup.procs");
        std::fs::write(&procs, &me).map_err(io(format!("join {}", procs.display())))?;
    }
    tracing::info!(?roots, "watchdog left the agent's cgroups");
    Ok(())
}

/// The watchdog process's main loop (`chaos agent-watchdog`). Returns when the agent's
/// faults are all reverted after its death, or on SIGTERM (a new agent takes over).
pub fn run(dir: &Path, agent_pid: u32, agent_start_time: u64) -> Result<(), WatchdogError> {
    // Stop signals are read between reverts, never delivered in the middle of one. SIGHUP
    // (a closed terminal) stays blocked and unread: it does not stop the watchdog.
    let mut mask = SigSet::empty();
    for s in [NixSignal::SIGTERM, NixSignal::SIGINT, NixSignal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| io("block signals")(e.into()))?;
    mask.remove(NixSignal::SIGHUP);
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| io("open a signalfd")(e.into()))?;
    let agent = ProcessRef::open(agent_pid, Some(agent_start_time))
        .map_err(|e| WatchdogError::Agent(format!("agent {agent_pid}: {e}")))?;
    let mut out = std::io::stdout();
    writeln!(out, "watching")
        .and_then(|()| out.flush())
        .map_err(io("tell the agent"))?;
    tracing::info!(agent = agent_pid, state_dir = %dir.display(), "watchdog watching");

    // While the agent lives: sleep until it dies or a signal comes. Without a pidfd to
    // poll, /proc is re-checked after each short timeout.
    let recheck = agent.pidfd().is_none().then_some(NO_PIDFD_POLL);
    loop {
        let (died, signalled) = wait(&signals, agent.pidfd(), recheck);
        if signalled {
            tracing::info!("watchdog stopped by a signal while the agent lives; exiting");
            return Ok(());
        }
        if died || !alive(agent_pid, agent_start_time) {
            break;
        }
    }
    tracing::warn!(
        agent = agent_pid,
        "the agent died; reverting its faults at their lease deadlines"
    );
    let mut failed = std::collections::BTreeSet::new();
    loop {
        let replay = journal::replay(dir)?;
        let now = journal::monotonic_ms();
        let mut next: Option<u64> = None;
        let mut journal_file: Option<Journal> = None;
        for (request, revert) in &replay.leftovers {
            if failed.contains(&request.id) {
                continue;
            }
            let deadline = replay.deadlines.get(&request.id).copied().unwrap_or(0);
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                continue;
            }
            match crate::agent::undo_leftover(request, revert) {
                Ok(done) => {
                    let j = match &mut journal_file {
                        Some(j) => j,
                        None => journal_file.insert(Journal::open(dir)?),
                    };
                    j.append(&Record::Revert {
                        id: request.id.clone(),
                    })?;
                    tracing::info!(id = %request.id, late_ms = now - deadline.min(now), "{done}");
                }
                Err(e) => {
                    tracing::error!(id = %request.id, error = %e, "revert failed; the next agent start retries it");
                    failed.insert(request.id.clone());
                }
            }
        }
        let Some(next) = next else {
            tracing::info!("nothing left to revert; watchdog exiting");
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            return Ok(());
        };
        let timeout = Duration::from_millis(next.saturating_sub(journal::monotonic_ms()));
        if wait(&signals, None, Some(timeout)).1 {
            tracing::info!("watchdog stopped by a signal; a new agent takes over");
            return Ok(());
        }
    }
}

/// Polls the signalfd and, when given, the agent's pidfd. Returns (agent died, signalled).
fn wait(
    signals: &SignalFd,
    agent: Option<std::os::fd::BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> (bool, bool) {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = vec![PollFd::new(signals, PollFlags::IN)];
    if let Some(fd) = agent {
        fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
    }
    match poll(&mut fds, ts.as_ref()) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return (false, false),
        Err(e) => {
            tracing::error!(error = %e, "poll failed; re-checking the agent");
            std::thread::sleep(NO_PIDFD_POLL);
            return (false, false);
        }
    }
    let signalled = !fds[0].revents().is_empty() && signals.read_signal().ok().flatten().is_some();
    let died = fds.get(1).is_some_and(|f| !f.revents().is_empty());
    (died, signalled)
}
