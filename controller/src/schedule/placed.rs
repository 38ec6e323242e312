//! Runs on targets the caller already placed: the Kubernetes operator's pods, each with
//! the agent on its node.
//!
//! - [`PlacedEnvironment`]: the runner's [`Environment`] over [`PlacedTarget`]s. Agents
//!   are reached over HTTP ([`HttpAgent`]); server-side SLOs go to a Prometheus server;
//!   `load: {service: X}` is the Service's cluster DNS name. Every apply and revert is
//!   reported to the caller's [`FaultObserver`], and a `process: {signal: SIGKILL}`
//!   fault on a pod is a pod deletion through [`PodActions`] (the contract in
//!   [`super::runner`]).
//! - [`InProcessRunner`]: the operator's [`ExperimentRunner`]. It runs the experiment in
//!   the controller's process, so the observer and the pod actions reach the runner
//!   (a child `chaos run` could not carry them), and writes the JSON, JUnit and HTML
//!   reports like `chaos run` does.
//!
//! `chaos run` uses the same environment when `FAULTLINE_TARGETS_FILE` names a JSON list
//! of [`PlacedTarget`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_spec::wire::{
    Capabilities, FaultPhase, FaultRequest, FaultState, Lease, ObservedEffect,
};
use faultline_spec::{Experiment, Fault, FaultKind, LoadTarget, Signal};
use tokio_util::sync::CancellationToken;

use super::process::failing_testcases;
use super::runner::{
    ExperimentRunner, FaultObserver, PlacedTarget, PodActions, RunContext, RunOutcome, Verdict,
};
use crate::operator::agent::HttpAgent;
use crate::report::{Outcome, RunMode, RunReport, html, json, junit};
use crate::run::env::{AgentCallError, AgentHandle, Environment, Placement};
use crate::run::{self as runner, Interrupt, RunConfig, RunError};
use crate::slo::prometheus::PrometheusBackend;
use crate::slo::{BoxFuture, NoBackend, SloBackend};

/// How a [`PlacedEnvironment`] reaches what it needs.
#[derive(Clone, Default)]
pub struct PlacedOptions {
    /// File holding the agents' bearer token (the Secret mount).
    pub agent_token_file: PathBuf,
    /// Prometheus base URL for server-side SLOs; without it only `source: client` SLOs
    /// can be checked, and the preflight says so for the others.
    pub prometheus: Option<String>,
    /// Per-request timeout towards Prometheus.
    pub prometheus_timeout: Duration,
    /// Namespace of `load: {service: X}` (the experiment's own namespace).
    pub namespace: Option<String>,
    /// Told about every fault applied and reverted.
    pub observer: Option<Arc<dyn FaultObserver>>,
    /// Pod deletion for `SIGKILL` process faults on pods.
    pub pods: Option<Arc<dyn PodActions>>,
}

impl std::fmt::Debug for PlacedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedOptions")
            .field("agent_token_file", &self.agent_token_file)
            .field("prometheus", &self.prometheus)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The environment of a run whose targets the caller resolved.
pub struct PlacedEnvironment {
    targets: Vec<PlacedTarget>,
    agents: BTreeMap<String, Arc<dyn AgentHandle>>,
    slo: Arc<dyn SloBackend>,
    namespace: String,
}

impl std::fmt::Debug for PlacedEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedEnvironment")
            .field("targets", &self.targets)
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("slo", &self.slo.name())
            .finish()
    }
}

impl PlacedEnvironment {
    /// One HTTP agent per distinct agent URL among `targets`. Fails with
    /// [`RunError::InvalidInput`] on a malformed Prometheus URL.
    pub fn new(targets: Vec<PlacedTarget>, options: PlacedOptions) -> Result<Self, RunError> {
        let mut agents: BTreeMap<String, Arc<dyn AgentHandle>> = BTreeMap::new();
        for t in &targets {
            if agents.contains_key(&t.agent) {
                continue;
            }
            let http = HttpAgent::new(t.agent.clone(), options.agent_token_file.clone())
                .map_err(|e| RunError::Infrastructure(e.to_string()))?;
            let agent = ObservedAgent {
                inner: http,
                observer: options.observer.clone(),
                pods: options.pods.clone(),
                killed: Default::default(),
            };
            agents.insert(t.agent.clone(), Arc::new(agent));
        }
        let slo: Arc<dyn SloBackend> = match &options.prometheus {
            Some(url) => Arc::new(
                PrometheusBackend::new(url, options.prometheus_timeout)
                    .map_err(|e| RunError::InvalidInput(format!("prometheus: {e}")))?,
            ),
            None => Arc::new(NoBackend::new(
                "no Prometheus server is configured (pass --prometheus URL)",
            )),
        };
        Ok(Self {
            targets,
            agents,
            slo,
            namespace: options.namespace.unwrap_or_else(|| "default".into()),
        })
    }

