//! The local launcher: starts the fleet as child processes of the `chaos` binary, wires every
//! upstream edge through an address the caller chooses, supervises restarts and stops
//! everything cleanly.
//!
//! ```no_run
//! use faultline_fleet::{Fleet, LaunchOptions, Service};
//!
//! # async fn demo() -> Result<(), faultline_fleet::LaunchError> {
//! let options = LaunchOptions::current_exe()?.env("FL_RESILIENCE", "on");
//! // Route every edge through a proxy; here the identity (direct wiring).
//! let fleet = Fleet::start_wired(options, |_edge, _replica, upstream| upstream).await?;
//! println!("gateway at {}", fleet.url(Service::Gateway));
//! println!("payments pid {:?}", fleet.pid(Service::Payments));
//! fleet.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Lifecycle guarantees:
//! - each child runs `<exe> fleet serve <service>` with `FL_BIND` and its `FL_UPSTREAM_*`
//!   variables set, and prints one JSON line `{"event":"listening",...,"addr":...}` on stdout
//!   once its listener is bound; [`Fleet::start_wired`] returns only when every service has;
//! - a service runs one replica unless [`LaunchOptions::replicas`] asks for more; each
//!   replica is a process with its own address, named `<service>-<n>` (n from 1; plain
//!   `<service>` when it is the only one), and a dependant dials all of them (a
//!   comma-separated `FL_UPSTREAM_*` list its balancer spreads calls over);
//! - a child that exits on its own is restarted on the same address with exponential back-off
//!   ([`RestartPolicy`]); [`Fleet::pid`] always reads the current process;
//! - every child has `PR_SET_PDEATHSIG(SIGKILL)`, so none outlives the launching thread even
//!   after a SIGKILL of the launcher;
//! - [`Fleet::stop`] sends SIGTERM and SIGKILL after [`LaunchOptions::stop_grace`]; dropping a
//!   [`Fleet`] without stopping it SIGKILLs every child at once (the error-path guard).

mod pdeathsig;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{EDGES, Edge, Service};

/// Why the fleet could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The path of the running executable could not be determined.
    #[error("cannot determine the current executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// The child process could not be spawned.
    #[error("spawning `{exe} fleet serve {service}` failed: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The service being started.
        service: Service,
        /// The OS error.
        source: std::io::Error,
    },
    /// The child exited or closed stdout before announcing its address.
    #[error("{service} exited before it was listening ({status}); see its stderr")]
    EarlyExit {
        /// The service.
        service: Service,
        /// How it exited, as text.
        status: String,
    },
    /// The child did not announce its address in time.
    #[error("{service} did not start listening within {timeout:?}")]
    StartTimeout {
        /// The service.
        service: Service,
        /// The configured start timeout.
        timeout: Duration,
    },
    /// The child's first stdout line is not the expected announcement.
    #[error("{service} printed an unexpected first line {line:?}")]
    BadAnnouncement {
        /// The service.
        service: Service,
        /// The line as read.
        line: String,
    },
    /// Reading the child's stdout failed.
    #[error("reading {service}'s stdout failed: {source}")]
    Io {
        /// The service.
        service: Service,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Creating the log directory or file failed.
    #[error("opening log file {path}: {source}")]
    LogFile {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The service is held down by [`Fleet::stop_service`], or was never started.
    #[error("{0} is not running")]
    NotRunning(Service),
}

/// Where a child's stderr (its logs) goes.
#[derive(Debug, Clone, Default)]
pub enum ChildLogs {
    /// The launcher's own stderr.
    #[default]
    Inherit,
    /// Nowhere.
    Discard,
    /// `<dir>/<service>.log`, appended across restarts.
    Dir(PathBuf),
}

/// How crashed services are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Delay before the first restart after a crash.
    pub initial_backoff: Duration,
    /// Upper bound of the doubling delay.
    pub max_backoff: Duration,
    /// A child that ran at least this long resets the delay to `initial_backoff`.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl RestartPolicy {
    /// The delay after `delay`: doubled, capped at `max_backoff`.
    pub fn next(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_backoff)
    }
}

