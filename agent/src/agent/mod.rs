//! The agent: faults by id, their leases, the journal and the proxies.
//!
//! [`Agent`] is what the controller's local mode embeds and what `chaos agent` serves
//! over HTTP. All state changes go through it:
//! - `apply` is idempotent on the fault id: a second apply with the same id (and the
//!   same request) returns the state of the first, whether it is still active or not;
//! - every applied fault has a lease; one task per fault sleeps until the lease's
//!   deadline and reverts the fault the moment it passes without a renewal;
//! - `revert` is idempotent; reverting an unknown id is not an error.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use faultline_spec::wire::{
    Capabilities, FaultId, FaultPhase, FaultRequest, FaultState, Lease, ObservedEffect,
    ResolvedTarget,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fault::{self, ActiveFault, FaultError};
use crate::journal::{self, Journal, JournalError, Record, RevertRecord};
use crate::metrics::Metrics;
use crate::protect::Protection;
use crate::proxy::{ProxyError, ProxyInfo, ProxyRegistry};

/// How many finished faults are remembered for idempotent apply and revert.
const FINISHED_KEPT: usize = 4096;

/// Agent failures, each mapped to an API status by [`AgentError::status`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The fault could not be built or applied.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// No fault with this id is known.
    #[error("no fault `{0}`")]
    NotFound(FaultId),
    /// The fault is no longer active (reverted, expired or failed): it cannot be renewed.
    #[error("fault `{id}` is {phase:?}, not active")]
    NotActive {
        /// The fault id.
        id: FaultId,
        /// Its final phase.
        phase: FaultPhase,
    },
    /// The id is already used by a different request.
    #[error("fault `{0}` already exists with a different request")]
    Conflict(FaultId),
    /// A lease must last longer than zero.
    #[error("ttl must be above zero")]
    ZeroTtl,
    /// The journal could not be written; nothing was applied.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Proxy management failed.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The watchdog could not be started: the agent does not run without it.
    #[error(transparent)]
    Watchdog(#[from] crate::watchdog::WatchdogError),
}

impl AgentError {
    /// The HTTP status and machine-readable code for the API.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            AgentError::Fault(FaultError::Invalid(_)) | AgentError::ZeroTtl => (422, "invalid"),
            AgentError::Fault(FaultError::Unsupported(_)) => (422, "unsupported"),
            AgentError::Fault(FaultError::TargetNotFound(_)) => (422, "target_not_found"),
            AgentError::Fault(FaultError::Protected(_)) => (403, "protected"),
            AgentError::Fault(FaultError::Io { .. }) => (500, "apply_failed"),
            AgentError::NotFound(_) => (404, "not_found"),
            AgentError::NotActive { .. } => (409, "not_active"),
            AgentError::Conflict(_) => (409, "conflict"),
            AgentError::Journal(_) => (500, "journal"),
            AgentError::Proxy(ProxyError::NotFound(_)) => (404, "not_found"),
            AgentError::Proxy(ProxyError::Conflict { .. }) => (409, "conflict"),
            AgentError::Proxy(ProxyError::Bind { .. }) => (500, "proxy"),
            AgentError::Watchdog(_) => (500, "watchdog"),
        }
    }
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the journal lives. `None` keeps no journal: only for an embedded agent whose
    /// faults all die with the process (proxies, stress); process faults then cannot be
    /// recovered after a crash.
    pub state_dir: Option<PathBuf>,
    /// Address proxies listen on (port 0).
    pub proxy_bind: IpAddr,
    /// What no request may touch.
    pub protection: Protection,
    /// With a state directory: how to start the watchdog that reverts the faults at
    /// their deadlines if this agent dies ([`crate::watchdog`]). `None` starts none.
    pub watchdog: Option<crate::watchdog::WatchdogCommand>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            proxy_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            protection: Protection::default(),
            watchdog: None,
        }
    }
}

