//! Runner lifecycle on paused time, with a fake environment: a recording agent and an
//! SLO backend whose values are a function of (virtual) time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use faultline_spec::wire::{
    Capabilities, FaultPhase, FaultRequest, FaultState, Lease, ObservedEffect,
};
use faultline_spec::{Experiment, Fault, LoadTarget, SloKind, ValidateOptions};
use tokio::time::Instant;

use super::*;
use crate::report::RunMode;
use crate::slo::{BoxFuture, Evidence, SloError};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Apply(String, Duration),
    Renew(String, Duration),
    Revert(String, Duration),
    Check(String),
}

struct FakeAgent {
    start: Instant,
    calls: Mutex<Vec<Call>>,
    kinds: Vec<String>,
    /// What every applied fault measured.
    effect: Mutex<ObservedEffect>,
    /// Whether the agent's protection rules refuse every target.
    protected: std::sync::atomic::AtomicBool,
    /// How long a revert takes (a busy agent).
    revert_takes: Mutex<Duration>,
}

impl FakeAgent {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl AgentHandle for FakeAgent {
    fn endpoint(&self) -> String {
        "fake".into()
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities, AgentCallError>> {
        Box::pin(async move {
            Ok(Capabilities {
                fault_kinds: self.kinds.clone(),
                ..Default::default()
            })
        })
    }
    fn check(&self, request: FaultRequest) -> BoxFuture<'_, Result<String, AgentCallError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Check(request.id.clone()));
            if self.protected.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(AgentCallError::Protected {
                    agent: "fake".into(),
                    message: "process 1: PID 1 is the node's init".into(),
                });
            }
            Ok("fake".to_string())
        })
    }
    fn apply(&self, request: FaultRequest) -> BoxFuture<'_, Result<FaultState, AgentCallError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Apply(request.id.clone(), self.start.elapsed()));
            Ok(FaultState {
                id: request.id,
                experiment: request.experiment,
                target: request.target,
                fault: request.fault,
                phase: FaultPhase::Active,
                lease: Lease {
                    ttl: request.ttl,
                    expires_at_ms: 0,
                    renewals: 0,
                },
                applied_at_ms: 0,
                backend: "burner".into(),
                effect: self.effect.lock().unwrap().clone(),
            })
        })
    }
    fn renew<'a>(
        &'a self,
        id: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), AgentCallError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Renew(id.into(), self.start.elapsed()));
            Ok(())
        })
    }
    fn revert<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FaultState>, AgentCallError>> {
        Box::pin(async move {
            let takes = *self.revert_takes.lock().unwrap();
            tokio::time::sleep(takes).await;
            self.calls
                .lock()
                .unwrap()
                .push(Call::Revert(id.into(), self.start.elapsed()));
            Ok(None)
        })
    }
}

/// Value of the SLI at virtual time `t` (since the start) over `window`.
type Sli = dyn Fn(Duration, Duration) -> Option<f64> + Send + Sync;

struct FakeBackend {
    start: Instant,
    sli: Arc<Sli>,
    /// One evaluation at or after this time (since the start) takes this long: the
    /// controller stalls once.
    stall: Mutex<Option<(Duration, Duration)>>,
    /// Every evaluation's window and instant, in order.
    asked: Mutex<Vec<(Duration, SystemTime)>>,
}

impl SloBackend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn supports(&self, kind: &SloKind) -> Result<(), SloError> {
        match kind {
            SloKind::Promql { .. } => Err(SloError::Unsupported {
                backend: "fake",
                reason: "no promql".into(),
            }),
            _ => Ok(()),
        }
    }
    fn evaluate<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Evaluation, SloError>> {
        Box::pin(async move {
            let stall = {
                let mut stall = self.stall.lock().unwrap();
                match *stall {
                    Some((from, takes)) if self.start.elapsed() >= from => {
                        *stall = None;
                        Some(takes)
                    }
                    _ => None,
                }
            };
            if let Some(takes) = stall {
                tokio::time::sleep(takes).await;
            }
            self.asked.lock().unwrap().push((window, at));
            let value = (self.sli)(self.start.elapsed(), window);
            Ok(Evaluation::judged(
                kind,
                at,
                value,
                Evidence {
                    backend: "fake".into(),
                    query: "fake".into(),
                    detail: None,
                    generator: None,
                },
            ))
        })
    }
}