/// What to start and how.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The `chaos` executable to run as `<exe> fleet serve <service>`.
    pub exe: PathBuf,
    /// The loopback (or other local) address every service binds; ports are chosen by the OS.
    pub bind_ip: IpAddr,
    /// Environment overrides for every service (e.g. `FL_RESILIENCE=off`).
    pub env: Vec<(String, String)>,
    /// Environment overrides for one service, applied after [`LaunchOptions::env`].
    pub service_env: BTreeMap<Service, Vec<(String, String)>>,
    /// Replicas per service; one when absent.
    pub replicas: BTreeMap<Service, u32>,
    /// Where children's logs go.
    pub logs: ChildLogs,
    /// How long a child may take to announce its address.
    pub start_timeout: Duration,
    /// How long a child may take to exit after SIGTERM before it is SIGKILLed.
    pub stop_grace: Duration,
    /// Restart behaviour for crashed children.
    pub restart: RestartPolicy,
}

impl LaunchOptions {
    /// Options running `exe` (tests pass `env!("CARGO_BIN_EXE_chaos")`), on 127.0.0.1, logs
    /// inherited, 10 s start timeout, 5 s stop grace.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        LaunchOptions {
            exe: exe.into(),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            env: Vec::new(),
            service_env: BTreeMap::new(),
            replicas: BTreeMap::new(),
            logs: ChildLogs::Inherit,
            start_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            restart: RestartPolicy::default(),
        }
    }

    /// Options running the current executable, which must be the `chaos` binary.
    pub fn current_exe() -> Result<Self, LaunchError> {
        std::env::current_exe()
            .map(Self::new)
            .map_err(LaunchError::CurrentExe)
    }

    /// Adds an environment override for every service.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds an environment override for one service.
    pub fn service_env(
        mut self,
        service: Service,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.service_env
            .entry(service)
            .or_default()
            .push((key.into(), value.into()));
        self
    }

    /// Runs `n` replicas of `service` (at least one).
    pub fn replicas(mut self, service: Service, n: u32) -> Self {
        self.replicas.insert(service, n.max(1));
        self
    }

    /// Turns every resilience policy on or off (`FL_RESILIENCE`).
    pub fn resilience(self, on: bool) -> Self {
        self.env("FL_RESILIENCE", if on { "on" } else { "off" })
    }

    /// Removes exactly the `disabled` policies (`FL_DISABLE`), and no others.
    pub fn disable(self, disabled: &crate::config::Disabled) -> Self {
        self.env("FL_RESILIENCE", "on")
            .env("FL_DISABLE", disabled.to_string())
    }

    /// Sets where children's logs go.
    pub fn logs(mut self, logs: ChildLogs) -> Self {
        self.logs = logs;
        self
    }
}

/// The announcement a service prints as its first stdout line.
#[derive(Debug, Deserialize)]
struct Announcement {
    event: String,
    addr: SocketAddr,
}

/// A spawned child that has announced its address.
struct Started {
    child: Child,
    addr: SocketAddr,
    since: Instant,
}

/// Everything needed to (re)spawn one service.
#[derive(Debug, Clone)]
struct SpawnSpec {
    service: Service,
    /// The replica's name: the service's, or `<service>-<n>` when it has several.
    name: String,
    exe: PathBuf,
    env: Vec<(String, String)>,
    logs: ChildLogs,
    start_timeout: Duration,
}

