//! Scheduler behaviour on paused tokio time, with a fake runner.

use std::sync::Mutex;
use std::time::Duration as StdDuration;

use chrono::TimeZone;
use faultline_spec::{
    CpuFault, ExperimentSpec, Fault, FaultKind, Percent, Schedule, Target, units::Duration,
};

use super::*;

/// A runner that records when each run started, lasts `length` (or until cancelled,
/// then takes `revert` to clean up) and returns `verdict`.
struct FakeRunner {
    clock: Clock,
    length: StdDuration,
    revert: StdDuration,
    verdict: Verdict,
    calls: mpsc::UnboundedSender<Call>,
    log: Mutex<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    experiment: String,
    at: DateTime<Utc>,
}

impl ExperimentRunner for FakeRunner {
    async fn run(
        &self,
        experiment: Experiment,
        _context: RunContext,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let start = self.clock.now();
        self.log.lock().unwrap().push(format!(
            "start {} {}",
            experiment.name,
            start.format("%H:%M:%S")
        ));
        let _ = self.calls.send(Call {
            experiment: experiment.name.clone(),
            at: start,
        });
        let verdict = tokio::select! {
            _ = tokio::time::sleep(self.length) => self.verdict,
            _ = cancel.cancelled() => {
                tokio::time::sleep(self.revert).await;
                Verdict::Aborted
            }
        };
        self.log.lock().unwrap().push(format!(
            "end {} {}",
            experiment.name,
            self.clock.now().format("%H:%M:%S")
        ));
        RunOutcome {
            verdict,
            failing_slos: if verdict == Verdict::Fail {
                vec!["gateway-p99".into()]
            } else {
                vec![]
            },
            report_path: None,
            report: Some(serde_json::json!({"verdict": verdict.as_str()})),
        }
    }
}

fn experiment(name: &str, cron: &str, policy: ConcurrencyPolicy, service: &str) -> Experiment {
    Experiment {
        name: name.into(),
        namespace: None,
        labels: Default::default(),
        spec: ExperimentSpec {
            description: None,
            duration: Duration(StdDuration::from_secs(60)),
            schedule: Some(Schedule {
                cron: cron.into(),
                time_zone: None,
                concurrency_policy: policy,
            }),
            load: None,
            steady_state: None,
            faults: vec![Fault {
                name: "cpu".into(),
                target: Target::service(service),
                after: Duration(StdDuration::from_secs(0)),
                duration: Duration(StdDuration::from_secs(30)),
                kind: FaultKind::Cpu(CpuFault {
                    load: Percent::from_fraction(0.8).unwrap(),
                    workers: None,
                }),
                effect: Default::default(),
            }],
            slos: vec![],
            abort: vec![],
            recovery: None,
            replicas: Default::default(),
        },
    }
}

struct Harness {
    calls: mpsc::UnboundedReceiver<Call>,
    runner: Arc<FakeRunner>,
    metrics: Arc<ControllerMetrics>,
    history: HistoryStore,
    updates: mpsc::Sender<Vec<Experiment>>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
}

