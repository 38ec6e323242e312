//! The scheduler: fires experiments on their cron under a concurrency policy and the
//! target lock, records history and metrics, and takes new experiment sets at any time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use faultline_spec::{ConcurrencyPolicy, Experiment};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cron::{Clock, CronSchedule};
use super::history::{HistoryStore, RunRecord};
use super::lock::{LockPolicy, TargetLock, target_keys};
use super::metrics::ControllerMetrics;
use super::runner::{ExperimentRunner, RunContext, RunOutcome, Verdict};

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// What a run does when its targets are locked by another experiment.
    pub lock_policy: LockPolicy,
    /// Where run records go.
    pub history: HistoryStore,
    /// The wall clock cron is read on.
    pub clock: Clock,
    /// Passed to the runner as `RunContext::report_dir`.
    pub report_dir: Option<PathBuf>,
}

struct Entry {
    experiment: Experiment,
    cron: CronSchedule,
    policy: ConcurrencyPolicy,
    next: Option<DateTime<Utc>>,
    active: HashMap<u64, ActiveRun>,
}

struct ActiveRun {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

struct Finished {
    experiment: String,
    id: u64,
}

/// Runs scheduled experiments. Create it, then drive it with [`Scheduler::run`].
pub struct Scheduler<R> {
    runner: Arc<R>,
    config: SchedulerConfig,
    lock: TargetLock,
    metrics: Arc<ControllerMetrics>,
    entries: HashMap<String, Entry>,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    next_id: u64,
}

impl<R: ExperimentRunner> Scheduler<R> {
    /// A scheduler with no experiments yet.
    pub fn new(runner: Arc<R>, config: SchedulerConfig, metrics: Arc<ControllerMetrics>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            runner,
            config,
            lock: TargetLock::new(),
            metrics,
            entries: HashMap::new(),
            done_tx,
            done_rx,
            next_id: 0,
        }
    }

    /// Drive the scheduler until `shutdown` fires. Each message on `updates` is the
    /// complete new set of experiments (hot reload). On shutdown every active run is
    /// cancelled and awaited, so its faults are reverted before this returns.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<Vec<Experiment>>,
        shutdown: CancellationToken,
    ) {
        let mut updates_open = true;
        loop {
            let next = self.entries.values().filter_map(|e| e.next).min();
            let clock = self.config.clock;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                update = updates.recv(), if updates_open => match update {
                    Some(experiments) => self.apply(experiments),
                    None => updates_open = false,
                },
                Some(done) = self.done_rx.recv() => {
                    if let Some(entry) = self.entries.get_mut(&done.experiment) {
                        entry.active.remove(&done.id);
                    }
                }
                _ = async move {
                    match next {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => self.fire_due(),
            }
        }
        let mut handles = Vec::new();
        for entry in self.entries.values_mut() {
            for (_, run) in entry.active.drain() {
                run.cancel.cancel();
                handles.push(run.handle);
            }
        }
        for h in handles {
            let _ = h.await;
        }
    }

    /// Replace the experiment set. Experiments without a schedule are not run by the
    /// scheduler. Runs already under way continue; a changed schedule takes effect for
    /// the next fire time.
    fn apply(&mut self, experiments: Vec<Experiment>) {
        let now = self.config.clock.now();
        let mut old = std::mem::take(&mut self.entries);
        for experiment in experiments {
            let Some(schedule) = experiment.spec.schedule.clone() else {
                continue;
            };
            let cron = match CronSchedule::parse(&schedule.cron, schedule.time_zone.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(experiment = %experiment.name, "not scheduled: {e}");
                    continue;
                }
            };
            let name = experiment.name.clone();
            let active = old.remove(&name).map(|e| e.active).unwrap_or_default();
            let next = cron.next_after(now);
            tracing::info!(experiment = %name, next = ?next, "scheduled");
            self.entries.insert(
                name,
                Entry {
                    experiment,
                    cron,
                    policy: schedule.concurrency_policy,
                    next,
                    active,
                },
            );
        }
        // Removed experiments: let their active runs finish (they revert on their own).
        for (name, entry) in old {
            if !entry.active.is_empty() {
                tracing::info!(experiment = %name, "removed; its active run continues to the end");
            }
        }
    }

    fn fire_due(&mut self) {
        let now = self.config.clock.now();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.fire(&name, now);
        }
    }

    fn fire(&mut self, name: &str, now: DateTime<Utc>) {
        let id = self.next_id;
        self.next_id += 1;
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        // A controller that was stopped or suspended over several fire times runs once,
        // then continues with the next fire time after now (like a CronJob).
        entry.next = entry.cron.next_after(now);
        let mut previous = Vec::new();
        match entry.policy {
            ConcurrencyPolicy::Forbid if !entry.active.is_empty() => {
                tracing::info!(experiment = %name, "due, but the previous run is still active (Forbid): skipped");
                let outcome = RunOutcome {
                    verdict: Verdict::Skipped,
                    failing_slos: Vec::new(),
                    report_path: None,
                    report: None,
                };
                self.metrics
                    .observe(name, &outcome, 0.0, now.timestamp() as f64);
                return;
            }
            ConcurrencyPolicy::Replace => {
                for (_, run) in entry.active.drain() {
                    run.cancel.cancel();
                    previous.push(run.handle);
                }
            }
            _ => {}
        }
        let cancel = CancellationToken::new();
        let task = RunTask {
            runner: self.runner.clone(),
            experiment: entry.experiment.clone(),
            config: self.config.clone(),
            lock: self.lock.clone(),
            metrics: self.metrics.clone(),
            cancel: cancel.clone(),
        };
        let done_tx = self.done_tx.clone();
        let experiment = name.to_owned();
        let handle = tokio::spawn(async move {
            // Replace: the new run starts only once the replaced runs have reverted.
            for h in previous {
                let _ = h.await;
            }
            task.execute().await;
            let _ = done_tx.send(Finished { experiment, id });
        });
        entry.active.insert(id, ActiveRun { cancel, handle });
    }
}

