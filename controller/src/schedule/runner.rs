//! The seam between the scheduler/operator and the experiment runner (`chaos run`).
//!
//! The runner (issue 7) implements [`ExperimentRunner`]; the scheduler and the
//! Kubernetes operator only ever call it through this trait, so both are tested with
//! fakes and the runner can evolve without touching them.
//!
//! Contract for implementors:
//! - `run` executes the whole lifecycle of DESIGN.md §4 once and returns when every
//!   fault it applied has been reverted (or its lease has been left to expire because
//!   the agent is unreachable, which [`RunOutcome::verdict`] then reports as
//!   [`Verdict::Error`]).
//! - When `cancel` fires, the run stops as fast as it safely can, reverts its faults
//!   and returns [`Verdict::Aborted`]. The scheduler relies on this for the `Replace`
//!   concurrency policy and on shutdown.
//! - `context.faults` (when set) is told about every fault application and revert, so
//!   the operator can keep a durable record in the custom resource's status and revert
//!   leftovers when the experiment is deleted. Fault ids must be usable as one URL path
//!   segment (no `/`); the operator derives re-injection ids as `<id>@<pod uid>`.
//! - `context.targets`, when not empty, are the targets already resolved by the caller
//!   (Kubernetes: pods chosen by selector and seed, each with the agent on its node).
//!   The runner uses them for the faults they name instead of resolving targets itself.
//! - `context.pods` (Kubernetes): a `process: {signal: SIGKILL}` fault on a pod target
//!   is delivered as a pod deletion through this, not through the agent.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use faultline_spec::Experiment;
use faultline_spec::wire::{FaultId, FaultRequest, PodRef, ResolvedTarget};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The result of one run, as the scheduler and operator need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    /// Pass, fail, aborted or infrastructure error.
    pub verdict: Verdict,
    /// Names of the SLOs that were violated (empty on pass).
    pub failing_slos: Vec<String>,
    /// Where the runner wrote its JSON report, if it wrote one.
    pub report_path: Option<PathBuf>,
    /// The JSON report itself (the runner's `RunReport`), kept in the run history.
    pub report: Option<serde_json::Value>,
}

/// The verdict of a run. Serialized in lower case; it is also the `verdict` label of
/// `faultline_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Every SLO held.
    Pass,
    /// At least one SLO was violated.
    Fail,
    /// The run was stopped (abort condition, cancellation or replacement).
    Aborted,
    /// Infrastructure failure: an agent was unreachable or a fault could not be applied.
    Error,
    /// No verdict was earned: the SLOs held, but a fault did not bite as asked or the
    /// load generator distorted a client SLO (`chaos run` exit 4).
    Inconclusive,
    /// The run never started: the target lock was held and the lock policy is `skip`.
    Skipped,
}

impl Verdict {
    /// The label value used in metrics, reports and the CRD status.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Aborted => "aborted",
            Verdict::Error => "error",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Skipped => "skipped",
        }
    }
}

/// Receives every fault application and revert of a run, so that the caller can keep
/// a durable record (the operator writes it into the custom resource's status).
pub trait FaultObserver: Send + Sync {
    /// A fault was applied on the agent at `agent` (base URL) under this request.
    fn applied(&self, agent: &str, request: &FaultRequest);
    /// The fault with this id was reverted (or its revert was confirmed).
    fn reverted(&self, id: &FaultId);
}

/// A target the caller already resolved, with the agent that acts on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacedTarget {
    /// The name of the fault (in the experiment) this target is for.
    pub fault: String,
    /// The concrete target, as sent to the agent.
    pub target: ResolvedTarget,
    /// Base URL of the agent on the target's node (`http://10.0.0.7:7070`).
    pub agent: String,
}

/// Pod operations that go through the Kubernetes API rather than an agent.
pub trait PodActions: Send + Sync {
    /// Delete the pod at once (grace period 0): the Kubernetes form of SIGKILL.
    fn kill<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), String>>;
}

/// What the caller hands the runner besides the experiment.
#[derive(Clone, Default)]
pub struct RunContext {
    /// Told about each fault applied and reverted; `None` when nobody records them.
    pub faults: Option<Arc<dyn FaultObserver>>,
    /// Where the runner should write its reports (JSON and others).
    pub report_dir: Option<PathBuf>,
    /// Targets resolved by the caller; empty when the runner resolves them itself.
    pub targets: Vec<PlacedTarget>,
    /// Pod actions through the Kubernetes API; `None` outside Kubernetes.
    pub pods: Option<Arc<dyn PodActions>>,
    /// The experiment document as written (YAML or JSON), when the caller has it. A
    /// runner that re-executes `chaos run` writes it to a file.
    pub source: Option<String>,
}

impl RunContext {
    /// Where one run of `experiment` writes its files:
    /// `<report_dir or work_dir>/<experiment>/<unix ms>/`.
    pub fn run_dir(&self, work_dir: &std::path::Path, experiment: &str) -> PathBuf {
        self.report_dir
            .as_deref()
            .unwrap_or(work_dir)
            .join(experiment)
            .join(chrono::Utc::now().timestamp_millis().to_string())
    }
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("faults", &self.faults.as_ref().map(|_| "FaultObserver"))
            .field("report_dir", &self.report_dir)
            .field("targets", &self.targets)
            .field("pods", &self.pods.as_ref().map(|_| "PodActions"))
            .field("source", &self.source.as_ref().map(|s| s.len()))
            .finish()
    }
}

/// Runs one experiment to its verdict. Implemented by the runner of `chaos run`.
pub trait ExperimentRunner: Send + Sync + 'static {
    /// Run `experiment` once. See the module docs for the contract.
    fn run(
        &self,
        experiment: Experiment,
        context: RunContext,
        cancel: CancellationToken,
    ) -> impl Future<Output = RunOutcome> + Send;
}