impl SpawnSpec {
    async fn spawn(&self, bind: SocketAddr) -> Result<Started, LaunchError> {
        let service = self.service;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("fleet")
            .arg("serve")
            .arg(service.name())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("FL_BIND", bind.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.stderr()?)
            // Its own process group: a Ctrl-C in the launcher's terminal reaches only the
            // launcher, which then stops the children in order.
            .process_group(0)
            .kill_on_drop(true);
        pdeathsig::kill_child_when_parent_exits(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            exe: self.exe.clone(),
            service,
            source,
        })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(LaunchError::Io {
                service,
                source: std::io::Error::other("stdout was not captured"),
            });
        };
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(self.start_timeout, reader.read_line(&mut line)).await;
        let addr = match read {
            Err(_) => {
                return Err(LaunchError::StartTimeout {
                    service,
                    timeout: self.start_timeout,
                });
            }
            Ok(Err(source)) => return Err(LaunchError::Io { service, source }),
            Ok(Ok(0)) => {
                let status = match tokio::time::timeout(Duration::from_secs(1), child.wait()).await
                {
                    Ok(Ok(s)) => s.to_string(),
                    _ => "stdout closed".to_string(),
                };
                return Err(LaunchError::EarlyExit { service, status });
            }
            Ok(Ok(_)) => parse_announcement(service, &line)?,
        };
        tokio::spawn(drain(reader));
        Ok(Started {
            child,
            addr,
            since: Instant::now(),
        })
    }

    fn stderr(&self) -> Result<Stdio, LaunchError> {
        match &self.logs {
            ChildLogs::Inherit => Ok(Stdio::inherit()),
            ChildLogs::Discard => Ok(Stdio::null()),
            ChildLogs::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| LaunchError::LogFile {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(format!("{}.log", self.name));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| LaunchError::LogFile { path, source })?;
                Ok(Stdio::from(file))
            }
        }
    }
}

/// Parses the first stdout line of `fleet serve`.
fn parse_announcement(service: Service, line: &str) -> Result<SocketAddr, LaunchError> {
    match serde_json::from_str::<Announcement>(line.trim()) {
        Ok(a) if a.event == "listening" => Ok(a.addr),
        _ => Err(LaunchError::BadAnnouncement {
            service,
            line: line.trim().to_string(),
        }),
    }
}

