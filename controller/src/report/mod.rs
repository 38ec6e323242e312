//! The run report: one serde model ([`RunReport`]) that the runner fills, rendered as
//! JSON ([`json`]), JUnit XML ([`junit`]), self-contained HTML ([`html`]) and a
//! terminal summary ([`terminal`]), plus the exit-code mapping ([`exit_code`]). Several
//! runs in order (a suite) are summarised by [`suite::SuiteIndex`].
//!
//! The JSON form is the model itself and is documented in `docs/report.md`; the other
//! renderings read only the model, so `chaos report run.json --html out.html` can
//! re-render any saved run.

pub mod html;
pub mod json;
pub mod junit;
pub mod suite;
pub mod terminal;

use std::collections::BTreeMap;

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{FaultKind, Slo, SloKind, SloSource};
use serde::{Deserialize, Serialize};

use crate::effect::EffectCheck;
use crate::slo::client::{GeneratorTaint, LoadSummary};
use crate::slo::reactions::{ReactionKind, ReactionSample};
use crate::slo::{Evaluation, SloStatus, Threshold};

/// Version of the JSON report schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors of report rendering and loading.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The JSON could not be written or read.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A saved report has a schema version this build does not read.
    #[error("report schema version {found} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
    },
    /// Writing a rendering failed.
    #[error("writing the report failed: {0}")]
    Fmt(#[from] std::fmt::Error),
}

/// Everything a run produced, as evidence for its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Which experiment ran.
    pub experiment: ExperimentInfo,
    /// Where it ran.
    pub mode: RunMode,
    /// Which SLO backend judged server-side SLOs (`embedded` or `prometheus`).
    pub slo_backend: String,
    /// Run start, Unix milliseconds. All chart times are relative to this.
    pub started_ms: i64,
    /// Run end, Unix milliseconds.
    pub ended_ms: i64,
    /// Lifecycle phases in order, with their times.
    pub phases: Vec<PhaseRecord>,
    /// The verdict and why.
    pub verdict: Verdict,
    /// Every SLO with every measurement.
    pub slos: Vec<SloReport>,
    /// The steady-state check, when the experiment has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<CheckResult>,
    /// The recovery check, when the experiment has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryResult>,
    /// The abort condition that stopped the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortRecord>,
    /// Every fault application (one per fault and resolved target).
    pub faults: Vec<FaultApplication>,
    /// The built-in load generator's summary, when the experiment had load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSummary>,
    /// What the fleet's own resilience policies did over the run: one series per
    /// breaker, retrying upstream, degrading service or rate limit that did anything
    /// (quiet ones are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionSeries>,
    /// The verdicts of earlier attempts of this experiment that ended inconclusive and
    /// were run again (`chaos run --rerun-inconclusive`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<Verdict>,
}

impl RunReport {
    /// What recovery is judged from, for verdicts: `the last fault`, `the surge`, ...
    pub fn disturbance(&self) -> &'static str {
        let surges = self.load.as_ref().map_or(0, |l| l.surges.len());
        match (self.faults.is_empty(), surges) {
            (false, 0) => "the last fault",
            (true, 1) => "the surge",
            (true, _) => "the last surge",
            (false, _) => "the last fault and surge",
        }
    }
}

/// One of the fleet's own reactions over the run, sampled once per runner tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionSeries {
    /// Which policy.
    pub kind: ReactionKind,
    /// The service whose policy it is.
    pub service: String,
    /// The upstream it guards, for breakers and retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `[Unix ms, value]`, oldest first.
    pub points: Vec<(i64, f64)>,
}

impl ReactionSeries {
    /// Groups per-tick readings into series, leaving out the ones that stayed at zero
    /// (a closed breaker, no retries): they did nothing worth drawing.
    pub fn collect(
        readings: impl IntoIterator<Item = (i64, ReactionSample)>,
    ) -> Vec<ReactionSeries> {
        type Key = (ReactionKind, String, Option<String>);
        let mut by: BTreeMap<Key, Vec<(i64, f64)>> = BTreeMap::new();
        for (at, r) in readings {
            by.entry((r.kind, r.service, r.upstream))
                .or_default()
                .push((at, r.value));
        }
        by.into_iter()
            .filter(|(_, points)| points.iter().any(|(_, v)| *v > 0.0))
            .map(|((kind, service, upstream), points)| ReactionSeries {
                kind,
                service,
                upstream,
                points,
            })
            .collect()
    }