/// What start-up found in the journal and did about it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Torn or corrupt journal lines that were skipped.
    pub problems: Vec<String>,
    /// Leftover faults reverted (or found to have died with the previous agent).
    pub reverted: Vec<String>,
    /// Leftovers that could not be reverted; kept in the journal for the next start.
    pub failed: Vec<String>,
}

/// Result of [`Agent::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// The fault's state.
    pub state: FaultState,
    /// `false` when the id was already known and nothing new was applied.
    pub created: bool,
}

struct Entry {
    state: FaultState,
    deadline: Instant,
    fault: Box<dyn ActiveFault>,
    renewed: Arc<Notify>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct Table {
    active: HashMap<FaultId, Entry>,
    /// Faults whose revert is running: no longer renewable, still listed (their effect is
    /// still on the host), with the phase they will end in.
    reverting: HashMap<FaultId, (FaultRequest, FaultState)>,
    finished: HashMap<FaultId, (FaultRequest, FaultState)>,
    finished_order: VecDeque<FaultId>,
}

impl Table {
    fn remember(&mut self, request: FaultRequest, state: FaultState) {
        let id = state.id.clone();
        if self.finished.insert(id.clone(), (request, state)).is_none() {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > FINISHED_KEPT {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

struct Inner {
    table: Mutex<Table>,
    apply_lock: tokio::sync::Mutex<()>,
    journal: Option<Mutex<Journal>>,
    proxies: ProxyRegistry,
    capabilities: Capabilities,
    protection: Protection,
    metrics: Metrics,
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The node agent. Cheap to clone; clones share one agent. When the last clone is
/// dropped, every active fault is reverted by its guard and every proxy stops.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("active", &self.list().len())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn same_request(a: &FaultRequest, b: &FaultRequest) -> bool {
    a.experiment == b.experiment && a.target == b.target && a.fault == b.fault
}

impl Agent {
    /// Starts an agent. With a state directory, the journal's leftovers from a previous
    /// agent are reverted first; torn or corrupt records are reported, never fatal.
    pub async fn start(config: AgentConfig) -> Result<(Agent, RecoveryReport), AgentError> {
        let mut report = RecoveryReport::default();
        let journal = match &config.state_dir {
            Some(dir) => {
                let dir = dir.clone();
                let watchdog = config.watchdog.clone();
                let (journal, r) = tokio::task::spawn_blocking(move || {
                    // A live watchdog of the previous agent stops before the journal is
                    // read, so each leftover is reverted once, by one of the two.
                    let previous = crate::watchdog::stop_previous(&dir);
                    if let Some(pid) = previous {
                        tracing::info!(pid, "took over from the previous agent's watchdog");
                    }
                    let recovered = recover(&dir)?;
                    if let Some(command) = watchdog {
                        let pid = crate::watchdog::spawn(&command, &dir)?;
                        tracing::info!(pid, "watchdog started");
                    }
                    Ok::<_, AgentError>(recovered)
                })
                .await
                .expect("journal recovery does not panic")?;
                report = r;
                Some(Mutex::new(journal))
            }
            None => None,
        };
        for p in &report.problems {
            tracing::warn!(problem = %p, "journal record skipped");
        }
        let agent = Agent {
            inner: Arc::new(Inner {
                table: Mutex::new(Table::default()),
                apply_lock: tokio::sync::Mutex::new(()),
                journal,
                proxies: ProxyRegistry::new(config.proxy_bind),
                capabilities: tokio::task::spawn_blocking(crate::capabilities::probe)
                    .await
                    .expect("capability probe does not panic"),
                protection: config.protection,
                metrics: Metrics::default(),
                cancel: CancellationToken::new(),
            }),
        };
        Ok((agent, report))
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// What this host can do, probed when the agent started (the preflight answer and
    /// the basis of backend selection, so both always agree).
    pub fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    /// Creates a proxy (local mode: one per upstream edge) and returns where it listens.
    pub async fn create_proxy(
        &self,
        id: &str,
        upstream: SocketAddr,
    ) -> Result<SocketAddr, AgentError> {
        Ok(self.inner.proxies.create(id, upstream).await?)
    }

    /// Stops a proxy and closes its connections.
    pub fn remove_proxy(&self, id: &str) -> Result<(), AgentError> {
        Ok(self.inner.proxies.remove(id)?)
    }

    /// Every proxy.
    pub fn proxies(&self) -> Vec<ProxyInfo> {
        self.inner.proxies.list()
    }

    /// Applies a fault with a lease of `request.ttl`. Idempotent on `request.id`.
    pub async fn apply(&self, request: FaultRequest) -> Result<ApplyOutcome, AgentError> {
        if request.ttl.std().is_zero() {
            return Err(AgentError::ZeroTtl);
        }
        let _serial = self.inner.apply_lock.lock().await;
        if let Some(existing) = self.existing(&request)? {
            return Ok(ApplyOutcome {
                state: existing,
                created: false,
            });
        }
        let kind = request.fault.name();
        let ctx = crate::backend::Context {
            proxies: self.inner.proxies.clone(),
            capabilities: self.inner.capabilities.clone(),
        };
        let prepared = match fault::build(&request, &ctx) {
            Ok(p) => p,
            Err(e) => {
                self.inner
                    .metrics
                    .apply_failures
                    .get_or_create(&Metrics::kind(kind))
                    .inc();
                return Err(e.into());
            }
        };
        let inner = self.inner.clone();
        let req = request.clone();
        let applied = tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
            let backend = prepared.backend();
            guard(&inner.protection, &req.target)?;
            let revert = prepared.revert_record(&req.target)?;
            // The record is on disk before the host is touched.
            if let Some(j) = &inner.journal {
                j.lock().expect("journal poisoned").append(&Record::Apply {
                    request: Box::new(req.clone()),
                    revert,
                    deadline_ms: Some(journal::deadline_in(req.ttl.std())),
                })?;
            }
            match prepared.apply(&req.target) {
                Ok(active) => Ok((backend, active)),
                Err(e) => {
                    if let Some(j) = &inner.journal {
                        j.lock()
                            .expect("journal poisoned")
                            .append(&Record::Revert { id: req.id.clone() })?;
                    }
                    Err(e.into())
                }
            }
        })
        .await
        .expect("fault apply does not panic");
        let (backend, active) = match applied {
            Ok(a) => a,
            Err(e) => {
                self.inner
                    .metrics
                    .apply_failures
                    .get_or_create(&Metrics::kind(kind))
                    .inc();
                return Err(e);
            }
        };
        let now = now_ms();
        let ttl = request.ttl;
        let state = FaultState {
            id: request.id.clone(),
            experiment: request.experiment.clone(),
            target: request.target.clone(),
            fault: request.fault.clone(),
            phase: FaultPhase::Active,
            lease: Lease {
                ttl,
                expires_at_ms: now + ttl.std().as_millis() as u64,
                renewals: 0,
            },
            applied_at_ms: now,
            backend: backend.to_string(),
            effect: active.observe(),
        };
        let renewed = Arc::new(Notify::new());
        let cancel = self.inner.cancel.child_token();
        let entry = Entry {
            state: state.clone(),
            deadline: Instant::now() + ttl.std(),
            fault: active,
            renewed: renewed.clone(),
            cancel: cancel.clone(),
        };
        self.inner
            .table
            .lock()
            .expect("fault table poisoned")
            .active
            .insert(request.id.clone(), entry);
        let m = &self.inner.metrics;
        m.applies.get_or_create(&Metrics::kind(kind)).inc();
        m.active.get_or_create(&Metrics::kind(kind)).inc();
        tokio::spawn(lease_watch(
            Arc::downgrade(&self.inner),
            request.id.clone(),
            renewed,
            cancel,
        ));
        tracing::info!(id = %request.id, kind, backend, ttl = %ttl, "fault applied");
        Ok(ApplyOutcome {
            state,
            created: true,
        })
    }

    /// Checks that [`Agent::apply`] would accept `request`, changing nothing: the same
    /// validation, backend selection and target checks, and the journal's revert record.
    /// Returns the backend that would apply it. This is the dry run
    /// (`POST /v1/faults?dryRun=true`): a request it accepts is not refused by `apply`
    /// for any reason it can see in advance.
    pub async fn check(&self, request: &FaultRequest) -> Result<&'static str, AgentError> {
        if request.ttl.std().is_zero() {
            return Err(AgentError::ZeroTtl);
        }
        self.existing(request)?;
        let ctx = crate::backend::Context {
            proxies: self.inner.proxies.clone(),
            capabilities: self.inner.capabilities.clone(),
        };
        let prepared = fault::build(request, &ctx)?;
        let target = request.target.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
            guard(&inner.protection, &target)?;
            prepared.revert_record(&target)?;
            prepared.check(&target)?;
            Ok(prepared.backend())
        })
        .await
        .expect("fault check does not panic")
    }