    /// Reads the targets from `file` (a JSON list of [`PlacedTarget`]), as
    /// `FAULTLINE_TARGETS_FILE` names it.
    pub fn from_file(file: &Path, options: PlacedOptions) -> Result<Self, RunError> {
        let text = std::fs::read(file)
            .map_err(|e| RunError::InvalidInput(format!("{}: {e}", file.display())))?;
        let targets: Vec<PlacedTarget> = serde_json::from_slice(&text).map_err(|e| {
            RunError::InvalidInput(format!(
                "{}: expected a JSON list of {{fault, target, agent}}: {e}",
                file.display()
            ))
        })?;
        Self::new(targets, options)
    }
}

impl Environment for PlacedEnvironment {
    fn mode(&self) -> RunMode {
        RunMode::Kubernetes
    }

    fn resolve<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<Vec<Placement>, RunError>> {
        Box::pin(async move {
            let placed: Vec<Placement> = self
                .targets
                .iter()
                .filter(|t| t.fault == fault.name)
                .filter_map(|t| {
                    self.agents.get(&t.agent).map(|agent| Placement {
                        target: t.target.clone(),
                        agent: agent.clone(),
                        fault: None,
                    })
                })
                .collect();
            if placed.is_empty() {
                return Err(RunError::InvalidInput(format!(
                    "fault `{}`: the caller placed no target for it",
                    fault.name
                )));
            }
            Ok(placed)
        })
    }

    fn agents(&self) -> Vec<Arc<dyn AgentHandle>> {
        self.agents.values().cloned().collect()
    }

    fn slo_backend(&self) -> Arc<dyn SloBackend> {
        self.slo.clone()
    }