    /// `breaker orders→payments`, `degradation gateway`.
    pub fn label(&self) -> String {
        match &self.upstream {
            Some(u) => format!("{} {}→{u}", self.kind.as_str(), self.service),
            None => format!("{} {}", self.kind.as_str(), self.service),
        }
    }

    /// The highest value reached.
    pub fn peak(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// Where the value changed: `(Unix ms, new value)`, starting with the first point.
    pub fn changes(&self) -> Vec<(i64, f64)> {
        let mut out: Vec<(i64, f64)> = Vec::new();
        for &(t, v) in &self.points {
            if out.last().is_none_or(|(_, last)| *last != v) {
                out.push((t, v));
            }
        }
        out
    }

    /// One line for people: breaker and degradation changes with their times relative
    /// to `started_ms`, or the peak rate for retries and 429s.
    pub fn describe(&self, started_ms: i64) -> String {
        let at = |t: i64| format!("+{:.0}s", (t - started_ms) as f64 / 1000.0);
        match self.kind {
            ReactionKind::Breaker => {
                let state = |v: f64| match v as i64 {
                    0 => "closed",
                    1 => "half-open",
                    _ => "open",
                };
                let steps: Vec<String> = self
                    .changes()
                    .into_iter()
                    .skip_while(|(_, v)| *v == 0.0)
                    .map(|(t, v)| format!("{} {}", state(v), at(t)))
                    .collect();
                format!("{}: {}", self.label(), steps.join(", "))
            }
            ReactionKind::Degradation => {
                let steps: Vec<String> = self
                    .changes()
                    .into_iter()
                    .skip_while(|(_, v)| *v == 0.0)
                    .map(|(t, v)| format!("level {v:.0} {}", at(t)))
                    .collect();
                format!("{}: {}", self.label(), steps.join(", "))
            }
            ReactionKind::Retries | ReactionKind::RateLimited => {
                let first = self.points.iter().find(|p| p.1 > 0.0).map_or(0, |p| p.0);
                format!(
                    "{}: peak {:.1}/s, first at {}",
                    self.label(),
                    self.peak(),
                    at(first)
                )
            }
        }
    }
}

/// The experiment as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The file it came from, when run from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `spec.duration` in milliseconds.
    pub duration_ms: u64,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The environment a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunMode {
    /// Local processes on loopback, in-process agent.
    Local,
    /// Docker compose.
    Compose,
    /// Kubernetes.
    Kubernetes,
}

impl RunMode {
    /// The mode's name as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Local => "local",
            RunMode::Compose => "compose",
            RunMode::Kubernetes => "kubernetes",
        }
    }
}

/// The runner's lifecycle phases (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Validating the experiment.
    Validate,
    /// Resolving targets.
    Resolve,
    /// Preflighting the agents.
    Preflight,
    /// Starting the load and checking the steady state.
    SteadyState,
    /// Faults are being injected and observed.
    Inject,
    /// Reverting faults.
    Revert,
    /// Checking recovery.
    Recovery,
    /// Writing the verdict and reports.
    Verdict,
}

impl Phase {
    /// The phase's name for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Validate => "validate",
            Phase::Resolve => "resolve",
            Phase::Preflight => "preflight",
            Phase::SteadyState => "steady state",
            Phase::Inject => "inject",
            Phase::Revert => "revert",
            Phase::Recovery => "recovery",
            Phase::Verdict => "verdict",
        }
    }
}

/// When a phase ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRecord {
    /// Which phase.
    pub phase: Phase,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// End, Unix milliseconds.
    pub ended_ms: i64,
}

/// How a run ended. Each outcome maps to one exit code ([`exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Every SLO held (and steady state and recovery passed).
    Pass,
    /// An SLO was violated or had no data, or steady state or recovery failed.
    Fail,
    /// An abort condition held, or the run was interrupted (Ctrl-C, SIGTERM).
    Aborted,
    /// The experiment was invalid; nothing ran.
    InvalidInput,
    /// Infrastructure failed: an agent was unreachable, a fault could not be applied,
    /// the SLO backend could not answer.
    Error,
    /// No verdict was earned: the SLOs held, but a required fault did not bite as asked
    /// (the effect gate), or a client-side SLO could not be judged because the load
    /// generator itself delayed requests beyond its tolerance (see `docs/running.md`).
    Inconclusive,
    /// The experiment was not run: this mode cannot run it, or the suite it belongs to
    /// stopped first (`--fail-fast`, an interrupt). The reason says which.
    Skipped,
}