    fn existing(&self, request: &FaultRequest) -> Result<Option<FaultState>, AgentError> {
        let table = self.inner.table.lock().expect("fault table poisoned");
        if let Some(e) = table.active.get(&request.id) {
            if !same_request(&request_of(&e.state), request) {
                return Err(AgentError::Conflict(request.id.clone()));
            }
            let mut s = e.state.clone();
            s.effect = e.fault.observe();
            return Ok(Some(s));
        }
        if let Some((prior, state)) = table
            .reverting
            .get(&request.id)
            .or_else(|| table.finished.get(&request.id))
        {
            if !same_request(prior, request) {
                return Err(AgentError::Conflict(request.id.clone()));
            }
            return Ok(Some(state.clone()));
        }
        Ok(None)
    }

    /// Extends a lease to `ttl` from now. Faults whose expiry the kernel enforces refresh
    /// it too (an `nft` run of a few milliseconds, so async callers should call this from
    /// `spawn_blocking` as the API does); if that fails the lease is not extended and the
    /// error is returned.
    pub fn renew(&self, id: &str, ttl: faultline_spec::Duration) -> Result<FaultState, AgentError> {
        if ttl.std().is_zero() {
            return Err(AgentError::ZeroTtl);
        }
        let renewed = {
            let mut table = self.inner.table.lock().expect("fault table poisoned");
            match table.active.get_mut(id) {
                Some(e) => {
                    e.fault.renew(ttl.std())?;
                    e.deadline = Instant::now() + ttl.std();
                    e.state.lease.ttl = ttl;
                    e.state.lease.expires_at_ms = now_ms() + ttl.std().as_millis() as u64;
                    e.state.lease.renewals += 1;
                    e.renewed.notify_one();
                    let mut s = e.state.clone();
                    s.effect = e.fault.observe();
                    s
                }
                None => {
                    return Err(
                        match table.reverting.get(id).or_else(|| table.finished.get(id)) {
                            Some((_, s)) => AgentError::NotActive {
                                id: id.into(),
                                phase: s.phase,
                            },
                            None => AgentError::NotFound(id.into()),
                        },
                    );
                }
            }
        };
        // Journalled outside the table lock: a write, or now and then a compaction, must
        // not hold up every other call. A renewal that lands after the fault's revert
        // record is ignored by the journal's readers.
        if let Some(j) = &self.inner.journal {
            let record = Record::Renew {
                id: id.into(),
                deadline_ms: journal::deadline_in(ttl.std()),
            };
            if let Err(err) = j.lock().expect("journal poisoned").note(&record) {
                // The live agent still honours the renewal; only a watchdog acting after
                // the agent's death would end the fault at the older deadline.
                tracing::warn!(id, error = %err, "could not journal a renewal");
            }
        }
        Ok(renewed)
    }

