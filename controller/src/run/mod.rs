//! The experiment runner behind `chaos run` (DESIGN.md §4, issue 7).
//!
//! Lifecycle, in order: validate (the caller parses into a checked [`Experiment`]);
//! resolve every fault's target through the [`Environment`]; preflight the agents'
//! capabilities and the SLO backends; start the load; check the steady state; inject each
//! fault at its offset under a renewed lease; evaluate every SLO and abort condition
//! every second; revert each fault at its end (or all at once on abort, interrupt or
//! error); check recovery; give the verdict. The result is always a [`RunReport`], whose
//! outcome maps to the exit code ([`crate::report::exit_code`]).
//!
//! Judging rules (documented for users in `docs/running.md`):
//! - every SLO is evaluated every second over its full `window`; samples are judged from
//!   the first second at which a full window (or the time before the first fault, if
//!   shorter) of load lies behind, until the end of the run. Any violated sample fails
//!   the SLO; a missing sample (no data) never passes;
//! - the steady state is checked just before the first fault, over `steadyState.window`
//!   (clipped to the time the load has run); if it does not hold, nothing is injected and
//!   the run fails;
//! - an abort condition fires when every evaluation for `for:` was a violation; the run
//!   then reverts everything at once and ends `aborted`;
//! - recovery: after the last fault is reverted at `T`, each SLO is judged over the data
//!   since `T` only (its window clipped to `[T, now]`), every second, so fault-time data
//!   still inside a long window does not count against recovery. Recovery passes when, at
//!   some evaluation no later than `T + recovery.within`, every SLO holds on that clipped
//!   window. The load runs at least until `T + within`, and up to `within` past the
//!   planned end when `T` came late; a recovery the run could not watch (it ended first)
//!   is not judged: inconclusive. A check that comes after `T + within` (the controller
//!   was held up) evaluates as of `T + within`.

pub mod env;
mod faults;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use faultline_spec::wire::Capabilities;
use faultline_spec::{Experiment, Fault, FaultKind, NetworkBackend, Slo, SloKind, SloSource};
use futures_util::future::join_all;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use env::{AgentCallError, AgentHandle, Environment, Placement};

use crate::load::{self, LoadHandle};
use crate::report::terminal::{LiveSli, LiveState, Progress, ProgressMode};
use crate::report::{
    AbortRecord, CheckResult, ExperimentInfo, FaultApplication, FaultStatus, Outcome, Phase,
    PhaseRecord, RecoveryResult, RunReport, SCHEMA_VERSION, SloReport, SloVerdict, Verdict,
    describe_kind,
};
use crate::slo::client::ClientBackend;
use crate::slo::{Evaluation, SloBackend, SloStatus, unix_ms};

/// Why a run could not proceed. Each variant maps to an outcome and exit code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// The experiment cannot run as written in this mode (exit 2).
    #[error("{0}")]
    InvalidInput(String),
    /// An agent, the fleet, the load generator or an SLO backend failed (exit 3).
    #[error("{0}")]
    Infrastructure(String),
}

impl RunError {
    fn outcome(&self) -> Outcome {
        match self {
            RunError::InvalidInput(_) => Outcome::InvalidInput,
            RunError::Infrastructure(_) => Outcome::Error,
        }
    }
}

/// How to run, besides the experiment and the environment.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The experiment file, for the report.
    pub file: Option<String>,
    /// Validate, resolve and preflight only; inject nothing.
    pub dry_run: bool,
    /// Live progress output.
    pub progress: ProgressMode,
    /// Lease length of every fault; renewed every third of it.
    pub lease_ttl: Duration,
    /// How often SLOs and abort conditions are evaluated.
    pub tick: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            file: None,
            dry_run: false,
            progress: ProgressMode::Hidden,
            lease_ttl: Duration::from_secs(6),
            tick: Duration::from_secs(1),
        }
    }
}

/// An external request to stop the run (Ctrl-C, SIGTERM): cancel it with a reason.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Interrupt {
    /// A fresh, untriggered interrupt.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run; `reason` (e.g. `interrupted (SIGINT)`) goes into the report.
    pub fn trigger(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        r.get_or_insert_with(|| reason.to_string());
        self.token.cancel();
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "interrupted".into())
    }
}

/// Where the run stands, for the final verdict.
struct Run<'a> {
    experiment: &'a Experiment,
    report: RunReport,
    phase_started: i64,
    progress: Option<Progress>,
}

impl Run<'_> {
    fn enter(&mut self, phase: Phase) {
        let now = unix_ms(SystemTime::now());
        if let Some(last) = self.report.phases.last_mut() {
            last.ended_ms = now;
        }
        self.report.phases.push(PhaseRecord {
            phase,
            started_ms: now,
            ended_ms: now,
        });
        self.phase_started = now;
    }

    fn phase(&self) -> Phase {
        self.report
            .phases
            .last()
            .map_or(Phase::Validate, |p| p.phase)
    }

    fn finish(mut self, outcome: Outcome, reason: String) -> RunReport {
        let now = unix_ms(SystemTime::now());
        if let Some(last) = self.report.phases.last_mut() {
            last.ended_ms = now;
        }
        self.report.ended_ms = now;
        self.report.verdict = Verdict { outcome, reason };
        if let Some(p) = self.progress.take() {
            p.finish();
        }
        let _ = self.experiment;
        self.report
    }
}