impl Outcome {
    /// `pass`, `fail`, `aborted`, `invalid`, `error`, `inconclusive`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Aborted => "aborted",
            Outcome::InvalidInput => "invalid",
            Outcome::Error => "error",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The process exit code for an outcome: 0 pass (or skipped), 1 violated or aborted,
/// 2 invalid input, 3 infrastructure failure, 4 no verdict earned (inconclusive). The
/// one place this mapping lives; a suite exits with its most severe code
/// ([`exit_severity`]).
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Pass | Outcome::Skipped => 0,
        Outcome::Fail | Outcome::Aborted => 1,
        Outcome::InvalidInput => 2,
        Outcome::Error => 3,
        Outcome::Inconclusive => 4,
    }
}

/// How bad an exit code is, for picking a suite's: an error (3) outweighs invalid input
/// (2), which outweighs a failure (1), which outweighs an unearned verdict (4), which
/// outweighs a pass (0). Inconclusive ranks below fail so that a suite with a real
/// failure in it never reports only that some verdict was not earned.
pub fn exit_severity(code: u8) -> u8 {
    match code {
        0 => 0,
        4 => 1,
        1 => 2,
        2 => 3,
        _ => 4,
    }
}

/// The verdict of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// What happened.
    pub outcome: Outcome,
    /// Why, in one sentence a person reads (names the failing SLO, the abort
    /// condition, or the infrastructure error).
    pub reason: String,
}

/// The verdict on one SLO over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SloVerdict {
    /// Every judged measurement held.
    Pass,
    /// At least one judged measurement broke the threshold.
    Fail,
    /// Measurements were missing, so the SLO cannot be said to hold. Not a pass.
    NoData,
    /// Client-side measurements were distorted by the load generator itself (requests
    /// waited inside it beyond its tolerance), so the SLO was not judged. Not a pass.
    Inconclusive,
    /// Nothing was measured because nothing ran: a dry run. Neither a pass nor a failure.
    NotMeasured,
}

impl SloVerdict {
    /// The verdict over a set of judged measurements: any violation fails (only
    /// measurements the load generator did not distort can be violations); otherwise
    /// any inconclusive measurement makes the SLO inconclusive; otherwise any missing
    /// measurement (or none at all) is `noData`; otherwise pass.
    pub fn of(samples: &[Evaluation]) -> SloVerdict {
        if samples.iter().any(|e| e.status == SloStatus::Violated) {
            SloVerdict::Fail
        } else if samples.iter().any(|e| e.status == SloStatus::Inconclusive) {
            SloVerdict::Inconclusive
        } else if samples.is_empty() || samples.iter().any(|e| e.status == SloStatus::NoData) {
            SloVerdict::NoData
        } else {
            SloVerdict::Pass
        }
    }

    /// `pass`, `fail`, `no data`, `inconclusive`, `not measured`.
    pub fn as_str(self) -> &'static str {
        match self {
            SloVerdict::Pass => "pass",
            SloVerdict::Fail => "fail",
            SloVerdict::NoData => "no data",
            SloVerdict::Inconclusive => "inconclusive",
            SloVerdict::NotMeasured => "not measured",
        }
    }
}

/// One SLO and everything measured for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SloReport {
    /// The SLO's name.
    pub name: String,
    /// `errorRate`, `latency`, `throughput` or `promql`.
    pub kind: String,
    /// One line: what is measured and the bound, e.g. `p99 latency of gateway <= 800.0ms`.
    pub description: String,
    /// `server` or `client`.
    pub source: String,
    /// Evaluation window in milliseconds.
    pub window_ms: u64,
    /// The query that produced the values (PromQL, or the client computation).
    pub query: String,
    /// The bounds.
    pub threshold: Threshold,
    /// Every measurement, oldest first.
    pub samples: Vec<Evaluation>,
    /// The verdict over the run.
    pub verdict: SloVerdict,
}

impl SloReport {
    /// Builds the report of `slo` from its judged measurements; the verdict is
    /// [`SloVerdict::of`] the samples. The query is the one the first sample ran, or
    /// the compiled PromQL when there are no samples.
    pub fn from_slo(slo: &Slo, samples: Vec<Evaluation>) -> SloReport {
        let window = slo.window.0;
        let query = samples
            .first()
            .map(|e| e.evidence.query.clone())
            .unwrap_or_else(|| crate::slo::promql::query_text(&slo.kind, window));
        SloReport {
            name: slo.name.clone(),
            kind: kind_name(&slo.kind).to_string(),
            description: describe_kind(&slo.kind),
            source: match slo.source {
                SloSource::Server => "server".to_string(),
                SloSource::Client => "client".to_string(),
            },
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            query,
            threshold: Threshold::of(&slo.kind),
            verdict: SloVerdict::of(&samples),
            samples,
        }
    }