    fn load_url(&self, target: &LoadTarget) -> Result<String, RunError> {
        Ok(match target {
            LoadTarget::Url(u) => u.clone(),
            // The Service's cluster DNS name on its default port (80).
            LoadTarget::Service(s) => format!("http://{s}.{}.svc", self.namespace),
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Nothing was started: the cluster's workloads belong to the cluster.
        Box::pin(async {})
    }
}

/// An HTTP agent that reports applies and reverts to the caller and delivers pod kills
/// through the Kubernetes API.
struct ObservedAgent {
    inner: HttpAgent,
    observer: Option<Arc<dyn FaultObserver>>,
    pods: Option<Arc<dyn PodActions>>,
    /// Pod deletions by fault id: their revert has nothing to undo and returns this.
    killed: std::sync::Mutex<std::collections::HashMap<String, FaultState>>,
}

impl ObservedAgent {
    /// Deletes the pod (grace period 0) and describes it as the agent would a signal.
    async fn kill_pod(
        &self,
        pods: &dyn PodActions,
        request: FaultRequest,
    ) -> Result<FaultState, AgentCallError> {
        let Some(pod) = &request.target.pod else {
            unreachable!("kill_pod is only called for pod targets")
        };
        pods.kill(pod)
            .await
            .map_err(|message| AgentCallError::Failed {
                agent: "kubernetes-api".into(),
                message: format!("deleting pod {}/{}: {message}", pod.namespace, pod.name),
            })?;
        let now = u64::try_from(crate::slo::unix_ms(SystemTime::now())).unwrap_or(0);
        Ok(FaultState {
            effect: ObservedEffect {
                summary: format!("deleted pod {}/{} (grace 0)", pod.namespace, pod.name),
                signal: Some(Signal::Kill),
                // The API accepted the deletion: that is the kill, delivered (the effect
                // gate reads this as it reads an agent's signal).
                metrics: [("delivered".to_string(), 1.0)].into(),
                ..ObservedEffect::default()
            },
            id: request.id,
            experiment: request.experiment,
            target: request.target,
            fault: request.fault,
            phase: FaultPhase::Reverted,
            lease: Lease {
                ttl: request.ttl,
                expires_at_ms: now,
                renewals: 0,
            },
            applied_at_ms: now,
            backend: "kubernetes-api".into(),
        })
    }
}

impl AgentHandle for ObservedAgent {
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities, AgentCallError>> {
        self.inner.capabilities()
    }

    fn check(&self, request: FaultRequest) -> BoxFuture<'_, Result<String, AgentCallError>> {
        let pod_kill = matches!(&request.fault, FaultKind::Process(p) if p.signal == Signal::Kill)
            && request.target.pod.is_some();
        if pod_kill && self.pods.is_some() {
            // Deleted through the Kubernetes API, not by the agent (see `apply`).
            return Box::pin(async { Ok("kubernetes-api".to_string()) });
        }
        self.inner.check(request)
    }

    fn apply(&self, request: FaultRequest) -> BoxFuture<'_, Result<FaultState, AgentCallError>> {
        Box::pin(async move {
            let pod_kill = matches!(&request.fault, FaultKind::Process(p) if p.signal == Signal::Kill)
                && request.target.pod.is_some();
            if let (true, Some(pods)) = (pod_kill, &self.pods) {
                // One-shot: nothing stays applied, so nothing is recorded as active.
                let state = self.kill_pod(pods.as_ref(), request).await?;
                self.killed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(state.id.clone(), state.clone());
                return Ok(state);
            }
            let state = self.inner.apply(request.clone()).await?;
            if let Some(o) = &self.observer {
                o.applied(&self.inner.endpoint(), &request);
            }
            Ok(state)
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), AgentCallError>> {
        self.inner.renew(id, ttl)
    }

    fn revert<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FaultState>, AgentCallError>> {
        Box::pin(async move {
            let killed = self
                .killed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            if killed.is_some() {
                return Ok(killed);
            }
            let state = self.inner.revert(id).await?;
            if let Some(o) = &self.observer {
                o.reverted(&id.to_string());
            }
            Ok(state)
        })
    }
}

/// Runs each experiment in this process on the caller's placed targets (the operator's
/// runner). Reports go to `<report_dir or work_dir>/<experiment>/<unix ms>/`.
#[derive(Debug, Clone)]
pub struct InProcessRunner {
    /// File holding the agents' bearer token.
    pub agent_token_file: PathBuf,
    /// Prometheus base URL for server-side SLOs.
    pub prometheus: Option<String>,
    /// Where reports go when the context names no report directory.
    pub work_dir: PathBuf,
    /// Lease length of every fault the runner applies.
    pub lease_ttl: Duration,
}

impl InProcessRunner {
    fn outcome(report: &RunReport, dir: &Path) -> RunOutcome {
        let verdict = match report.verdict.outcome {
            Outcome::Pass => Verdict::Pass,
            Outcome::Fail => Verdict::Fail,
            Outcome::Aborted => Verdict::Aborted,
            Outcome::Inconclusive => Verdict::Inconclusive,
            Outcome::InvalidInput | Outcome::Error | Outcome::Skipped => Verdict::Error,
        };
        let junit_text = junit::to_junit(report).unwrap_or_default();
        let mut report_path = None;
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let json_path = dir.join("report.json");
            std::fs::write(&json_path, json::to_json(report).unwrap_or_default())?;
            std::fs::write(dir.join("junit.xml"), &junit_text)?;
            std::fs::write(
                dir.join("report.html"),
                html::to_html(report).unwrap_or_default(),
            )?;
            report_path = Some(json_path);
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), "cannot write the run's reports: {e}");
        }
        RunOutcome {
            verdict,
            failing_slos: failing_testcases(&junit_text),
            report_path,
            report: serde_json::to_value(report).ok(),
        }
    }
}

impl ExperimentRunner for InProcessRunner {
    async fn run(
        &self,
        experiment: Experiment,
        context: RunContext,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let dir = context.run_dir(&self.work_dir, &experiment.name);
        let options = PlacedOptions {
            agent_token_file: self.agent_token_file.clone(),
            prometheus: self.prometheus.clone(),
            prometheus_timeout: Duration::from_secs(5),
            namespace: experiment.namespace.clone(),
            observer: context.faults.clone(),
            pods: context.pods.clone(),
        };
        let env: Arc<dyn Environment> = match PlacedEnvironment::new(context.targets, options) {
            Ok(env) => Arc::new(env),
            Err(e) => {
                let report = runner::early_report(Some(&experiment), None, RunMode::Kubernetes, &e);
                return Self::outcome(&report, &dir);
            }
        };
        let interrupt = Interrupt::new();
        let relay = {
            let interrupt = interrupt.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                interrupt.trigger("cancelled by the controller");
            })
        };
        let config = RunConfig {
            lease_ttl: self.lease_ttl,
            ..RunConfig::default()
        };
        let report = runner::run(&experiment, env.clone(), &config, &interrupt).await;
        relay.abort();
        env.shutdown().await;
        Self::outcome(&report, &dir)
    }
}