    /// Reverts a fault. Returns its final state, the remembered state when it was already
    /// finished, or `None` for an id this agent does not know (nothing to revert).
    pub async fn revert(&self, id: &str) -> Result<Option<FaultState>, AgentError> {
        if let Some(s) = finish(&self.inner, id, FaultPhase::Reverted).await? {
            return Ok(Some(s));
        }
        let table = self.inner.table.lock().expect("fault table poisoned");
        Ok(table
            .reverting
            .get(id)
            .or_else(|| table.finished.get(id))
            .map(|(_, s)| s.clone()))
    }

    /// Active faults with their leases and effects so far, sorted by id.
    pub fn list(&self) -> Vec<FaultState> {
        let table = self.inner.table.lock().expect("fault table poisoned");
        let mut v: Vec<_> = table
            .active
            .values()
            .map(|e| {
                let mut s = e.state.clone();
                s.effect = e.fault.observe();
                s
            })
            .chain(table.reverting.values().map(|(_, s)| s.clone()))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The state of one fault, active or finished.
    pub fn get(&self, id: &str) -> Option<FaultState> {
        let table = self.inner.table.lock().expect("fault table poisoned");
        if let Some(e) = table.active.get(id) {
            let mut s = e.state.clone();
            s.effect = e.fault.observe();
            return Some(s);
        }
        table
            .reverting
            .get(id)
            .or_else(|| table.finished.get(id))
            .map(|(_, s)| s.clone())
    }

    /// Reverts every active fault (graceful shutdown).
    pub async fn revert_all(&self) -> Vec<FaultState> {
        let ids: Vec<FaultId> = self
            .inner
            .table
            .lock()
            .expect("fault table poisoned")
            .active
            .keys()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in ids {
            match finish(&self.inner, &id, FaultPhase::Reverted).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => tracing::error!(id, error = %e, "revert at shutdown failed"),
            }
        }
        out
    }
}

/// The request a state was applied with (for idempotency checks).
/// Refuses a target process that [`Protection`] guards; targets that are no process
/// (local mode's proxies) have nothing to guard.
fn guard(protection: &Protection, target: &ResolvedTarget) -> Result<(), FaultError> {
    if !crate::target::is_node_target(target) {
        return Ok(());
    }
    protection.check(crate::target::pid(target)?)
}

fn request_of(state: &FaultState) -> FaultRequest {
    FaultRequest {
        id: state.id.clone(),
        experiment: state.experiment.clone(),
        target: state.target.clone(),
        fault: state.fault.clone(),
        ttl: state.lease.ttl,
    }
}

/// Removes an active fault, reverts it and journals the revert.
async fn finish(
    inner: &Arc<Inner>,
    id: &str,
    phase: FaultPhase,
) -> Result<Option<FaultState>, AgentError> {
    let mut entry = {
        let mut table = inner.table.lock().expect("fault table poisoned");
        let Some(entry) = table.active.remove(id) else {
            return Ok(None);
        };
        // Until the revert has run, the fault stays visible (and idempotent) as reverting.
        let mut state = entry.state.clone();
        state.phase = phase;
        state.effect = entry.fault.observe();
        table
            .reverting
            .insert(id.to_string(), (request_of(&state), state));
        entry
    };
    entry.cancel.cancel();
    let kind = entry.state.fault.name();
    let inner2 = inner.clone();
    let id2 = id.to_string();
    let (effect, entry) = tokio::task::spawn_blocking(move || {
        let effect = entry.fault.revert();
        let journaled = match &inner2.journal {
            Some(j) => j
                .lock()
                .expect("journal poisoned")
                .append(&Record::Revert { id: id2 }),
            None => Ok(()),
        };
        ((effect, journaled), entry)
    })
    .await
    .expect("fault revert does not panic");
    let (effect, journaled) = effect;
    let effect: ObservedEffect = match effect {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(id, error = %e, "revert failed");
            ObservedEffect {
                summary: format!("revert failed: {e}"),
                ..entry.fault.observe()
            }
        }
    };
    if let Err(e) = journaled {
        tracing::error!(id, error = %e, "could not journal a revert; it will be repeated on restart");
    }
    let mut state = entry.state.clone();
    state.phase = phase;
    state.effect = effect;
    {
        let mut table = inner.table.lock().expect("fault table poisoned");
        table.reverting.remove(id);
        table.remember(request_of(&state), state.clone());
    }
    let m = &inner.metrics;
    m.active.get_or_create(&Metrics::kind(kind)).dec();
    match phase {
        FaultPhase::Expired => m.expiries.get_or_create(&Metrics::kind(kind)).inc(),
        _ => m.reverts.get_or_create(&Metrics::kind(kind)).inc(),
    };
    tracing::info!(id, ?phase, effect = %state.effect.summary, "fault finished");
    Ok(Some(state))
}