    /// The measured value furthest on the wrong side of the threshold (the highest
    /// against a `max`, the lowest against a `min`).
    pub fn worst_value(&self) -> Option<f64> {
        let values = self
            .samples
            .iter()
            .filter_map(|e| e.value)
            .filter(|v| !v.is_nan());
        if self.threshold.max.is_none() && self.threshold.min.is_some() {
            values.reduce(f64::min)
        } else {
            values.reduce(f64::max)
        }
    }

    /// Measurements that broke the threshold.
    pub fn violations(&self) -> impl Iterator<Item = &Evaluation> {
        self.samples
            .iter()
            .filter(|e| e.status == SloStatus::Violated)
    }

    /// Measurements not judged because the load generator distorted them.
    pub fn inconclusive(&self) -> impl Iterator<Item = &Evaluation> {
        self.samples
            .iter()
            .filter(|e| e.status == SloStatus::Inconclusive)
    }

    /// The worst generator distortion among the inconclusive measurements (the largest
    /// generator delay), with its figures.
    pub fn worst_taint(&self) -> Option<&GeneratorTaint> {
        self.inconclusive()
            .filter_map(|e| e.evidence.generator.as_ref())
            .max_by(|a, b| a.delay_ms.total_cmp(&b.delay_ms))
    }
}

/// The kind's name as written in experiment files.
pub fn kind_name(kind: &SloKind) -> &'static str {
    match kind {
        SloKind::ErrorRate { .. } => "errorRate",
        SloKind::Latency { .. } => "latency",
        SloKind::Throughput { .. } => "throughput",
        SloKind::Promql { .. } => "promql",
    }
}

/// One line saying what an SLO kind measures and its bound.
pub fn describe_kind(kind: &SloKind) -> String {
    let bound = Threshold::of(kind).describe();
    match kind {
        SloKind::ErrorRate {
            service,
            route: Some(route),
            ..
        } => format!("error rate of {service} {route} {bound}"),
        SloKind::ErrorRate { service, .. } => format!("error rate of {service} {bound}"),
        SloKind::Latency {
            service, quantile, ..
        } => format!("p{} latency of {service} {bound}", quantile * 100.0),
        SloKind::Throughput { service, .. } => {
            format!("successful requests/s of {service} {bound}")
        }
        SloKind::Promql { expr, .. } => format!("{expr} {bound}"),
    }
}

/// The result of the steady-state check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Whether every listed SLO held.
    pub passed: bool,
    /// Observation window in milliseconds.
    pub window_ms: u64,
    /// Verdict per SLO name.
    pub slos: BTreeMap<String, SloVerdict>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// SLOs that could not be judged because the load generator distorted their
    /// client measurements; the check then neither passed nor failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconclusive: Vec<String>,
}

/// The result of the recovery check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryResult {
    /// Whether every SLO held again within the allowed time.
    pub passed: bool,
    /// `recovery.within` in milliseconds.
    pub within_ms: u64,
    /// When the last fault (or load surge, when it ended later) ended, Unix milliseconds.
    pub last_fault_ended_ms: i64,
    /// How long after that every SLO held again, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_after_ms: Option<u64>,
    /// SLOs that had not recovered in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_recovered: Vec<String>,
    /// SLOs whose recovery could not be judged because the load generator distorted
    /// their client measurements (when nothing else failed, recovery is inconclusive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconclusive: Vec<String>,
    /// Why recovery was not judged at all: the run ended before `within` had passed
    /// since the disturbance ended (a revert that came late). The run is inconclusive
    /// unless an SLO failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unjudged: Option<String>,
}

impl RecoveryResult {
    /// Why recovery was neither shown nor refuted, when it was not: it was not judged at
    /// all, or only SLOs the load generator distorted stood in the way.
    pub fn not_judged(&self) -> Option<String> {
        if self.passed || !self.not_recovered.is_empty() {
            return None;
        }
        if let Some(why) = &self.unjudged {
            return Some(why.clone());
        }
        (!self.inconclusive.is_empty()).then(|| {
            format!(
                "the load generator delayed requests of {}",
                self.inconclusive.join(", ")
            )
        })
    }
}