/// A report for a run that failed before it started (bad file, environment start-up).
pub fn early_report(
    experiment: Option<&Experiment>,
    file: Option<&str>,
    mode: crate::report::RunMode,
    error: &RunError,
) -> RunReport {
    let now = unix_ms(SystemTime::now());
    RunReport {
        schema_version: SCHEMA_VERSION,
        experiment: experiment.map_or_else(
            || ExperimentInfo {
                name: file.unwrap_or("experiment").to_string(),
                description: None,
                file: file.map(str::to_string),
                duration_ms: 0,
                labels: BTreeMap::new(),
            },
            |e| info(e, file),
        ),
        mode,
        slo_backend: String::new(),
        started_ms: now,
        ended_ms: now,
        phases: Vec::new(),
        verdict: Verdict {
            outcome: error.outcome(),
            reason: error.to_string(),
        },
        slos: Vec::new(),
        steady_state: None,
        recovery: None,
        abort: None,
        faults: Vec::new(),
        load: None,
        reactions: Vec::new(),
        reruns: Vec::new(),
    }
}

/// The report of an experiment that was not run, with outcome
/// [`Outcome::Skipped`] and `reason` (this mode cannot run it, or the suite stopped
/// first), so a suite lists it in every report like the ones that ran.
pub fn skipped_report(
    experiment: &Experiment,
    file: Option<&str>,
    mode: crate::report::RunMode,
    reason: &str,
) -> RunReport {
    let mut report = early_report(
        Some(experiment),
        file,
        mode,
        &RunError::InvalidInput(String::new()),
    );
    report.verdict = Verdict {
        outcome: Outcome::Skipped,
        reason: reason.to_string(),
    };
    report
}