struct RunTask<R> {
    runner: Arc<R>,
    experiment: Experiment,
    config: SchedulerConfig,
    lock: TargetLock,
    metrics: Arc<ControllerMetrics>,
    cancel: CancellationToken,
}

impl<R: ExperimentRunner> RunTask<R> {
    async fn execute(self) {
        let clock = self.config.clock;
        let name = self.experiment.name.clone();
        let keys = target_keys(&self.experiment);
        let requested = clock.now();
        let guard = match self.config.lock_policy {
            LockPolicy::Skip => match self.lock.try_acquire(&name, keys) {
                Ok(g) => Some(g),
                Err(holder) => {
                    tracing::info!(experiment = %name, %holder, "targets locked: skipped");
                    None
                }
            },
            LockPolicy::Wait => tokio::select! {
                g = self.lock.acquire(&name, keys) => Some(g),
                _ = self.cancel.cancelled() => None,
            },
        };
        let (outcome, started) = match guard {
            None => {
                let verdict = if self.cancel.is_cancelled() {
                    Verdict::Aborted
                } else {
                    Verdict::Skipped
                };
                let outcome = RunOutcome {
                    verdict,
                    failing_slos: Vec::new(),
                    report_path: None,
                    report: None,
                };
                (outcome, requested)
            }
            Some(guard) => {
                let started = clock.now();
                let context = RunContext {
                    report_dir: self.config.report_dir.clone(),
                    ..RunContext::default()
                };
                let outcome = self
                    .runner
                    .run(self.experiment.clone(), context, self.cancel.clone())
                    .await;
                drop(guard);
                (outcome, started)
            }
        };
        let finished = clock.now();
        let seconds = (finished - started)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics.observe(
            &name,
            &outcome,
            seconds,
            finished.timestamp_millis() as f64 / 1000.0,
        );
        let record = RunRecord {
            experiment: name.clone(),
            started,
            finished,
            verdict: outcome.verdict,
            failing_slos: outcome.failing_slos,
            report_path: outcome.report_path,
            report: outcome.report,
        };
        // History is written on a blocking thread: it is file I/O.
        let history = self.config.history.clone();
        match tokio::task::spawn_blocking(move || history.record(&record)).await {
            Ok(Ok(path)) => {
                tracing::info!(experiment = %name, path = %path.display(), "run recorded")
            }
            Ok(Err(e)) => tracing::error!(experiment = %name, "could not record the run: {e}"),
            Err(e) => tracing::error!(experiment = %name, "history writer panicked: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