struct FakeEnv {
    agent: Arc<FakeAgent>,
    backend: Arc<FakeBackend>,
}

impl Environment for FakeEnv {
    fn mode(&self) -> RunMode {
        RunMode::Local
    }
    fn resolve<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<Vec<Placement>, RunError>> {
        Box::pin(async move {
            Ok(vec![Placement {
                target: faultline_spec::wire::ResolvedTarget {
                    name: format!("{:?}", fault.target),
                    pid: Some(1),
                    ..Default::default()
                },
                agent: self.agent.clone(),
                fault: None,
            }])
        })
    }
    fn agents(&self) -> Vec<Arc<dyn AgentHandle>> {
        vec![self.agent.clone()]
    }
    fn slo_backend(&self) -> Arc<dyn SloBackend> {
        self.backend.clone()
    }
    fn load_url(&self, _target: &LoadTarget) -> Result<String, RunError> {
        Err(RunError::InvalidInput("no load in these tests".into()))
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

const EXPERIMENT: &str = r#"
apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {name: fake}
spec:
  duration: 40s
  steadyState: {window: 5s, slos: [errors]}
  faults:
    - name: cpu
      target: {service: payments}
      after: 10s
      duration: 20s
      cpu: {load: 80%}
  slos:
    - name: errors
      errorRate: {service: gateway, max: 1%}
      window: 5s
  abort:
    - errorRate: {service: gateway, max: 20%}
      for: 5s
  recovery: {within: 5s}
"#;

fn experiment(text: &str) -> Experiment {
    faultline_spec::parse_str(text, "fake.yaml", &ValidateOptions::default())
        .unwrap()
        .remove(0)
}

fn env(sli: Arc<Sli>, kinds: &[&str]) -> (Arc<FakeEnv>, Arc<FakeAgent>) {
    let start = Instant::now();
    let agent = Arc::new(FakeAgent {
        start,
        calls: Mutex::default(),
        kinds: kinds.iter().map(|s| s.to_string()).collect(),
        effect: Mutex::new(burned(0.8)),
        protected: Default::default(),
        revert_takes: Mutex::default(),
    });
    let env = Arc::new(FakeEnv {
        agent: agent.clone(),
        backend: Arc::new(FakeBackend {
            start,
            sli,
            stall: Mutex::default(),
            asked: Mutex::default(),
        }),
    });
    (env, agent)
}

/// Runs the experiment in `text` with the default configuration and nothing to
/// interrupt it.
async fn run_uninterrupted(text: &str, env: Arc<FakeEnv>) -> RunReport {
    run(
        &experiment(text),
        env,
        &RunConfig::default(),
        &Interrupt::new(),
    )
    .await
}

/// A CPU burner's effect at this utilization of one worker (the experiments here ask
/// for 80%).
fn burned(utilization: f64) -> ObservedEffect {
    ObservedEffect {
        summary: format!("burned {utilization}"),
        metrics: [
            ("utilization", utilization),
            ("workers", 1.0),
            ("target_load", 0.8),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    }
}

fn at(calls: &[Call], f: impl Fn(&Call) -> Option<Duration>) -> Vec<Duration> {
    calls.iter().filter_map(f).collect()
}

/// Fails with the verdict's reason unless the run ended `want`.
#[track_caller]
fn assert_outcome(report: &RunReport, want: Outcome) {
    assert_eq!(report.verdict.outcome, want, "{:?}", report.verdict);
}

/// When each revert returned.
fn reverted_at(calls: &[Call]) -> Vec<Duration> {
    at(calls, |c| match c {
        Call::Revert(_, t) => Some(*t),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn faults_are_applied_at_their_offset_renewed_and_reverted_at_their_end() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_outcome(&report, Outcome::Pass);
    let calls = agent.calls();
    let applied = at(&calls, |c| match c {
        Call::Apply(_, t) => Some(*t),
        _ => None,
    });
    let reverted = reverted_at(&calls);
    let renewals = at(&calls, |c| match c {
        Call::Renew(_, t) => Some(*t),
        _ => None,
    });
    assert_eq!(applied.len(), 1);
    assert!(applied[0] >= Duration::from_secs(10) && applied[0] < Duration::from_millis(10_100));
    assert_eq!(reverted.len(), 1);
    assert!(reverted[0] >= Duration::from_secs(30) && reverted[0] < Duration::from_millis(30_100));
    // TTL 6 s renewed every 2 s over 20 s.
    assert!((9..=10).contains(&renewals.len()), "{renewals:?}");
    for pair in renewals.windows(2) {
        assert!(pair[1] - pair[0] <= Duration::from_millis(2_100));
    }
    let rec = report.recovery.unwrap();
    assert!(rec.passed);
    assert_eq!(report.slos[0].verdict, SloVerdict::Pass);
    // Judged from the first full window (5 s) to the end: about 35 one-second samples.
    assert!((34..=37).contains(&report.slos[0].samples.len()));
}

#[tokio::test(start_paused = true)]
async fn abort_reverts_every_fault_within_a_second_of_the_condition_holding_for_its_duration() {
    // 50% errors from t = 12 s on.
    let (env, agent) = env(
        Arc::new(|t, _| {
            Some(if t >= Duration::from_secs(12) {
                0.5
            } else {
                0.0
            })
        }),
        &["cpu"],
    );
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_eq!(report.verdict.outcome, Outcome::Aborted);
    assert!(
        report.verdict.reason.contains("errors"),
        "{}",
        report.verdict.reason
    );
    let calls = agent.calls();
    let reverted = reverted_at(&calls);
    // First violated evaluation at t=12 s; held for 5 s at t=17 s; reverted at once.
    assert_eq!(reverted.len(), 1);
    assert!(
        reverted[0] >= Duration::from_secs(17) && reverted[0] <= Duration::from_secs(18),
        "{reverted:?}"
    );
    let abort = report.abort.unwrap();
    assert!(abort.triggered_ms >= abort.since_ms);
}

#[tokio::test(start_paused = true)]
async fn a_failing_steady_state_injects_nothing_and_fails() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.05)), &["cpu"]);
    let mut text = EXPERIMENT.replace("max: 20%", "max: 90%");
    text = text.replace("for: 5s", "for: 30s");
    let report = run_uninterrupted(&text, env).await;
    assert_eq!(report.verdict.outcome, Outcome::Fail);
    assert!(report.verdict.reason.contains("steady state"));
    assert!(!report.steady_state.unwrap().passed);
    assert!(
        agent.calls().iter().all(|c| matches!(c, Call::Check(_))),
        "only validate-only calls: {:?}",
        agent.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_protected_target_is_refused_before_anything_is_injected_with_exit_2() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    agent
        .protected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_eq!(report.verdict.outcome, Outcome::InvalidInput);
    assert_eq!(crate::report::exit_code(report.verdict.outcome), 2);
    assert!(
        report.verdict.reason.contains("refused a protected target")
            && report.verdict.reason.contains("nothing was injected"),
        "{}",
        report.verdict.reason
    );
    assert_eq!(report.faults.len(), 1);
    assert_eq!(report.faults[0].status, FaultStatus::Refused);
    assert!(report.faults[0].error.as_deref().unwrap().contains("PID 1"));
    assert!(report.load.is_none(), "no load was started");
    assert!(
        agent.calls().iter().all(|c| matches!(c, Call::Check(_))),
        "{:?}",
        agent.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn an_unsupported_fault_kind_fails_preflight_before_anything_is_injected() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["network.latency"]);
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_eq!(report.verdict.outcome, Outcome::Error);
    assert_eq!(crate::report::exit_code(report.verdict.outcome), 3);
    assert!(
        report.verdict.reason.contains("cpu"),
        "{}",
        report.verdict.reason
    );
    assert!(agent.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_mid_run_reverts_and_reports_aborted() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    let interrupt = Interrupt::new();
    let trigger = interrupt.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        trigger.trigger("interrupted (SIGINT)");
    });
    let report = run(
        &experiment(EXPERIMENT),
        env,
        &RunConfig::default(),
        &interrupt,
    )
    .await;
    assert_eq!(report.verdict.outcome, Outcome::Aborted);
    assert_eq!(report.abort.unwrap().condition, "interrupted (SIGINT)");
    let reverted = reverted_at(&agent.calls());
    assert_eq!(reverted.len(), 1);
    assert!(reverted[0] < Duration::from_millis(15_100), "{reverted:?}");
}

#[tokio::test(start_paused = true)]
async fn recovery_is_judged_on_data_since_the_revert_only() {
    // The SLI is bad whenever its window overlaps the fault time [10 s, 30 s): a full
    // 5 s window only clears at 35 s, but data since the revert at 30 s is clean.
    let (env, _agent) = env(
        Arc::new(|t, window| {
            let from = t.saturating_sub(window);
            let overlaps = from < Duration::from_secs(30) && t > Duration::from_secs(10);
            Some(if overlaps { 0.5 } else { 0.0 })
        }),
        &["cpu"],
    );
    let text = EXPERIMENT.replace("for: 5s", "for: 60s");
    let report = run_uninterrupted(&text, env).await;
    let rec = report.recovery.unwrap();
    assert!(rec.passed, "{rec:?}");
    let after = rec.recovered_after_ms.unwrap();
    assert!((900..2_000).contains(&after), "recovered after {after} ms");
    // The fault-time violations still fail the SLO itself.
    assert_eq!(report.slos[0].verdict, SloVerdict::Fail);
    assert_eq!(report.verdict.outcome, Outcome::Fail);
}

#[tokio::test(start_paused = true)]
async fn a_late_revert_moves_recovery_later_and_the_run_waits_to_judge_it() {
    // The fault ends at 30 s and its revert takes 8 s: recovery's 5 s run from 38 s, past
    // the planned 40 s, so the run goes on to watch them.
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    *agent.revert_takes.lock().unwrap() = Duration::from_secs(8);
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_outcome(&report, Outcome::Pass);
    let rec = report.recovery.clone().unwrap();
    assert!(rec.passed && rec.unjudged.is_none(), "{rec:?}");
    let reverted = reverted_at(&agent.calls());
    // Reverted past 38 s and recovered after it: the run went on past its planned 40 s.
    assert!(reverted[0] >= Duration::from_secs(38), "{reverted:?}");
    assert!(
        rec.recovered_after_ms.is_some_and(|ms| ms < 2_000),
        "{rec:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_revert_too_late_to_watch_recovery_is_inconclusive_not_a_failure() {
    // A 20 s revert ends the fault at 50 s, after the run's planned 40 s and its grace.
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    *agent.revert_takes.lock().unwrap() = Duration::from_secs(20);
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_outcome(&report, Outcome::Inconclusive);
    let why = report.recovery.unwrap().unjudged.unwrap();
    assert!(why.contains("after its planned end at +30.0s"), "{why}");
    assert!(
        report.verdict.reason.contains("recovery was not judged"),
        "{}",
        report.verdict.reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_recovery_check_held_up_past_the_deadline_looks_at_the_system_as_of_the_deadline() {
    // The fault is reverted at 30 s and errors go on until 33 s. The controller's
    // evaluation at 32 s takes 8 s, so its next recovery check comes 10 s after the
    // revert: it must judge [T, T + 5 s] as of T + 5 s, not pass at 10 s.
    let (env, _agent) = env(
        Arc::new(|t, _| {
            let bad = t >= Duration::from_secs(31) && t < Duration::from_secs(33);
            Some(if bad { 0.5 } else { 0.0 })
        }),
        &["cpu"],
    );
    *env.backend.stall.lock().unwrap() = Some((Duration::from_secs(32), Duration::from_secs(8)));
    let text = EXPERIMENT
        .replace("duration: 40s", "duration: 50s")
        .replace("for: 5s", "for: 60s");
    let report = run_uninterrupted(&text, env.clone()).await;
    let rec = report.recovery.clone().unwrap();
    assert_eq!(rec.recovered_after_ms, Some(5_000), "{rec:?}");
    let deadline = wall_at(rec.last_fault_ended_ms) + Duration::from_secs(5);
    let asked = env.backend.asked.lock().unwrap().clone();
    assert!(
        asked.contains(&(Duration::from_secs(5), deadline)),
        "no evaluation as of the deadline: {asked:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_starved_fault_turns_a_run_whose_slos_held_inconclusive_naming_asked_and_measured() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    *agent.effect.lock().unwrap() = burned(0.49);
    let report = run_uninterrupted(EXPERIMENT, env).await;
    assert_outcome(&report, Outcome::Inconclusive);
    assert_eq!(crate::report::exit_code(report.verdict.outcome), 4);
    let reason = &report.verdict.reason;
    assert!(reason.contains("fault `cpu`"), "{reason}");
    assert!(reason.contains("80% of a CPU"), "{reason}");
    assert!(reason.contains("49.0% of a CPU"), "{reason}");
    assert_eq!(report.slos[0].verdict, SloVerdict::Pass);
    let check = report.faults[0].effect_check.as_ref().unwrap();
    assert_eq!(check.verdict, crate::effect::EffectVerdict::Short);
}

#[tokio::test(start_paused = true)]
async fn a_fault_marked_not_required_reports_its_miss_but_does_not_block_the_pass() {
    let (env, agent) = env(Arc::new(|_, _| Some(0.0)), &["cpu"]);
    *agent.effect.lock().unwrap() = burned(0.0);
    let text = EXPERIMENT.replace(
        "cpu: {load: 80%}",
        "cpu: {load: 80%}\n      effect: {required: false}",
    );
    assert_ne!(text, EXPERIMENT);
    let report = run_uninterrupted(&text, env).await;
    assert_outcome(&report, Outcome::Pass);
    let check = report.faults[0].effect_check.as_ref().unwrap();
    assert_eq!(check.verdict, crate::effect::EffectVerdict::None);
    assert!(!check.required);
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_slos_failed_stays_fail_whatever_the_effects() {
    let (env, agent) = env(
        Arc::new(|t, _| {
            Some(if t > Duration::from_secs(12) {
                0.5
            } else {
                0.0
            })
        }),
        &["cpu"],
    );
    *agent.effect.lock().unwrap() = burned(0.0);
    let text = EXPERIMENT.replace("for: 5s", "for: 60s");
    let report = run_uninterrupted(&text, env).await;
    assert_outcome(&report, Outcome::Fail);
}

#[test]
fn an_undelivered_surge_makes_a_held_run_inconclusive_but_never_hides_a_failure() {
    use crate::report::suite::tests::{report, slo};
    use crate::slo::Unit;
    use crate::slo::client::{LoadSummary, SurgeSummary};
    let surge = |on_time_rate| SurgeSummary {
        after_ms: 8_000,
        duration_ms: 10_000,
        asked_rate: 2500.0,
        seconds: 10,
        requests: 25_000,
        late: 25_000 - (on_time_rate * 10.0) as u64,
        on_time_rate,
    };
    let with = |on_time_rate, value| {
        let mut r = report("flash-sale", Outcome::Pass);
        r.slos = vec![slo("p99", 0.3, value, Unit::Seconds)];
        r.load = Some(LoadSummary {
            surges: vec![surge(on_time_rate)],
            ..LoadSummary::default()
        });
        verdict(&r)
    };
    assert_eq!(with(2400.0, 0.1).0, Outcome::Pass);
    let (outcome, reason) = with(1200.0, 0.1);
    assert_eq!(outcome, Outcome::Inconclusive, "{reason}");
    assert!(
        reason.contains("2500.0/s asked, 1200.0/s sent on time"),
        "{reason}"
    );
    assert_eq!(with(1200.0, 0.9).0, Outcome::Fail);
}

#[test]
fn recovery_is_judged_from_the_end_of_the_last_surge_and_fault() {
    let with_surge = |faults: &str| {
        experiment(&format!(
            r#"
apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {{name: surge}}
spec:
  duration: 40s
  load:
    target: gateway
    rate: 100/s
    surges: [{{after: 5s, duration: 15s, rate: 500/s}}]
    requests: [{{path: /}}]
  {faults}
  slos:
    - name: errors
      errorRate: {{service: gateway, max: 1%}}
  recovery: {{within: 5s}}
"#
        ))
    };
    let (t0, wall0) = (Instant::now(), SystemTime::UNIX_EPOCH);
    let ledger = faults::Ledger::default();
    let surge_only = with_surge("");
    let over = |spec: &Experiment, elapsed| {
        disturbance_over(&spec.spec, &ledger, Duration::from_secs(elapsed), t0, wall0)
    };
    assert_eq!(over(&surge_only, 19), None, "the surge is still on");
    assert_eq!(
        over(&surge_only, 21),
        Some((t0 + Duration::from_secs(20), 20_000)),
        "judged from the surge's scheduled end"
    );
    // A fault not yet reverted holds recovery back, whatever the surge did.
    let both = with_surge(
        "faults: [{name: cpu, target: {service: payments}, after: 10s, duration: 20s, cpu: {load: 50%}}]",
    );
    assert_eq!(over(&both, 25), None);
}