/// The abort condition that stopped a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortRecord {
    /// The condition as a person reads it, or `interrupted (SIGINT)`.
    pub condition: String,
    /// When it started to hold, Unix milliseconds.
    pub since_ms: i64,
    /// When the run stopped, Unix milliseconds.
    pub triggered_ms: i64,
    /// The measurement that completed its `for:`, when an SLO-like condition fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

/// How applying one fault went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultStatus {
    /// Applied and reverted.
    Reverted,
    /// Applied; reverted by lease expiry instead of an explicit revert.
    Expired,
    /// Could not be applied.
    Failed,
    /// Refused by the agent's protection rules (a protected target): nothing applied.
    Refused,
    /// Never applied (the run stopped first, or a dry run).
    Skipped,
}

/// One fault applied to one resolved target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultApplication {
    /// The fault's name in the experiment.
    pub name: String,
    /// The fault id used with the agent.
    pub id: String,
    /// The target as resolved.
    pub target: ResolvedTarget,
    /// What was injected.
    pub fault: FaultKind,
    /// Planned window relative to the run start, milliseconds: `[after, after + duration)`.
    pub planned_start_ms: u64,
    /// Planned window end relative to the run start, milliseconds.
    pub planned_end_ms: u64,
    /// When the agent applied it, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<i64>,
    /// When it was reverted, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_ms: Option<i64>,
    /// How it went.
    pub status: FaultStatus,
    /// The injection backend the agent chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent measured the fault to do.
    #[serde(default)]
    pub effect: ObservedEffect,
    /// The effect gate's judgement of [`Self::effect`] against what was asked; absent
    /// when the fault was never applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_check: Option<EffectCheck>,
}

impl FaultApplication {
    /// The actual window relative to the run start in milliseconds, falling back to
    /// the planned one for the parts that did not happen.
    pub fn window_relative(&self, started_ms: i64) -> (f64, f64) {
        let start = self
            .applied_ms
            .map_or(self.planned_start_ms as f64, |t| (t - started_ms) as f64);
        let end = self
            .reverted_ms
            .map_or(self.planned_end_ms as f64, |t| (t - started_ms) as f64);
        (start, end.max(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::{Evidence, Unit};

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(exit_code(Outcome::Pass), 0);
        assert_eq!(exit_code(Outcome::Fail), 1);
        assert_eq!(exit_code(Outcome::Aborted), 1);
        assert_eq!(exit_code(Outcome::InvalidInput), 2);
        assert_eq!(exit_code(Outcome::Error), 3);
        assert_eq!(exit_code(Outcome::Inconclusive), 4);
    }

    fn eval(status: SloStatus) -> Evaluation {
        Evaluation {
            at_ms: 0,
            value: (status != SloStatus::NoData).then_some(1.0),
            threshold: Threshold {
                max: Some(1.0),
                min: None,
                unit: Unit::Number,
            },
            status,
            evidence: Evidence {
                backend: "embedded".into(),
                query: "q".into(),
                detail: None,
                generator: None,
            },
        }
    }

    #[test]
    fn slo_verdict_never_passes_missing_data() {
        assert_eq!(SloVerdict::of(&[]), SloVerdict::NoData);
        assert_eq!(
            SloVerdict::of(&[eval(SloStatus::Ok), eval(SloStatus::NoData)]),
            SloVerdict::NoData
        );
        assert_eq!(
            SloVerdict::of(&[eval(SloStatus::NoData), eval(SloStatus::Violated)]),
            SloVerdict::Fail
        );
        assert_eq!(SloVerdict::of(&[eval(SloStatus::Ok)]), SloVerdict::Pass);
    }

    #[test]
    fn slo_verdict_fails_on_an_undistorted_violation_else_is_inconclusive_if_any_was_distorted() {
        assert_eq!(
            SloVerdict::of(&[eval(SloStatus::Inconclusive), eval(SloStatus::Violated)]),
            SloVerdict::Fail
        );
        assert_eq!(
            SloVerdict::of(&[eval(SloStatus::Ok), eval(SloStatus::Inconclusive)]),
            SloVerdict::Inconclusive
        );
        assert_eq!(
            SloVerdict::of(&[eval(SloStatus::NoData), eval(SloStatus::Inconclusive)]),
            SloVerdict::Inconclusive
        );
    }
}