/// Sleeps until the fault's lease deadline; a renewal wakes it to sleep again. Reverts
/// the fault as soon as the deadline passes.
async fn lease_watch(
    inner: Weak<Inner>,
    id: FaultId,
    renewed: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        let deadline = {
            let Some(inner) = inner.upgrade() else { return };
            let table = inner.table.lock().expect("fault table poisoned");
            match table.active.get(&id) {
                Some(e) => e.deadline,
                None => return,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = renewed.notified() => continue,
            _ = tokio::time::sleep_until(deadline) => {
                let Some(inner) = inner.upgrade() else { return };
                let due = inner
                    .table
                    .lock()
                    .expect("fault table poisoned")
                    .active
                    .get(&id)
                    .is_some_and(|e| e.deadline <= Instant::now());
                if due {
                    tracing::warn!(id, "lease expired; reverting");
                    if let Err(e) = finish(&inner, &id, FaultPhase::Expired).await {
                        tracing::error!(id, error = %e, "revert after lease expiry failed");
                    }
                    return;
                }
            }
        }
    }
}

/// Reverts one journal leftover of an agent that is gone, saying what it did. The
/// starting agent and the watchdog share it.
pub(crate) fn undo_leftover(
    request: &FaultRequest,
    revert: &RevertRecord,
) -> Result<String, FaultError> {
    match revert {
        RevertRecord::DiesWithAgent => Ok(format!(
            "{} died with the previous agent",
            request.fault.name()
        )),
        RevertRecord::NftTable { netns, table } => {
            crate::nft::delete_leftover(netns, table).map(|deleted| {
                if deleted {
                    format!("deleted nft table {table}")
                } else {
                    format!("the namespace of nft table {table} is gone")
                }
            })
        }
        RevertRecord::RedirectTable { netns, table } => {
            crate::redirect::delete_leftover(netns, table)
                .map(|_| format!("deleted redirect table {table}"))
        }
        RevertRecord::TcShaping { netns, shaping } => crate::tc::undo_leftover(netns, shaping)
            .map(|_| format!("removed tc shaping {shaping:?}")),
        RevertRecord::UnpauseContainer { container_id } => crate::docker::Docker::from_env()
            .unpause(container_id)
            .map(|()| format!("unpaused container {container_id}")),
        RevertRecord::StartContainer { container_id } => crate::docker::Docker::from_env()
            .start(container_id)
            .map(|()| format!("started killed container {container_id}")),
        RevertRecord::ContinueProcess { pid, start_time } => {
            crate::process::continue_leftover(*pid, *start_time).map(|continued| {
                if continued {
                    format!("continued stopped process {pid}")
                } else {
                    format!("process {pid} is gone or was recycled; not signalled")
                }
            })
        }
    }
}

/// Reads the journal, reverts leftovers and starts a fresh journal.
fn recover(dir: &std::path::Path) -> Result<(Journal, RecoveryReport), JournalError> {
    let replay = journal::replay(dir)?;
    let mut report = RecoveryReport {
        problems: replay.problems,
        ..Default::default()
    };
    let mut keep = Vec::new();
    for (request, revert) in replay.leftovers {
        match undo_leftover(&request, &revert) {
            Ok(done) => report.reverted.push(format!("{}: {done}", request.id)),
            Err(e) => {
                report.failed.push(format!("{}: {e}", request.id));
                keep.push((request, revert));
            }
        }
    }
    for r in &report.reverted {
        tracing::info!(leftover = %r, "journal leftover reverted");
    }
    let journal = Journal::create(dir, &keep)?;
    Ok((journal, report))
}

#[cfg(test)]
mod tests;