/// Reads and discards the rest of a child's stdout so it can never block on a full pipe; ends
/// at EOF, i.e. when the child exits.
async fn drain(mut reader: BufReader<ChildStdout>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// One supervised replica as seen by the [`Fleet`].
#[derive(Debug)]
struct Member {
    service: Service,
    name: String,
    addr: SocketAddr,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
    desired: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// A running fleet. Stop it with [`Fleet::stop`]; dropping it SIGKILLs every child.
#[derive(Debug)]
pub struct Fleet {
    members: Vec<Member>,
    upstreams: BTreeMap<Edge, Vec<SocketAddr>>,
    cancel: CancellationToken,
    stop_grace: Duration,
    start_timeout: Duration,
}

impl Fleet {
    /// Starts the fleet with every edge wired directly.
    pub async fn start(options: LaunchOptions) -> Result<Fleet, LaunchError> {
        Fleet::start_wired(options, |_, _, upstream| upstream).await
    }

    /// Starts the fleet, leaves first. Before a dependant starts, `wire` is called once per
    /// edge (in [`EDGES`] order within the dependant) and upstream replica, with the
    /// replica's name and real address, and returns the address the dependant should dial
    /// instead (e.g. a proxy that forwards to it). On error every service started so far
    /// is killed.
    pub async fn start_wired<F>(options: LaunchOptions, mut wire: F) -> Result<Fleet, LaunchError>
    where
        F: FnMut(Edge, &str, SocketAddr) -> SocketAddr,
    {
        let mut fleet = Fleet {
            members: Vec::with_capacity(Service::START_ORDER.len()),
            upstreams: BTreeMap::new(),
            cancel: CancellationToken::new(),
            stop_grace: options.stop_grace,
            start_timeout: options.start_timeout,
        };
        for service in Service::START_ORDER {
            let mut env = options.env.clone();
            for edge in service.upstreams() {
                let dials: Vec<SocketAddr> = fleet
                    .members
                    .iter()
                    .filter(|m| m.service == edge.to)
                    .map(|m| wire(*edge, &m.name, m.addr))
                    .collect();
                let list: Vec<String> = dials.iter().map(SocketAddr::to_string).collect();
                env.push((edge.to.upstream_env().to_string(), list.join(",")));
                fleet.upstreams.insert(*edge, dials);
            }
            if let Some(extra) = options.service_env.get(&service) {
                env.extend(extra.iter().cloned());
            }
            let replicas = options.replicas.get(&service).copied().unwrap_or(1).max(1);
            for replica in 1..=replicas {
                let spec = SpawnSpec {
                    service,
                    name: replica_name(service, replica, replicas),
                    exe: options.exe.clone(),
                    env: env.clone(),
                    logs: options.logs.clone(),
                    start_timeout: options.start_timeout,
                };
                // On error `fleet` is dropped here, which kills what already runs.
                let started = spec.spawn(SocketAddr::new(options.bind_ip, 0)).await?;
                fleet.adopt(spec, started, options.restart, options.stop_grace);
            }
        }
        Ok(fleet)
    }

    fn adopt(&mut self, spec: SpawnSpec, started: Started, policy: RestartPolicy, grace: Duration) {
        let pid = Arc::new(AtomicU32::new(started.child.id().unwrap_or(0)));
        let restarts = Arc::new(AtomicU32::new(0));
        let (desired, desired_rx) = watch::channel(true);
        let addr = started.addr;
        let service = spec.service;
        let name = spec.name.clone();
        tracing::info!(replica = %name, %addr, pid = pid.load(Ordering::Relaxed), "fleet service started");
        let supervisor = Supervisor {
            spec,
            addr,
            policy,
            grace,
            pid: Arc::clone(&pid),
            restarts: Arc::clone(&restarts),
            desired: desired_rx,
            cancel: self.cancel.child_token(),
        };
        let task = tokio::spawn(supervisor.run(started));
        self.members.push(Member {
            service,
            name,
            addr,
            pid,
            restarts,
            desired,
            task: Some(task),
        });
    }

    /// The replicas of `service`, in order. Every service is started before a Fleet is
    /// handed out, so there is at least one.
    fn members_of(&self, service: Service) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.service == service)
    }

    fn member(&self, service: Service) -> &Member {
        self.members_of(service)
            .next()
            .unwrap_or_else(|| unreachable!("fleet member {service} missing"))
    }

    /// The address `service` (its first replica) listens on. It stays the same across
    /// restarts.
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.member(service).addr
    }

    /// `http://<addr>` of `service` (its first replica).
    pub fn url(&self, service: Service) -> String {
        format!("http://{}", self.addr(service))
    }

    /// The `/metrics` URL of `service` (its first replica), for a scraper.
    pub fn metrics_url(&self, service: Service) -> String {
        format!("http://{}/metrics", self.addr(service))
    }

    /// Every replica of `service`, in order.
    pub fn replicas(&self, service: Service) -> Vec<Replica> {
        self.members_of(service)
            .map(|m| Replica {
                service,
                name: m.name.clone(),
                addr: m.addr,
                pid: match m.pid.load(Ordering::Acquire) {
                    0 => None,
                    pid => Some(pid),
                },
            })
            .collect()
    }

    /// Every replica with its `/metrics` URL, in start order: what a scraper scrapes,
    /// with the replica's name as its instance.
    pub fn metrics_targets(&self) -> Vec<Replica> {
        Service::START_ORDER
            .iter()
            .flat_map(|s| self.replicas(*s))
            .collect()
    }

    /// The fleet's edges, in wiring order.
    pub fn edges(&self) -> &'static [Edge] {
        &EDGES
    }

    /// The addresses the dependant of `edge` dials, one per upstream replica: what the
    /// `wire` callback returned.
    pub fn dial_addrs(&self, edge: Edge) -> &[SocketAddr] {
        self.upstreams.get(&edge).map_or(&[], Vec::as_slice)
    }

    /// The current PID of `service` (its first replica), or `None` while it is down
    /// (crashed and waiting for its restart, or held down by [`Fleet::stop_service`]).
    /// Changes after every restart.
    pub fn pid(&self, service: Service) -> Option<u32> {
        match self.member(service).pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// How many times the replicas of `service` were restarted after exiting on their own.
    pub fn restarts(&self, service: Service) -> u32 {
        self.members_of(service)
            .map(|m| m.restarts.load(Ordering::Acquire))
            .sum()
    }

    /// Stops every replica of `service` (SIGTERM, then SIGKILL after the grace) and keeps
    /// them down, without restarts, until [`Fleet::start_service`]. Returns once they have
    /// exited.
    pub async fn stop_service(&self, service: Service) {
        for m in self.members_of(service) {
            m.desired.send_replace(false);
        }
        let deadline = Instant::now() + self.stop_grace + Duration::from_secs(1);
        while self
            .members_of(service)
            .any(|m| m.pid.load(Ordering::Acquire) != 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILLs every replica of `service` (a crash, as a process fault would cause) and
    /// keeps them down, without restarts, until [`Fleet::start_service`]. Returns once they
    /// have exited.
    pub async fn kill_service(&self, service: Service) {
        for m in self.members_of(service) {
            m.desired.send_replace(false);
            if let Ok(pid) = i32::try_from(m.pid.load(Ordering::Acquire))
                && pid != 0
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        self.stop_service(service).await;
    }

    /// Starts the replicas of a service held down by [`Fleet::stop_service`] on their old
    /// addresses, and returns the first one's PID once every one accepts connections.
    pub async fn start_service(&self, service: Service) -> Result<u32, LaunchError> {
        for m in self.members_of(service) {
            m.desired.send_replace(true);
        }
        let deadline = Instant::now() + self.start_timeout;
        let mut first = None;
        for m in self.members_of(service) {
            loop {
                let pid = m.pid.load(Ordering::Acquire);
                if pid != 0 && tokio::net::TcpStream::connect(m.addr).await.is_ok() {
                    first.get_or_insert(pid);
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LaunchError::StartTimeout {
                        service,
                        timeout: self.start_timeout,
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(first.unwrap_or_else(|| unreachable!("fleet member {service} missing")))
    }

    /// Stops every service, dependants first: SIGTERM, then SIGKILL after the grace.
    /// Returns once every child has exited.
    pub async fn stop(mut self) {
        for service in Service::START_ORDER.iter().rev() {
            for m in self.members.iter_mut().filter(|m| m.service == *service) {
                m.desired.send_replace(false);
                if let Some(task) = m.task.take() {
                    // The supervisor terminates its child when the wish flips to false; a
                    // panicked supervisor's child was killed when the Child was dropped.
                    let _ = tokio::time::timeout(self.stop_grace + Duration::from_secs(2), async {
                        while m.pid.load(Ordering::Acquire) != 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                    .await;
                    task.abort();
                    let _ = task.await;
                }
            }
        }
        self.cancel.cancel();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
        for m in &mut self.members {
            // Synchronous, so it happens even when the runtime is going away; the supervisor
            // task's Child also has kill_on_drop as a second line.
            let pid = m.pid.swap(0, Ordering::AcqRel);
            if pid != 0 {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
            }
            if let Some(task) = m.task.take() {
                task.abort();
            }
        }
    }
}

/// Owns one child process: restarts it after crashes, stops it on request.
struct Supervisor {
    spec: SpawnSpec,
    addr: SocketAddr,
    policy: RestartPolicy,
    grace: Duration,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
    desired: watch::Receiver<bool>,
    cancel: CancellationToken,
}

impl Supervisor {
    async fn run(mut self, first: Started) {
        let mut current = Some(first);
        let mut backoff = self.policy.initial_backoff;
        // When a down service may be started next (crash back-off).
        let mut next_start = Instant::now();
        loop {
            match current.as_mut() {
                Some(running) => {
                    tokio::select! {
                        () = self.cancel.cancelled() => {
                            terminate(&mut running.child, self.grace).await;
                            self.pid.store(0, Ordering::Release);
                            return;
                        }
                        changed = self.desired.changed() => {
                            if changed.is_err() || !*self.desired.borrow_and_update() {
                                terminate(&mut running.child, self.grace).await;
                                self.pid.store(0, Ordering::Release);
                                current = None;
                                if changed.is_err() {
                                    return;
                                }
                            }
                        }
                        status = running.child.wait() => {
                            self.pid.store(0, Ordering::Release);
                            let ran = running.since.elapsed();
                            log_exit(&self.spec.name, &status);
                            if ran >= self.policy.reset_after {
                                backoff = self.policy.initial_backoff;
                            }
                            next_start = Instant::now() + backoff;
                            backoff = self.policy.next(backoff);
                            current = None;
                        }
                    }
                }
                None => {
                    if !*self.desired.borrow_and_update() {
                        tokio::select! {
                            () = self.cancel.cancelled() => return,
                            changed = self.desired.changed() => {
                                if changed.is_err() {
                                    return;
                                }
                                // An explicit start skips the crash back-off.
                                next_start = Instant::now();
                                backoff = self.policy.initial_backoff;
                            }
                        }
                        continue;
                    }
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        changed = self.desired.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            continue;
                        }
                        () = tokio::time::sleep_until(next_start) => {}
                    }
                    match self.spec.spawn(self.addr).await {
                        Ok(started) => {
                            let pid = started.child.id().unwrap_or(0);
                            self.pid.store(pid, Ordering::Release);
                            self.restarts.fetch_add(1, Ordering::AcqRel);
                            tracing::info!(replica = %self.spec.name, pid, "fleet service restarted");
                            current = Some(started);
                        }
                        Err(e) => {
                            tracing::warn!(replica = %self.spec.name, error = %e, "restart failed");
                            next_start = Instant::now() + backoff;
                            backoff = self.policy.next(backoff);
                        }
                    }
                }
            }
        }
    }
}

fn log_exit(replica: &str, status: &std::io::Result<ExitStatus>) {
    match status {
        Ok(s) => tracing::warn!(%replica, status = %s, "fleet service exited; restarting"),
        Err(e) => tracing::warn!(%replica, error = %e, "waiting for fleet service failed"),
    }
}

/// The name of replica `n` (from 1) of `of`: the service's own name when it is the only
/// one, so a one-replica fleet's names (log files, proxies, scrape instances) are the
/// service names.
pub fn replica_name(service: Service, n: u32, of: u32) -> String {
    if of <= 1 {
        service.name().to_string()
    } else {
        format!("{service}-{n}")
    }
}

/// One replica of a fleet service, as [`Fleet::replicas`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its service.
    pub service: Service,
    /// `<service>` or `<service>-<n>` ([`replica_name`]).
    pub name: String,
    /// The address it listens on, the same across restarts.
    pub addr: SocketAddr,
    /// Its current PID; `None` while it is down.
    pub pid: Option<u32>,
}

impl Replica {
    /// Its `/metrics` URL.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within `grace`; reaps it.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_line_parses_to_the_bound_address() {
        let line = r#"{"event":"listening","service":"payments","addr":"127.0.0.1:4321","pid":7}"#;
        assert_eq!(
            parse_announcement(Service::Payments, line).unwrap(),
            "127.0.0.1:4321".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn unexpected_first_line_is_a_clear_error() {
        let err = parse_announcement(Service::Orders, "hello\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("orders printed an unexpected first line")
        );
    }

    #[test]
    fn restart_backoff_doubles_up_to_its_cap() {
        let p = RestartPolicy::default();
        let mut d = p.initial_backoff;
        for _ in 0..20 {
            let n = p.next(d);
            assert!(n >= d && n <= p.max_backoff);
            d = n;
        }
        assert_eq!(d, p.max_backoff);
    }
}