fn info(e: &Experiment, file: Option<&str>) -> ExperimentInfo {
    ExperimentInfo {
        name: e.name.clone(),
        description: e.spec.description.clone(),
        file: file.map(str::to_string),
        duration_ms: ms(e.spec.duration.0),
        labels: e.labels.clone(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The fault kind name the agent's capabilities list (`network.latency`, `cpu`, ...).
pub fn capability_name(kind: &FaultKind) -> String {
    match kind {
        FaultKind::Network(n) => format!("network.{}", network_action(n)),
        other => other.name().to_string(),
    }
}

fn network_action(n: &faultline_spec::NetworkFault) -> &'static str {
    use faultline_spec::NetworkAction as A;
    match n.action {
        A::Latency(_) => "latency",
        A::Loss(_) => "loss",
        A::Bandwidth(_) => "bandwidth",
        A::Reset(_) => "reset",
        A::Partition(_) => "partition",
    }
}

/// Checks one fault against an agent's capabilities: the kind must be listed, and an
/// explicitly requested network backend must be available for the action.
pub fn preflight_fault(fault: &Fault, caps: &Capabilities) -> Result<(), String> {
    let kind = capability_name(&fault.kind);
    if !caps.fault_kinds.contains(&kind) {
        let why = caps
            .missing
            .get(&kind)
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        return Err(format!(
            "fault `{}`: this agent cannot apply `{kind}` faults{why}; it supports {}",
            fault.name,
            caps.fault_kinds.join(", ")
        ));
    }
    if let FaultKind::Network(n) = &fault.kind {
        let wanted = match n.backend {
            NetworkBackend::Auto => None,
            NetworkBackend::Proxy => Some("proxy"),
            NetworkBackend::Nftables => Some("nftables"),
            NetworkBackend::Netem => Some("netem"),
        };
        if let Some(wanted) = wanted {
            let action = network_action(n);
            let have = caps
                .network_backends
                .get(action)
                .cloned()
                .unwrap_or_default();
            if !have.iter().any(|b| b == wanted) {
                let why = caps
                    .missing
                    .get(wanted)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                return Err(format!(
                    "fault `{}`: backend `{wanted}` is not available for {action} here{why}; available: [{}]",
                    fault.name,
                    have.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The SLO backends of a run: server metrics from the environment, client measurements
/// from the load generator.
struct Backends {
    server: Arc<dyn SloBackend>,
    client: Option<ClientBackend>,
}

impl Backends {
    fn for_source(&self, source: SloSource) -> Result<&dyn SloBackend, RunError> {
        match source {
            SloSource::Server => Ok(self.server.as_ref()),
            SloSource::Client => self
                .client
                .as_ref()
                .map(|c| c as &dyn SloBackend)
                .ok_or_else(|| {
                    RunError::InvalidInput(
                        "`source: client` needs a `load:` section: without it there are no client measurements".into(),
                    )
                }),
        }
    }
}

fn load_service(experiment: &Experiment) -> Option<String> {
    experiment.spec.load.as_ref().map(|l| match &l.target {
        faultline_spec::LoadTarget::Service(s) => s.clone(),
        faultline_spec::LoadTarget::Url(u) => u.clone(),
    })
}

/// When the steady state is judged (just before the first fault or load surge, whichever
/// comes first), relative to the start.
fn steady_check_at(experiment: &Experiment) -> Duration {
    let spec = &experiment.spec;
    let surges = surges(spec).iter().map(|s| s.after.0);
    let first_fault = spec.faults.iter().map(|f| f.after.0).chain(surges).min();
    let window = spec.steady_state.as_ref().map(|s| s.window.0);
    match (first_fault, window) {
        (Some(f), _) => f,
        (None, Some(w)) => w.min(spec.duration.0),
        (None, None) => Duration::ZERO,
    }
}

/// Runs `experiment` in `env` to its verdict. Never panics on bad input or failures:
/// everything ends up in the returned report's verdict. Faults are always reverted
/// before this returns; the caller shuts the environment down.
pub async fn run(
    experiment: &Experiment,
    env: Arc<dyn Environment>,
    config: &RunConfig,
    interrupt: &Interrupt,
) -> RunReport {
    let now = unix_ms(SystemTime::now());
    let mut run = Run {
        experiment,
        report: RunReport {
            schema_version: SCHEMA_VERSION,
            experiment: info(experiment, config.file.as_deref()),
            mode: env.mode(),
            slo_backend: env.slo_backend().name().to_string(),
            started_ms: now,
            ended_ms: now,
            phases: Vec::new(),
            verdict: Verdict {
                outcome: Outcome::Error,
                reason: String::new(),
            },
            slos: Vec::new(),
            steady_state: None,
            recovery: None,
            abort: None,
            faults: Vec::new(),
            load: None,
            reactions: Vec::new(),
            reruns: Vec::new(),
        },
        phase_started: now,
        progress: None,
    };
    run.enter(Phase::Validate);
    run.report.slos = experiment
        .spec
        .slos
        .iter()
        .map(|s| SloReport::from_slo(s, Vec::new()))
        .collect();

    // Resolve.
    run.enter(Phase::Resolve);
    let mut placements = Vec::new();
    for fault in &experiment.spec.faults {
        match env.resolve(fault).await {
            Ok(p) if p.is_empty() => {
                let e = RunError::InvalidInput(format!(
                    "fault `{}`: its target resolved to nothing",
                    fault.name
                ));
                return run.finish(e.outcome(), e.to_string());
            }
            Ok(p) => placements.push(p),
            Err(e) => return run.finish(e.outcome(), e.to_string()),
        }
    }

    // Preflight.
    run.enter(Phase::Preflight);
    let client = experiment
        .spec
        .load
        .as_ref()
        .map(|_| ClientBackend::new(&load_service(experiment).unwrap_or_default()));
    let backends = Backends {
        server: env.slo_backend(),
        client,
    };
    if let Err(e) = preflight(experiment, env.as_ref(), &placements, &backends).await {
        return run.finish(e.outcome(), e.to_string());
    }
    // Every request goes to its agent as a validate-only call first, in the dry run and
    // before a real run injects anything: a refusal stops the run with nothing injected.
    let (faults, refused) = check_faults(experiment, &placements, config.lease_ttl).await;
    if let Some(e) = refused {
        run.report.faults = faults;
        return run.finish(e.outcome(), e.to_string());
    }
    if config.dry_run {
        let checked = faults.len();
        run.report.faults = faults;
        for slo in &mut run.report.slos {
            slo.verdict = SloVerdict::NotMeasured;
        }
        let reason = format!(
            "dry run: {} fault(s) resolved, preflighted and checked by their agents ({checked} request(s)), nothing injected",
            experiment.spec.faults.len()
        );
        return run.finish(Outcome::Pass, reason);
    }

    execute(
        run, experiment, env, config, interrupt, placements, backends,
    )
    .await
}

async fn preflight(
    experiment: &Experiment,
    env: &dyn Environment,
    placements: &[Vec<Placement>],
    backends: &Backends,
) -> Result<(), RunError> {
    let mut caps_by_agent: BTreeMap<String, Capabilities> = BTreeMap::new();
    for agent in env.agents() {
        let caps = agent.capabilities().await.map_err(|e| {
            RunError::Infrastructure(format!(
                "preflight: agent {} unreachable: {e}",
                agent.endpoint()
            ))
        })?;
        caps_by_agent.insert(agent.endpoint(), caps);
    }
    let mut problems = Vec::new();
    for (fault, places) in experiment.spec.faults.iter().zip(placements) {
        for p in places {
            let endpoint = p.agent.endpoint();
            let caps = match caps_by_agent.get(&endpoint) {
                Some(c) => c.clone(),
                None => {
                    let c = p.agent.capabilities().await.map_err(|e| {
                        RunError::Infrastructure(format!(
                            "preflight: agent {endpoint} unreachable: {e}"
                        ))
                    })?;
                    caps_by_agent.insert(endpoint.clone(), c.clone());
                    c
                }
            };
            if let Err(why) = preflight_fault(fault, &caps) {
                problems.push(why);
            }
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(RunError::Infrastructure(format!(
            "preflight failed, nothing was injected: {}",
            problems.join("; ")
        )));
    }
    let slo_like = experiment
        .spec
        .slos
        .iter()
        .map(|s| (s.name.clone(), s.source, &s.kind))
        .chain(
            experiment
                .spec
                .abort
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("abort[{i}]"), a.source, &a.kind)),
        );
    let mut slo_problems = Vec::new();
    for (name, source, kind) in slo_like {
        match backends.for_source(source) {
            Ok(b) => {
                if let Err(e) = b.supports(kind) {
                    slo_problems.push(format!("{name}: {e}"));
                }
            }
            Err(e) => slo_problems.push(format!("{name}: {e}")),
        }
    }
    if !slo_problems.is_empty() {
        return Err(RunError::InvalidInput(format!(
            "these SLOs cannot be evaluated in this mode: {}",
            slo_problems.join("; ")
        )));
    }
    Ok(())
}

/// Every request the injection would send, sent to its agent as a validate-only call
/// (`POST /v1/faults?dryRun=true`), so a fault the agent would refuse stops the run
/// before anything is injected. Every refusal is reported at once, each fault marked
/// `failed` or, when the agent's protection rules refuse its target, `refused` (invalid
/// input, exit 2: the experiment asks for what that node never allows).
async fn check_faults(
    experiment: &Experiment,
    placements: &[Vec<Placement>],
    ttl: Duration,
) -> (Vec<FaultApplication>, Option<RunError>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    let mut protected = false;
    for (fault, places) in experiment.spec.faults.iter().zip(placements) {
        for (i, p) in places.iter().enumerate() {
            let request = faults::request(&experiment.name, fault, i, p, ttl);
            let mut app = faults::skipped(fault, i, &p.target, &experiment.name);
            match p.agent.check(request).await {
                Ok(backend) => app.backend = Some(backend),
                Err(e) => {
                    app.status = faults::not_applied(&e);
                    protected |= app.status == FaultStatus::Refused;
                    app.error = Some(e.to_string());
                    refused.push(format!("fault `{}` on {}: {e}", fault.name, p.target.name));
                }
            }
            out.push(app);
        }
    }
    if refused.is_empty() {
        return (out, None);
    }
    let message = format!(
        "the agent refuses {} request(s), nothing was injected: {}",
        refused.len(),
        refused.join("; ")
    );
    let error = if protected {
        RunError::InvalidInput(message)
    } else {
        RunError::Infrastructure(message)
    };
    (out, Some(error))
}

/// Live state of one SLO or abort condition across ticks.
struct Series {
    samples: Vec<Evaluation>,
    latest: Option<Evaluation>,
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    mut run: Run<'_>,
    experiment: &Experiment,
    env: Arc<dyn Environment>,
    config: &RunConfig,
    interrupt: &Interrupt,
    placements: Vec<Vec<Placement>>,
    backends: Backends,
) -> RunReport {
    let spec = &experiment.spec;
    let recovery_within = spec.recovery.as_ref().map(|r| r.within.0);
    // The load (and the run) lasts long enough to judge recovery. A revert that comes
    // late (a busy agent, a slow machine) moves recovery's window later too: the run (and
    // its load) may go on `recovery_grace` longer to judge it, rather than ending first
    // and calling the system unrecovered.
    let planned_end = faultline_spec::model::disturbance_end(&spec.faults, surges(spec));
    let (total, recovery_grace) = match (planned_end, recovery_within) {
        (Some(end), Some(within)) => (
            spec.duration.0.max(end + within + config.tick),
            within + config.tick,
        ),
        _ => (spec.duration.0, Duration::ZERO),
    };

    // Start the load.
    run.enter(Phase::SteadyState);
    let stop = CancellationToken::new();
    let mut load_handle: Option<LoadHandle> = None;
    if let (Some(load_spec), Some(client)) = (&spec.load, &backends.client) {
        let started = env.load_url(&load_spec.target).and_then(|url| {
            let (cfg, transport) =
                load::LoadConfig::from_spec(load_spec, &url, total + recovery_grace)
                    .map_err(|e| RunError::InvalidInput(e.to_string()))?;
            load::start(cfg, transport, client.measurements(), stop.child_token())
                .map_err(|e| RunError::Infrastructure(format!("load generator: {e}")))
        });
        match started {
            Ok(h) => load_handle = Some(h),
            Err(e) => return run.finish(e.outcome(), e.to_string()),
        }
    }
    let t0 = Instant::now();
    let wall0 = SystemTime::now();
    run.report.started_ms = unix_ms(wall0);
    if config.progress != ProgressMode::Hidden {
        run.progress = Some(Progress::new(total, config.progress));
    }

    // Fault tasks wait for the steady state before injecting.
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let ledger = faults::Ledger::default();
    let mut tasks = tokio::task::JoinSet::new();
    for (fault, places) in spec.faults.iter().zip(placements) {
        let job = faults::FaultJob {
            experiment: experiment.name.clone(),
            fault: fault.clone(),
            initial: places,
            start: t0 + fault.after.0,
            end: t0 + fault.after.0 + fault.duration.0,
            ttl: config.lease_ttl,
            go: go_rx.clone(),
            stop: stop.clone(),
            ledger: ledger.clone(),
        };
        tasks.spawn(job.run(env_resolver(&env)));
    }

    let steady_at = steady_check_at(experiment);
    let judge_from = |slo: &Slo| slo.window.0.min(steady_at).max(config.tick * 2);
    let mut series: Vec<Series> = spec
        .slos
        .iter()
        .map(|_| Series {
            samples: Vec::new(),
            latest: None,
        })
        .collect();
    let mut abort_since: Vec<Option<(Instant, i64)>> = vec![None; spec.abort.len()];
    let mut steady_done = spec.faults.is_empty() && spec.steady_state.is_none();
    let mut failure: Option<(Outcome, String)> = None;
    let mut recovery: Option<RecoveryResult> = None;
    let mut recovered_at: Option<Duration> = None;

    let mut reactions = Vec::new();
    let mut tick = tokio::time::interval_at(t0 + config.tick, config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = interrupt.token.cancelled() => {
                let now = unix_ms(SystemTime::now());
                run.report.abort = Some(AbortRecord {
                    condition: interrupt.reason(),
                    since_ms: now,
                    triggered_ms: now,
                    evaluation: None,
                });
                failure = Some((Outcome::Aborted, format!("the run was {}", interrupt.reason())));
                break;
            }
            () = ledger.failed() => {
                let why = ledger.failure().unwrap_or_default();
                failure = Some((Outcome::Error, why));
                break;
            }
            _ = tick.tick() => {}
        }
        let elapsed = t0.elapsed();
        let at = SystemTime::now();
        // SLOs and aborts look back no further than the load has run: a window reaching
        // back before the first request would count the empty time before it as part of
        // the rate (a throughput of 150/s reads as 100/s over a 15 s window judged 10 s in).
        let clipped = |window: Duration| window.min(elapsed.max(config.tick));

        // Evaluate every SLO.
        let evals = join_all(spec.slos.iter().map(|slo| async {
            match backends.for_source(slo.source) {
                Ok(b) => b
                    .evaluate(&slo.kind, clipped(slo.window.0), at)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }))
        .await;
        // The fleet's own reactions, drawn beside the SLIs; a backend that cannot read
        // them only loses the drawing, never the verdict.
        match backends.server.reactions(at).await {
            Ok(r) => reactions.extend(r.into_iter().map(|r| (unix_ms(at), r))),
            Err(e) => tracing::debug!(error = %e, "fleet reactions not read"),
        }
        for ((slo, s), e) in spec.slos.iter().zip(series.iter_mut()).zip(evals) {
            let e = match e {
                Ok(e) => e,
                Err(why) => no_data(
                    &slo.kind,
                    at,
                    backends
                        .for_source(slo.source)
                        .map(|b| b.name())
                        .unwrap_or("none"),
                    why,
                ),
            };
            if elapsed + Duration::from_millis(50) >= judge_from(slo) {
                s.samples.push(e.clone());
            }
            s.latest = Some(e);
        }

        // Abort conditions.
        let aborts = join_all(spec.abort.iter().map(|a| async {
            match backends.for_source(a.source) {
                Ok(b) => b.evaluate(&a.kind, clipped(a.window.0), at).await.ok(),
                Err(_) => None,
            }
        }))
        .await;
        let mut fired = None;
        for (i, (cond, e)) in spec.abort.iter().zip(aborts).enumerate() {
            let violated = e.as_ref().is_some_and(|e| e.status == SloStatus::Violated);
            if !violated {
                abort_since[i] = None;
                continue;
            }
            let (since, since_ms) = *abort_since[i].get_or_insert((Instant::now(), unix_ms(at)));
            if since.elapsed() + Duration::from_millis(50) >= cond.for_duration.0 && fired.is_none()
            {
                fired = Some((i, since_ms, e));
            }
        }
        if let Some((i, since_ms, e)) = fired {
            let cond = &spec.abort[i];
            let text = format!(
                "abort condition `{}` violated for {}",
                describe_kind(&cond.kind),
                cond.for_duration
            );
            run.report.abort = Some(AbortRecord {
                condition: text.clone(),
                since_ms,
                triggered_ms: unix_ms(SystemTime::now()),
                evaluation: e,
            });
            failure = Some((Outcome::Aborted, format!("aborted: {text}")));
            break;
        }

        // Steady state, just before the first fault.
        if !steady_done && elapsed + Duration::from_millis(50) >= steady_at {
            steady_done = true;
            let (result, taint) = steady_state(experiment, &backends, elapsed, at).await;
            let passed = result.passed;
            let judged = result.reason.is_some();
            let unsure = result.inconclusive.join(", ");
            run.report.steady_state = Some(result);
            if !passed && !judged {
                // Only generator-distorted SLOs stood in the way: the steady state was
                // neither shown nor refuted, so injecting would earn no verdict either.
                failure = Some((
                    Outcome::Inconclusive,
                    format!(
                        "steady state could not be judged, nothing was injected: client SLOs {unsure} were distorted by the load generator ({}); raise load.maxConnections",
                        taint.unwrap_or_default()
                    ),
                ));
                break;
            }
            if !passed {
                let why = run
                    .report
                    .steady_state
                    .as_ref()
                    .and_then(|r| r.reason.clone())
                    .unwrap_or_default();
                failure = Some((
                    Outcome::Fail,
                    format!("steady state did not hold, nothing was injected: {why}"),
                ));
                break;
            }
            go_tx.send_replace(true);
            if !spec.faults.is_empty() {
                run.enter(Phase::Inject);
            }
        }

        // Recovery, after the last fault is reverted and the last surge is over.
        if steady_done {
            if let (Some(within), Some((t_end, t_end_ms))) = (
                recovery_within,
                disturbance_over(spec, &ledger, elapsed, t0, wall0),
            ) {
                if run.phase() != Phase::Recovery {
                    run.enter(Phase::Recovery);
                }
                let since = t_end.elapsed();
                if recovery.is_none() && since + Duration::from_millis(50) >= config.tick {
                    // Each check looks at [T, T + since]. One that comes after the deadline
                    // (a busy machine held the controller up) looks at the system as it was
                    // at the deadline, [T, T + within]: the backends answer for any past
                    // instant, so a late check neither passes late nor fails unseen time.
                    let checked = since.min(within);
                    let as_of = wall_at(t_end_ms) + checked;
                    let (not_holding, unsure) =
                        recovery_holds(experiment, &backends, as_of, checked).await;
                    if not_holding.is_empty() && unsure.is_empty() {
                        recovered_at = Some(checked);
                    }
                    if recovered_at.is_some() || checked + Duration::from_millis(50) >= within {
                        recovery = Some(RecoveryResult {
                            passed: recovered_at.is_some(),
                            within_ms: ms(within),
                            last_fault_ended_ms: t_end_ms,
                            recovered_after_ms: recovered_at.map(ms),
                            not_recovered: not_holding,
                            inconclusive: unsure,
                            unjudged: None,
                        });
                    }
                }
            }
        }

        update_progress(&mut run, spec, &series, &ledger, elapsed, total);
        // Reap finished fault tasks (their results are in the ledger).
        while tasks.try_join_next().is_some() {}
        let recovery_pending = !recovery_grace.is_zero() && recovery.is_none();
        if elapsed + Duration::from_millis(50) >= total
            && (!recovery_pending || elapsed + Duration::from_millis(50) >= total + recovery_grace)
        {
            break;
        }
    }

    // How long the run watched the system; what follows only winds it down.
    let watched = t0.elapsed();
    // Revert: stop the fault tasks (each reverts at once) and the load.
    if run.phase() != Phase::Recovery {
        run.enter(Phase::Revert);
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let mut generator = None;
    if let Some(h) = load_handle {
        h.stop();
        generator = h.wait().await.ok();
    }
    if let Some(c) = &backends.client {
        let mut summary = c
            .measurements()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .summary();
        if let Some(r) = generator {
            summary.connections = Some(r.connections as u64);
            summary.max_connections = Some(r.max_connections as u64);
            summary.peak_connections = Some(r.peak_connections as u64);
        }
        let measurements = c.measurements();
        let measurements = measurements.read().unwrap_or_else(|e| e.into_inner());
        summary.surges = surges(spec)
            .iter()
            .map(|s| {
                measurements.surge(
                    wall0 + s.after.0,
                    s.duration.0,
                    s.rate.as_per_second(),
                    wall0,
                )
            })
            .collect();
        run.report.load = Some(summary);
    }
    run.report.faults = ledger.applications();
    crate::effect::judge_all(&spec.faults, &mut run.report.faults);
    run.report.reactions = crate::report::ReactionSeries::collect(reactions);
    run.enter(Phase::Verdict);
    run.report.slos = spec
        .slos
        .iter()
        .zip(series)
        .map(|(slo, s)| SloReport::from_slo(slo, s.samples))
        .collect();
    if recovery.is_none()
        && failure.is_none()
        && let (Some(within), Some((t_end, t_end_ms))) = (
            recovery_within,
            disturbance_over(spec, &ledger, t0.elapsed(), t0, wall0),
        )
    {
        // Not the system's doing: the disturbance ended too late for the run to watch
        // `within` of recovery (a revert that took seconds), so nothing was earned.
        let ended = t_end.saturating_duration_since(t0);
        let planned = planned_end.unwrap_or_default();
        recovery = Some(RecoveryResult {
            passed: false,
            within_ms: ms(within),
            last_fault_ended_ms: t_end_ms,
            recovered_after_ms: None,
            not_recovered: Vec::new(),
            inconclusive: Vec::new(),
            unjudged: Some(format!(
                "{} ended at +{:.1}s, {:.1}s after its planned end at +{:.1}s, and the run stopped watching at +{:.1}s, before {:.1}s of recovery could be watched",
                run.report.disturbance(),
                ended.as_secs_f64(),
                ended.saturating_sub(planned).as_secs_f64(),
                planned.as_secs_f64(),
                watched.as_secs_f64(),
                within.as_secs_f64()
            )),
        });
    }
    run.report.recovery = recovery;

    let (outcome, reason) = match failure {
        Some((outcome, reason)) => {
            let failing = failing_slos(&run.report.slos);
            if failing.is_empty() || matches!(outcome, Outcome::Error | Outcome::Inconclusive) {
                (outcome, reason)
            } else {
                (
                    outcome,
                    format!("{reason}; failing SLOs: {}", failing.join(", ")),
                )
            }
        }
        None => verdict(&run.report),
    };
    run.finish(outcome, reason)
}

fn env_resolver(env: &Arc<dyn Environment>) -> faults::Resolver {
    faults::Resolver(Arc::clone(env))
}

fn no_data(kind: &SloKind, at: SystemTime, backend: &str, why: String) -> Evaluation {
    Evaluation::judged(
        kind,
        at,
        None,
        crate::slo::Evidence {
            backend: backend.to_string(),
            query: crate::slo::promql::query_text(kind, Duration::from_secs(0)),
            detail: Some(why),
            generator: None,
        },
    )
}

fn failing_slos(slos: &[SloReport]) -> Vec<String> {
    slos.iter()
        .filter(|s| s.verdict != SloVerdict::Pass)
        .map(|s| format!("{} ({})", s.name, s.verdict.as_str()))
        .collect()
}

/// The verdict once the run went its course: a failure earned on undistorted data wins;
/// then SLOs (or a recovery) the load generator distorted, or a required fault that did
/// not bite as asked (the effect gate), make the run inconclusive; otherwise it passed.
fn verdict(report: &RunReport) -> (Outcome, String) {
    let failing: Vec<String> = report
        .slos
        .iter()
        .filter(|s| matches!(s.verdict, SloVerdict::Fail | SloVerdict::NoData))
        .map(|s| format!("{} ({})", s.name, s.verdict.as_str()))
        .collect();
    let unjudged: Vec<&SloReport> = report
        .slos
        .iter()
        .filter(|s| s.verdict == SloVerdict::Inconclusive)
        .collect();
    if !failing.is_empty() {
        let also = if unjudged.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = unjudged.iter().map(|s| s.name.as_str()).collect();
            format!("; not judged (load generator delay): {}", names.join(", "))
        };
        return (
            Outcome::Fail,
            format!("SLOs not met: {}{also}", failing.join(", ")),
        );
    }
    if let Some(r) = &report.recovery
        && !r.passed
        && !r.not_recovered.is_empty()
    {
        return (
            Outcome::Fail,
            format!(
                "not recovered within {} ms after {}: {}",
                r.within_ms,
                report.disturbance(),
                r.not_recovered.join(", ")
            ),
        );
    }
    let recovery_unjudged = report
        .recovery
        .as_ref()
        .filter(|r| !r.passed)
        .map(|r| r.inconclusive.clone())
        .unwrap_or_default();
    let mut unearned = Vec::new();
    if !unjudged.is_empty() || !recovery_unjudged.is_empty() {
        unearned.push(inconclusive_reason(report, &unjudged, &recovery_unjudged));
    }
    if let Some(why) = report.recovery.as_ref().and_then(|r| r.unjudged.as_ref()) {
        unearned.push(format!("no verdict earned: recovery was not judged: {why}"));
    }
    let undelivered: Vec<String> = report
        .load
        .iter()
        .flat_map(|l| &l.surges)
        .filter(|s| !s.delivered())
        .map(|s| s.describe())
        .collect();
    if !undelivered.is_empty() {
        unearned.push(format!(
            "no verdict earned: the SLOs held, but the load generator did not send {:.0}% of a surge's asked rate on time, so the run did not test what it asked: {}",
            crate::slo::client::SURGE_DELIVERED_SHARE * 100.0,
            undelivered.join("; ")
        ));
    }
    let missed = crate::effect::blocking(&report.faults);
    if !missed.is_empty() {
        unearned.push(format!(
            "no verdict earned: the SLOs held, but {}; the run did not test what it asked (relax with the fault's `effect: {{tolerance, required}}`)",
            missed.join("; ")
        ));
    }
    if !unearned.is_empty() {
        return (Outcome::Inconclusive, unearned.join("; "));
    }
    let extra = report
        .recovery
        .as_ref()
        .and_then(|r| r.recovered_after_ms)
        .map(|ms| format!("; recovered {ms} ms after {}", report.disturbance()))
        .unwrap_or_default();
    (
        Outcome::Pass,
        format!("every SLO held ({} SLOs){extra}", report.slos.len()),
    )
}

/// Why no verdict was earned: which SLOs the load generator distorted, by how much,
/// and what to change.
fn inconclusive_reason(report: &RunReport, slos: &[&SloReport], recovery: &[String]) -> String {
    let mut parts = Vec::new();
    if !slos.is_empty() {
        let names: Vec<String> = slos
            .iter()
            .map(|s| {
                s.worst_taint().map_or(s.name.clone(), |t| {
                    format!(
                        "{} ({} of {} measurements: {})",
                        s.name,
                        s.inconclusive().count(),
                        s.samples.len(),
                        t.reason
                    )
                })
            })
            .collect();
        parts.push(format!("client SLOs not judged: {}", names.join("; ")));
    }
    if !recovery.is_empty() {
        parts.push(format!("recovery not judged for {}", recovery.join(", ")));
    }
    let room = report
        .load
        .as_ref()
        .and_then(|l| Some((l.max_connections?, l.peak_connections?)))
        .map(|(max, peak)| format!(" (maxConnections {max}, {peak} were open at the peak)"))
        .unwrap_or_default();
    format!(
        "no verdict earned: the load generator delayed requests beyond its tolerance, so client measurements describe the generator, not the system; {}; raise load.maxConnections{room} or lower load.rate",
        parts.join("; ")
    )
}

/// The steady-state check, plus the generator distortion that made any SLO in it
/// inconclusive.
async fn steady_state(
    experiment: &Experiment,
    backends: &Backends,
    elapsed: Duration,
    at: SystemTime,
) -> (CheckResult, Option<String>) {
    let Some(ss) = &experiment.spec.steady_state else {
        return (
            CheckResult {
                passed: true,
                window_ms: 0,
                slos: BTreeMap::new(),
                reason: None,
                inconclusive: Vec::new(),
            },
            None,
        );
    };
    let window = ss.window.0.min(elapsed).max(Duration::from_secs(1));
    let mut verdicts = BTreeMap::new();
    let mut bad = Vec::new();
    let mut unsure = Vec::new();
    let mut taint = None;
    for name in &ss.slos {
        let Some(slo) = experiment.spec.slos.iter().find(|s| s.name == *name) else {
            continue;
        };
        let v = match backends.for_source(slo.source) {
            Ok(b) => match b.evaluate(&slo.kind, window, at).await {
                Ok(e) => {
                    if let Some(t) = &e.evidence.generator {
                        taint.get_or_insert_with(|| t.reason.clone());
                    }
                    SloVerdict::of(std::slice::from_ref(&e))
                }
                Err(_) => SloVerdict::NoData,
            },
            Err(_) => SloVerdict::NoData,
        };
        match v {
            SloVerdict::Pass => {}
            SloVerdict::Inconclusive => unsure.push(name.clone()),
            _ => bad.push(format!("{name} ({})", v.as_str())),
        }
        verdicts.insert(name.clone(), v);
    }
    (
        CheckResult {
            passed: bad.is_empty() && unsure.is_empty(),
            window_ms: ms(window),
            slos: verdicts,
            reason: (!bad.is_empty()).then(|| bad.join(", ")),
            inconclusive: unsure,
        },
        taint,
    )
}

/// The wall-clock instant `ms` Unix milliseconds stand for.
fn wall_at(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The load's surges; none without load.
fn surges(spec: &faultline_spec::ExperimentSpec) -> &[faultline_spec::model::Surge] {
    spec.load.as_ref().map_or(&[], |l| l.surges.as_slice())
}

/// When the disturbance `recovery` is judged from ended, monotonic and Unix ms: the last
/// fault's revert and the last surge's scheduled end, whichever is later. `None` while
/// either is still to come, or when the experiment has neither.
fn disturbance_over(
    spec: &faultline_spec::ExperimentSpec,
    ledger: &faults::Ledger,
    elapsed: Duration,
    t0: Instant,
    wall0: SystemTime,
) -> Option<(Instant, i64)> {
    let faults_over = if spec.faults.is_empty() {
        Some(None)
    } else if ledger.all_reverted(spec.faults.len()) {
        ledger.last_reverted().map(Some)
    } else {
        None
    };
    let surge_over = match faultline_spec::model::disturbance_end(&[], surges(spec)) {
        None => Some(None),
        Some(end) if elapsed >= end => Some(Some((t0 + end, unix_ms(wall0 + end)))),
        Some(_) => None,
    };
    let (faults_over, surge_over) = (faults_over?, surge_over?);
    faults_over
        .into_iter()
        .chain(surge_over)
        .max_by_key(|(at, _)| *at)
}

/// SLOs that do not hold over the data since the last revert (`since` ago), and SLOs
/// that cannot be judged on it because the load generator distorted it.
async fn recovery_holds(
    experiment: &Experiment,
    backends: &Backends,
    at: SystemTime,
    since: Duration,
) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut unsure = Vec::new();
    for slo in &experiment.spec.slos {
        let window = slo.window.0.min(since);
        let status = match backends.for_source(slo.source) {
            Ok(b) => b
                .evaluate(&slo.kind, window, at)
                .await
                .map_or(SloStatus::NoData, |e| e.status),
            Err(_) => SloStatus::NoData,
        };
        match status {
            SloStatus::Ok => {}
            SloStatus::Inconclusive => unsure.push(slo.name.clone()),
            SloStatus::Violated | SloStatus::NoData => bad.push(slo.name.clone()),
        }
    }
    (bad, unsure)
}

fn update_progress(
    run: &mut Run<'_>,
    spec: &faultline_spec::ExperimentSpec,
    series: &[Series],
    ledger: &faults::Ledger,
    elapsed: Duration,
    total: Duration,
) {
    let phase = run.phase();
    let Some(progress) = run.progress.as_mut() else {
        return;
    };
    let slis = spec
        .slos
        .iter()
        .zip(series)
        .map(|(slo, s)| LiveSli {
            name: slo.name.clone(),
            value: s.latest.as_ref().and_then(|e| e.value),
            unit: crate::slo::Threshold::of(&slo.kind).unit,
            status: s.latest.as_ref().map_or(SloStatus::NoData, |e| e.status),
        })
        .collect();
    progress.update(&LiveState {
        phase,
        elapsed,
        total,
        slis,
        active_faults: ledger.active_names(),
    });
}