async fn start(
    anchor: DateTime<Utc>,
    length: u64,
    lock_policy: LockPolicy,
    keep: usize,
    experiments: Vec<Experiment>,
) -> Harness {
    let clock = Clock::anchored(anchor);
    let (tx, calls) = mpsc::unbounded_channel();
    let runner = Arc::new(FakeRunner {
        clock,
        length: StdDuration::from_secs(length),
        revert: StdDuration::from_secs(2),
        verdict: Verdict::Fail,
        calls: tx,
        log: Mutex::new(Vec::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let history = HistoryStore::new(dir.path(), keep);
    let metrics = Arc::new(ControllerMetrics::new());
    let config = SchedulerConfig {
        lock_policy,
        history: history.clone(),
        clock,
        report_dir: None,
    };
    let scheduler = Scheduler::new(runner.clone(), config, metrics.clone());
    let (updates, rx) = mpsc::channel(4);
    updates.send(experiments).await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(rx, shutdown.clone()));
    Harness {
        calls,
        runner,
        metrics,
        history,
        updates,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Harness {
    async fn next_call(&mut self) -> Call {
        self.calls.recv().await.unwrap()
    }

    /// Shut the scheduler down; the history directory lives as long as the harness.
    async fn stop(&mut self) -> Vec<String> {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap();
        self.runner.log.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn nightly_cron_fires_at_two_every_night_on_paused_time() {
    let exp = experiment(
        "nightly",
        "0 0 2 * * *",
        ConcurrencyPolicy::Forbid,
        "payments",
    );
    let mut h = start(at(1, 0, 0), 60, LockPolicy::Wait, 10, vec![exp]).await;
    let first = h.next_call().await;
    assert_eq!(first.at, at(2, 0, 0));
    let second = h.next_call().await;
    assert_eq!(second.at, at(2, 0, 0) + chrono::Duration::days(1));
    // Let the second run finish and be recorded.
    tokio::time::sleep(StdDuration::from_secs(120)).await;
    let metrics = h.metrics.clone();
    let history = h.history.clone();
    let log = h.stop().await;
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(metrics.runs("nightly", Verdict::Fail), 2);
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"faultline_slo_violations_total{experiment="nightly",slo="gateway-p99"} 2"#
        ),
        "{text}"
    );
    let records = history.list("nightly").unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].started, at(2, 0, 0));
    assert_eq!(records[0].finished, at(2, 1, 0));
    assert_eq!(records[0].failing_slos, vec!["gateway-p99".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn cron_is_read_in_the_experiments_time_zone() {
    let mut exp = experiment(
        "nightly",
        "0 0 2 * * *",
        ConcurrencyPolicy::Forbid,
        "payments",
    );
    exp.spec.schedule.as_mut().unwrap().time_zone = Some("America/New_York".into());
    let mut h = start(at(0, 0, 0), 1, LockPolicy::Wait, 10, vec![exp]).await;
    // 02:00 in New York in March (before DST starts on the 8th) is 07:00 UTC.
    assert_eq!(h.next_call().await.at, at(7, 0, 0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn forbid_skips_fires_while_the_previous_run_is_active() {
    // Every 10 s; each run lasts 25 s.
    let exp = experiment("e", "*/10 * * * * *", ConcurrencyPolicy::Forbid, "payments");
    let mut h = start(at(1, 59, 59), 25, LockPolicy::Wait, 10, vec![exp]).await;
    let starts: Vec<_> = [
        h.next_call().await,
        h.next_call().await,
        h.next_call().await,
    ]
    .into_iter()
    .map(|c| c.at)
    .collect();
    assert_eq!(starts, vec![at(2, 0, 0), at(2, 0, 30), at(2, 1, 0)]);
    // :10, :20, :40 and :50 were skipped.
    assert_eq!(h.metrics.runs("e", Verdict::Skipped), 4);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn allow_starts_overlapping_runs() {
    let exp = experiment("e", "*/10 * * * * *", ConcurrencyPolicy::Allow, "payments");
    // Overlapping runs of one experiment share their targets, so the lock must not
    // serialize them: Allow means "run both".
    let mut h = start(at(1, 59, 59), 25, LockPolicy::Skip, 10, vec![exp]).await;
    let mut starts = Vec::new();
    for _ in 0..3 {
        starts.push(h.next_call().await.at);
    }
    assert_eq!(starts, vec![at(2, 0, 0), at(2, 0, 10), at(2, 0, 20)]);
    let log = h.stop().await;
    // The first run was still going when the third started.
    let third = log.iter().position(|l| l == "start e 02:00:20").unwrap();
    let first_end = log.iter().position(|l| l.starts_with("end e")).unwrap();
    assert!(third < first_end, "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn replace_cancels_the_active_run_and_starts_after_it_reverted() {
    let exp = experiment(
        "e",
        "*/10 * * * * *",
        ConcurrencyPolicy::Replace,
        "payments",
    );
    let mut h = start(at(1, 59, 59), 25, LockPolicy::Wait, 10, vec![exp]).await;
    assert_eq!(h.next_call().await.at, at(2, 0, 0));
    // Cancelled at :10, reverting takes 2 s, so the replacement starts at :12.
    assert_eq!(h.next_call().await.at, at(2, 0, 12));
    let history = h.history.clone();
    let metrics = h.metrics.clone();
    let log = h.stop().await;
    assert_eq!(
        &log[..3],
        ["start e 02:00:00", "end e 02:00:12", "start e 02:00:12"]
    );
    assert!(metrics.runs("e", Verdict::Aborted) >= 1);
    assert_eq!(history.list("e").unwrap()[0].verdict, Verdict::Aborted);
}

#[tokio::test(start_paused = true)]
async fn second_experiment_on_a_locked_target_waits_for_the_first() {
    let a = experiment("a", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "payments");
    let b = experiment("b", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "payments");
    let c = experiment("c", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "inventory");
    let mut h = start(at(1, 0, 0), 30, LockPolicy::Wait, 10, vec![a, b, c]).await;
    let mut calls = [
        h.next_call().await,
        h.next_call().await,
        h.next_call().await,
    ];
    calls.sort_by_key(|c| (c.at, c.experiment.clone()));
    let first_on_payments = calls[0..2]
        .iter()
        .find(|c| c.experiment != "c")
        .unwrap()
        .experiment
        .clone();
    // c has its own target and starts at once; the other payments experiment waits 30 s.
    assert!(
        calls
            .iter()
            .any(|x| x.experiment == "c" && x.at == at(2, 0, 0))
    );
    let waiter = calls
        .iter()
        .find(|x| x.experiment != "c" && x.experiment != first_on_payments)
        .unwrap();
    assert_eq!(waiter.at, at(2, 0, 30));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn second_experiment_on_a_locked_target_is_skipped_under_skip_policy() {
    let a = experiment("a", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "payments");
    let b = experiment("b", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "payments");
    let mut h = start(at(1, 0, 0), 30, LockPolicy::Skip, 10, vec![a, b]).await;
    let first = h.next_call().await;
    assert_eq!(first.at, at(2, 0, 0));
    tokio::time::sleep(StdDuration::from_secs(600)).await;
    assert!(
        h.calls.try_recv().is_err(),
        "the second experiment must not run"
    );
    let other = if first.experiment == "a" { "b" } else { "a" };
    assert_eq!(h.metrics.runs(other, Verdict::Skipped), 1);
    assert_eq!(h.history.list(other).unwrap()[0].verdict, Verdict::Skipped);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn history_on_disk_is_trimmed_to_the_last_n_runs() {
    let exp = experiment("e", "0 * * * * *", ConcurrencyPolicy::Forbid, "payments");
    let mut h = start(at(1, 59, 59), 5, LockPolicy::Wait, 3, vec![exp]).await;
    for _ in 0..5 {
        h.next_call().await;
    }
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    let history = h.history.clone();
    h.stop().await;
    let kept: Vec<_> = history
        .list("e")
        .unwrap()
        .into_iter()
        .map(|r| r.started)
        .collect();
    // Runs started at 02:00 .. 02:04; the last three survive.
    assert_eq!(kept, vec![at(2, 2, 0), at(2, 3, 0), at(2, 4, 0)]);
}

#[tokio::test(start_paused = true)]
async fn reloaded_schedule_takes_effect_without_restart() {
    let exp = experiment("e", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "payments");
    let mut h = start(at(1, 0, 0), 5, LockPolicy::Wait, 3, vec![exp]).await;
    tokio::time::sleep(StdDuration::from_secs(60)).await;
    let moved = experiment("e", "0 30 1 * * *", ConcurrencyPolicy::Forbid, "payments");
    h.updates.send(vec![moved]).await.unwrap();
    assert_eq!(h.next_call().await.at, at(1, 30, 0));
    // Removing it unschedules it.
    h.updates.send(vec![]).await.unwrap();
    tokio::time::sleep(StdDuration::from_secs(3 * 86_400)).await;
    assert!(h.calls.try_recv().is_err());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_active_runs_and_waits_for_their_revert() {
    let exp = experiment("e", "0 0 2 * * *", ConcurrencyPolicy::Forbid, "payments");
    let mut h = start(at(1, 59, 0), 600, LockPolicy::Wait, 3, vec![exp]).await;
    h.next_call().await;
    tokio::time::sleep(StdDuration::from_secs(5)).await;
    let history = h.history.clone();
    let log = h.stop().await;
    assert_eq!(log, ["start e 02:00:00", "end e 02:00:07"]);
    assert_eq!(history.list("e").unwrap()[0].verdict, Verdict::Aborted);
}
