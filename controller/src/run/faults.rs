//! One task per fault: wait for its offset (and the steady state), apply it to every
//! resolved target under a lease, renew the lease every third of its TTL, revert at the
//! fault's end or at once when the run stops. The [`Ledger`] records what happened for
//! the report and tells the runner when something failed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use faultline_spec::Fault;
use faultline_spec::wire::{FaultPhase, FaultRequest, FaultState, ResolvedTarget};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::env::{AgentCallError, Environment, Placement};
use crate::report::{FaultApplication, FaultStatus};
use crate::slo::unix_ms;

/// Resolves targets again at injection time.
pub(super) struct Resolver(pub(super) Arc<dyn Environment>);

#[derive(Default)]
struct LedgerInner {
    /// Fault applications by (fault index key, target index).
    apps: BTreeMap<(String, usize), FaultApplication>,
    active: BTreeMap<String, usize>,
    finished_jobs: usize,
    last_reverted: Option<(Instant, i64)>,
    failure: Option<String>,
}

/// Shared record of every fault application.
#[derive(Clone, Default)]
pub(super) struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
    failed_flag: CancellationToken,
}

impl Ledger {
    fn with<R>(&self, f: impl FnOnce(&mut LedgerInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves when a fault could not be applied (an infrastructure failure).
    pub(super) async fn failed(&self) {
        self.failed_flag.cancelled().await;
    }

    /// Why the run failed, if a fault could not be applied.
    pub(super) fn failure(&self) -> Option<String> {
        self.with(|l| l.failure.clone())
    }

    fn fail(&self, why: String) {
        self.with(|l| {
            l.failure.get_or_insert(why);
        });
        self.failed_flag.cancel();
    }

    /// Whether every one of `jobs` fault tasks has finished (reverted, failed or skipped).
    pub(super) fn all_reverted(&self, jobs: usize) -> bool {
        self.with(|l| l.finished_jobs >= jobs)
    }

    /// When the last revert happened: monotonic (for timing) and Unix ms (for reports).
    pub(super) fn last_reverted(&self) -> Option<(Instant, i64)> {
        self.with(|l| l.last_reverted)
    }

    /// Names of the faults active now.
    pub(super) fn active_names(&self) -> Vec<String> {
        self.with(|l| {
            l.active
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Every application, in fault order.
    pub(super) fn applications(&self) -> Vec<FaultApplication> {
        self.with(|l| l.apps.values().cloned().collect())
    }

    fn record(&self, key: (String, usize), app: FaultApplication) {
        self.with(|l| {
            l.apps.insert(key, app);
        });
    }

    fn update(&self, key: &(String, usize), f: impl FnOnce(&mut FaultApplication)) {
        self.with(|l| {
            if let Some(a) = l.apps.get_mut(key) {
                f(a);
            }
        });
    }
}

/// A fault that was never applied.
pub(super) fn skipped(
    fault: &Fault,
    index: usize,
    target: &ResolvedTarget,
    experiment: &str,
) -> FaultApplication {
    FaultApplication {
        name: fault.name.clone(),
        id: fault_id(experiment, &fault.name, index),
        target: target.clone(),
        fault: fault.kind.clone(),
        planned_start_ms: super::ms(fault.after.0),
        planned_end_ms: super::ms(fault.after.0 + fault.duration.0),
        applied_ms: None,
        reverted_ms: None,
        status: FaultStatus::Skipped,
        backend: None,
        error: None,
        effect: Default::default(),
        effect_check: None,
    }
}

/// The status of a fault its agent would not apply: `refused` when its protection rules
/// forbid the target, `failed` otherwise.
pub(super) fn not_applied(e: &AgentCallError) -> FaultStatus {
    if matches!(e, AgentCallError::Protected { .. }) {
        FaultStatus::Refused
    } else {
        FaultStatus::Failed
    }
}

fn fault_id(experiment: &str, fault: &str, index: usize) -> String {
    // Unique per run: a retry of the same run must not collide with an old lease.
    let stamp = unix_ms(SystemTime::now());
    format!("{experiment}-{fault}-{index}-{stamp}")
}

/// The request that applies `fault` to one placement: the dry run checks exactly this
/// request with the agent, and the injection sends it.
pub(super) fn request(
    experiment: &str,
    fault: &Fault,
    index: usize,
    placement: &Placement,
    ttl: Duration,
) -> FaultRequest {
    FaultRequest {
        id: fault_id(experiment, &fault.name, index),
        experiment: experiment.to_string(),
        target: placement.target.clone(),
        fault: placement
            .fault
            .clone()
            .unwrap_or_else(|| fault.kind.clone()),
        ttl: ttl.into(),
    }
}

/// One fault's schedule and where it goes.
pub(super) struct FaultJob {
    pub(super) experiment: String,
    pub(super) fault: Fault,
    pub(super) initial: Vec<Placement>,
    pub(super) start: Instant,
    pub(super) end: Instant,
    pub(super) ttl: Duration,
    pub(super) go: watch::Receiver<bool>,
    pub(super) stop: CancellationToken,
    pub(super) ledger: Ledger,
}

struct Applied {
    key: (String, usize),
    id: String,
    placement: Placement,
}

impl FaultJob {
    /// Runs the fault to its end. Always leaves nothing applied behind when it returns.
    pub(super) async fn run(mut self, resolver: Resolver) {
        let name = self.fault.name.clone();
        for (i, p) in self.initial.iter().enumerate() {
            self.ledger.record(
                (name.clone(), i),
                skipped(&self.fault, i, &p.target, &self.experiment),
            );
        }
        let go = async {
            tokio::time::sleep_until(self.start).await;
            let _ = self.go.wait_for(|g| *g).await;
        };
        tokio::select! {
            () = go => {}
            () = self.stop.cancelled() => return self.finish(),
        }
        // Resolve again: a restarted service has a new PID.
        let placements = match resolver.0.resolve(&self.fault).await {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => self.initial.clone(),
            Err(e) => {
                self.ledger
                    .fail(format!("fault `{name}`: resolving its target failed: {e}"));
                return self.finish();
            }
        };
        let ttl = self.ttl;
        let mut applied = Vec::new();
        for (i, placement) in placements.into_iter().enumerate() {
            let key = (name.clone(), i);
            let request = request(&self.experiment, &self.fault, i, &placement, ttl);
            let id = request.id.clone();
            let mut app = skipped(&self.fault, i, &placement.target, &self.experiment);
            app.id = id.clone();
            match placement.agent.apply(request).await {
                Ok(state) => {
                    app.applied_ms = Some(unix_ms(SystemTime::now()));
                    app.backend = Some(state.backend.clone());
                    // What it measured so far; the revert's final figures replace it.
                    app.effect = state.effect;
                    app.status = FaultStatus::Reverted;
                    self.ledger.record(key.clone(), app);
                    self.ledger
                        .with(|l| *l.active.entry(name.clone()).or_default() += 1);
                    applied.push(Applied { key, id, placement });
                }
                Err(e) => {
                    app.status = not_applied(&e);
                    app.error = Some(e.to_string());
                    self.ledger.record(key, app);
                    self.ledger.fail(format!(
                        "fault `{name}` could not be applied to {}: {e}",
                        placement.target.name
                    ));
                    self.revert_all(&applied).await;
                    return self.finish();
                }
            }
        }
        // Hold the leases.
        let renew_every = (ttl / 3).max(Duration::from_millis(100));
        let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(self.end) => break,
                () = self.stop.cancelled() => break,
                _ = renew.tick() => {
                    for a in &applied {
                        match a.placement.agent.renew(&a.id, ttl).await {
                            Ok(()) => {}
                            Err(AgentCallError::NotActive { .. }) => {
                                self.ledger.update(&a.key, |app| app.status = FaultStatus::Expired);
                            }
                            Err(e) => {
                                tracing::warn!(fault = %name, error = %e, "lease renewal failed; the agent reverts at expiry");
                            }
                        }
                    }
                }
            }
        }
        self.revert_all(&applied).await;
        self.finish()
    }

    async fn revert_all(&self, applied: &[Applied]) {
        let name = &self.fault.name;
        let reverts = applied.iter().map(|a| async move {
            let result = a.placement.agent.revert(&a.id).await;
            (a, result)
        });
        for (a, result) in futures_util::future::join_all(reverts).await {
            let now = unix_ms(SystemTime::now());
            let mono = Instant::now();
            // A revert that failed leaves the fault on until its lease expires: recovery
            // is judged from then, not from the failed call.
            let (mono, now) = if result.is_err() {
                (
                    mono + self.ttl,
                    now + i64::try_from(self.ttl.as_millis()).unwrap_or(0),
                )
            } else {
                (mono, now)
            };
            self.ledger.with(|l| {
                if let Some(n) = l.active.get_mut(name) {
                    *n = n.saturating_sub(1);
                }
                l.last_reverted = Some(match l.last_reverted {
                    Some((m, t)) if m > mono => (m, t),
                    _ => (mono, now),
                });
            });
            self.ledger.update(&a.key, |app| {
                app.reverted_ms = Some(now);
                match result {
                    Ok(Some(state)) => apply_final(app, state),
                    Ok(None) => {}
                    Err(e) => {
                        app.error = Some(format!("revert: {e}; the lease expiry reverts it"));
                        app.status = FaultStatus::Expired;
                    }
                }
            });
        }
    }

    fn finish(self) {
        self.ledger.with(|l| l.finished_jobs += 1);
    }
}

fn apply_final(app: &mut FaultApplication, state: FaultState) {
    if state.phase == FaultPhase::Expired {
        app.status = FaultStatus::Expired;
    }
    if !state.backend.is_empty() {
        app.backend = Some(state.backend);
    }
    app.effect = state.effect;
}
