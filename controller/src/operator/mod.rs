//! The Kubernetes operator (`chaos controller --kubernetes`).
//!
//! - [`crd`]: the `Experiment` custom resource and its status.
//! - [`targets`]: replayable pod selection, denied namespaces, agent discovery.
//! - [`agent`]: the agent calls the operator itself makes (revert, re-inject).
//! - [`leader`]: leader election through a Lease.
//!
//! Reconcile, per `Experiment`:
//! 1. The finalizer `faultline.dev/revert-faults` is added before anything is injected
//!    (`kube::runtime::finalizer`).
//! 2. A run starts when it is due: at once for an unscheduled experiment that never
//!    ran, on a new value of the `faultline.dev/run` annotation, or at the cron fire
//!    time. The status goes to `Running`, an Event `Started` is recorded, and the run
//!    goes through [`ExperimentRunner`] on its own task. Every fault the runner applies
//!    is written into `status.activeFaults` with its lease expiry.
//! 3. While the run is active, a target pod that was replaced (same name, new uid) is
//!    re-injected through the agent on its new node, and those re-injections are
//!    renewed until the runner reverts the original fault.
//! 4. When the run ends, the status gets the verdict, the result (with failing SLOs) is
//!    appended to the last N, and an Event `Passed` or `Failed` is recorded.
//! 5. On deletion, the active run is cancelled (the runner reverts), then every fault
//!    still listed in the status is reverted through the agent on its node. A fault
//!    whose agent is gone blocks deletion only until its lease expires: after that the
//!    agent has reverted it on its own or is gone with it, so the finalizer is released.

pub mod agent;
pub mod crd;
pub mod leader;
pub mod targets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use faultline_spec::wire::{FaultId, FaultRequest, PodRef, ResolvedTarget};
use faultline_spec::{SelectionMode, Target, ValidateOptions};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizing, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::schedule::{
    Clock, ControllerMetrics, CronSchedule, ExperimentRunner, FaultObserver, PlacedTarget,
    PodActions, RunContext, RunOutcome, Verdict,
};
use agent::{AgentApi, AgentError};
use crd::{ActiveFault, Condition, Experiment, ExperimentStatus, Phase, RunResult};
use targets::{AgentLocator, NamespacePolicy};

/// The finalizer that makes deletion revert faults first.
pub const FINALIZER: &str = "faultline.dev/revert-faults";
/// Setting this annotation to a new value (e.g. a timestamp) runs the experiment now.
pub const RUN_ANNOTATION: &str = "faultline.dev/run";
/// The Kubernetes label a `{service: name}` target selects.
pub const SERVICE_LABEL: &str = "app.kubernetes.io/name";

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<OperatorError>>),
    /// An experiment targets a denied namespace.
    #[error(
        "namespace {0:?} is denied (kube-system and the controller's own namespace are denied by default)"
    )]
    DeniedNamespace(String),
    /// The experiment has no namespace (the CRD is namespaced, so this is a bug upstream).
    #[error("experiment has no namespace")]
    NoNamespace,
    /// Faults could not be reverted yet; retry after this long.
    #[error(
        "{count} fault(s) not reverted yet (agent unreachable, lease still live); retrying in {retry_after:?}"
    )]
    RevertPending {
        /// Faults left.
        count: usize,
        /// When to try again (at the latest when the first lease expires).
        retry_after: Duration,
    },
    /// An agent call failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// How the operator behaves.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Namespaces experiments may not target.
    pub namespaces: NamespacePolicy,
    /// Where the agents are.
    pub agents: AgentLocator,
    /// Lease TTL of faults the operator re-injects.
    pub fault_ttl: Duration,
    /// How many results the status keeps.
    pub keep_results: usize,
    /// How often a running experiment is re-checked (re-injection, renewals).
    pub poll: Duration,
    /// Passed to the runner.
    pub report_dir: Option<std::path::PathBuf>,
}

/// [`PodActions`] through the Kubernetes API.
#[derive(Clone)]
pub struct KubePodActions {
    client: Client,
}

impl KubePodActions {
    /// Pod actions with this client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl PodActions for KubePodActions {
    fn kill<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(pod.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            api.delete(&pod.name, &params)
                .await
                .map_err(|e| format!("delete pod {}/{}: {e}", pod.namespace, pod.name))?;
            Ok(())
        })
    }
}

struct ActiveRun {
    uid: String,
    /// When the run started: a watched object whose `lastRunTime` is older has not
    /// caught up with this run yet.
    started: DateTime<Utc>,
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
    book: Arc<Mutex<Vec<ActiveFault>>>,
}

/// Shared state of the reconciler.
pub struct Context<R> {
    client: Client,
    runner: Arc<R>,
    agents: Arc<dyn AgentApi>,
    recorder: Recorder,
    config: OperatorConfig,
    clock: Clock,
    metrics: Arc<ControllerMetrics>,
    runs: Mutex<HashMap<String, ActiveRun>>,
}

impl<R: ExperimentRunner> Context<R> {
    /// Build the reconciler's context.
    pub fn new(
        client: Client,
        runner: Arc<R>,
        agents: Arc<dyn AgentApi>,
        config: OperatorConfig,
        clock: Clock,
        metrics: Arc<ControllerMetrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "faultline-controller".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            runner,
            agents,
            config,
            clock,
            metrics,
            runs: Mutex::new(HashMap::new()),
        }
    }
}

fn key(exp: &Experiment) -> String {
    format!("{}/{}", exp.namespace().unwrap_or_default(), exp.name_any())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reconcile one `Experiment` (see the module docs).
pub async fn reconcile<R: ExperimentRunner>(
    exp: Arc<Experiment>,
    ctx: Arc<Context<R>>,
) -> Result<Action, OperatorError> {
    let ns = exp.namespace().ok_or(OperatorError::NoNamespace)?;
    let api: Api<Experiment> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, exp, |event| async {
        match event {
            Finalizing::Apply(exp) => apply(exp, &ctx, &api).await,
            Finalizing::Cleanup(exp) => cleanup(exp, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| OperatorError::Finalizer(Box::new(e)))
}

/// Requeue policy: pending reverts retry when the lease expires, everything else in 10 s.
pub fn error_policy<R>(
    _exp: Arc<Experiment>,
    error: &OperatorError,
    _ctx: Arc<Context<R>>,
) -> Action {
    if let OperatorError::Finalizer(inner) = error
        && let kube::runtime::finalizer::Error::CleanupFailed(OperatorError::RevertPending {
            retry_after,
            ..
        }) = inner.as_ref()
    {
        return Action::requeue(*retry_after);
    }
    tracing::warn!("reconcile failed: {error}");
    Action::requeue(Duration::from_secs(10))
}

async fn publish(
    ctx: &Context<impl Sized>,
    exp: &Experiment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &exp.object_ref(&())).await {
        tracing::warn!(experiment = %key(exp), "could not record event {reason}: {e}");
    }
}

async fn patch_status(
    api: &Api<Experiment>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), OperatorError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(OperatorError::Kube)?;
    Ok(())
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: now,
    }
}

/// The checked experiment behind a custom resource, through the same parser and
/// validator `chaos run` uses, so a resource means exactly what the file means.
pub fn to_checked(exp: &Experiment) -> Result<faultline_spec::Experiment, String> {
    let text = document(exp);
    // JSON is YAML; host CPU limits are the agent's business in a cluster.
    let mut exps = faultline_spec::parse_str(&text, &key(exp), &ValidateOptions::default())
        .map_err(|d| d.to_string())?;
    exps.pop()
        .ok_or_else(|| "no experiment in the resource".to_owned())
}

/// The experiment file a custom resource stands for (JSON, which is also YAML).
pub fn document(exp: &Experiment) -> String {
    let doc = json!({
        "apiVersion": faultline_spec::API_VERSION,
        "kind": faultline_spec::KIND,
        "metadata": {
            "name": exp.name_any(),
            "namespace": exp.namespace(),
            "labels": exp.labels(),
        },
        "spec": exp.spec,
    });
    doc.to_string()
}

fn target_namespaces(exp: &faultline_spec::Experiment, own: &str) -> Vec<String> {
    let mut out = vec![own.to_owned()];
    for f in &exp.spec.faults {
        if let Target::Pods(sel) = &f.target
            && let Some(ns) = &sel.namespace
        {
            out.push(ns.clone());
        }
    }
    out
}

async fn apply<R: ExperimentRunner>(
    exp: Arc<Experiment>,
    ctx: &Arc<Context<R>>,
    api: &Api<Experiment>,
) -> Result<Action, OperatorError> {
    let now = ctx.clock.now();
    let name = exp.name_any();
    let ns = exp.namespace().ok_or(OperatorError::NoNamespace)?;
    let status = exp.status.clone().unwrap_or_default();

    let checked = match to_checked(&exp) {
        Ok(c) => c,
        Err(message) => return invalid(ctx, api, &exp, "InvalidSpec", message, now).await,
    };
    for target_ns in target_namespaces(&checked, &ns) {
        if let Err(e) = ctx.config.namespaces.check(&target_ns) {
            return invalid(ctx, api, &exp, "DeniedNamespace", e.to_string(), now).await;
        }
    }

    let manual = exp
        .annotations()
        .get(RUN_ANNOTATION)
        .filter(|v| Some(*v) != status.last_run_request.as_ref())
        .cloned();
    let schedule = match &checked.spec.schedule {
        Some(s) => match CronSchedule::parse(&s.cron, s.time_zone.as_deref()) {
            Ok(c) => Some((c, s.concurrency_policy)),
            Err(e) => return invalid(ctx, api, &exp, "InvalidSchedule", e.to_string(), now).await,
        },
        None => None,
    };
    let fire = schedule.as_ref().and_then(|(cron, _)| {
        let base = status
            .last_schedule_time
            .or_else(|| {
                exp.meta()
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()))
            })
            .unwrap_or(now);
        cron.next_after(base)
    });
    let due = manual.is_some()
        || match &schedule {
            None => status.last_run_time.is_none(),
            Some(_) => fire.is_some_and(|t| t <= now),
        };

    // A run in progress: keep its targets injected; Replace cancels it when due.
    let active = {
        let runs = lock(&ctx.runs);
        runs.get(&key(&exp)).map(|r| {
            (
                r.cancel.clone(),
                *r.done.borrow(),
                r.book.clone(),
                r.started,
            )
        })
    };
    if let Some((cancel, finished, book, started)) = active {
        if !finished {
            let replace = matches!(
                schedule,
                Some((_, faultline_spec::ConcurrencyPolicy::Replace))
            );
            if due && replace {
                cancel.cancel();
            } else {
                reinject_restarted(ctx, &exp, &book).await?;
            }
            return Ok(Action::requeue(ctx.config.poll));
        }
        if status.last_run_time.is_none_or(|t| t < started) {
            // The cache still shows the object from before this run's status patch:
            // deciding "due" on it would start the same run twice.
            return Ok(Action::requeue(ctx.config.poll));
        }
        lock(&ctx.runs).remove(&key(&exp));
    }

    if !due {
        if let Some(next) = fire {
            if status.next_run_time != Some(next) || status.phase != Some(Phase::Scheduled) {
                patch_status(
                    api,
                    &name,
                    json!({"phase": Phase::Scheduled, "nextRunTime": next}),
                )
                .await?;
            }
            let wait = (next - now).to_std().unwrap_or_default();
            return Ok(Action::requeue(wait.min(Duration::from_secs(3600))));
        }
        return Ok(Action::await_change());
    }

    // Resolve the pods now, so the status and the Event say what is hit.
    let resolved = resolve_targets(ctx, &exp, &checked).await?;
    let mut conditions = status.conditions.clone();
    set_condition(
        &mut conditions,
        condition("Valid", true, "Validated", "spec is valid".into(), now),
    );
    set_condition(
        &mut conditions,
        condition("Running", true, "Started", "run started".into(), now),
    );
    let mut patch = json!({
        "phase": Phase::Running,
        "lastRunTime": now,
        "observedGeneration": exp.meta().generation,
        "conditions": conditions,
    });
    if manual.is_none()
        && let Some(t) = fire
    {
        patch["lastScheduleTime"] = json!(t);
    }
    if let Some(m) = &manual {
        patch["lastRunRequest"] = json!(m);
    }
    patch_status(api, &name, patch).await?;
    let hit: Vec<String> = resolved.iter().map(|t| t.target.name.clone()).collect();
    publish(
        ctx,
        &exp,
        EventType::Normal,
        "Started",
        format!(
            "run started; targets: {}",
            if hit.is_empty() {
                "none".into()
            } else {
                hit.join(", ")
            }
        ),
    )
    .await;
    start_run(ctx.clone(), exp.clone(), checked, resolved, status, now);
    Ok(Action::requeue(ctx.config.poll))
}

fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status && c.reason == new.reason => c.message = new.message,
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

async fn invalid<R>(
    ctx: &Arc<Context<R>>,
    api: &Api<Experiment>,
    exp: &Experiment,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> Result<Action, OperatorError> {
    let status = exp.status.clone().unwrap_or_default();
    let already = status.phase == Some(Phase::Invalid)
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Valid" && c.message == message);
    if !already {
        let mut conditions = status.conditions.clone();
        set_condition(
            &mut conditions,
            condition("Valid", false, reason, message.clone(), now),
        );
        patch_status(
            api,
            &exp.name_any(),
            json!({"phase": Phase::Invalid, "conditions": conditions}),
        )
        .await?;
        publish(ctx, exp, EventType::Warning, reason, message).await;
    }
    Ok(Action::await_change())
}

fn selector_of(
    exp: &Experiment,
    checked: &faultline_spec::Experiment,
    fault: &faultline_spec::Fault,
) -> Option<(
    String,
    std::collections::BTreeMap<String, String>,
    SelectionMode,
    u64,
)> {
    let own = exp.namespace().unwrap_or_default();
    let default_seed = faultline_spec::selection::default_seed(&own, &checked.name, &fault.name);
    match &fault.target {
        Target::Service(s) => Some((
            own,
            [(SERVICE_LABEL.to_owned(), s.name.clone())].into(),
            s.mode,
            s.seed.unwrap_or(default_seed),
        )),
        Target::Pods(sel) => Some((
            sel.namespace.clone().unwrap_or(own),
            sel.labels.clone(),
            sel.mode,
            sel.seed.unwrap_or(default_seed),
        )),
        Target::Pid(_) | Target::Container(_) => None,
    }
}

async fn resolve_targets<R>(
    ctx: &Arc<Context<R>>,
    exp: &Experiment,
    checked: &faultline_spec::Experiment,
) -> Result<Vec<PlacedTarget>, OperatorError> {
    let mut out = Vec::new();
    for fault in &checked.spec.faults {
        let Some((ns, labels, mode, seed)) = selector_of(exp, checked, fault) else {
            continue;
        };
        let candidates = targets::list_candidates(&ctx.client, &ns, &labels).await?;
        for pod in targets::select(&candidates, mode, seed) {
            let agent = ctx
                .config
                .agents
                .agent_on(&ctx.client, &pod.pod.node)
                .await?
                .unwrap_or_default();
            out.push(PlacedTarget {
                fault: fault.name.clone(),
                target: ResolvedTarget {
                    name: pod.pod.name.clone(),
                    pod: Some(pod.pod),
                    ..ResolvedTarget::default()
                },
                agent,
            });
        }
    }
    Ok(out)
}

enum FaultEvent {
    Applied(String, Box<FaultRequest>),
    Reverted(FaultId),
}

struct ChannelObserver(mpsc::UnboundedSender<FaultEvent>);

impl FaultObserver for ChannelObserver {
    fn applied(&self, agent: &str, request: &FaultRequest) {
        let _ = self.0.send(FaultEvent::Applied(
            agent.to_owned(),
            Box::new(request.clone()),
        ));
    }
    fn reverted(&self, id: &FaultId) {
        let _ = self.0.send(FaultEvent::Reverted(id.clone()));
    }
}

fn active_fault(
    fault: &str,
    agent: &str,
    request: &FaultRequest,
    expires: DateTime<Utc>,
) -> ActiveFault {
    let pod = request.target.pod.clone();
    ActiveFault {
        id: request.id.clone(),
        fault: fault.to_owned(),
        agent: agent.to_owned(),
        pod_namespace: pod
            .as_ref()
            .map(|p| p.namespace.clone())
            .unwrap_or_default(),
        pod: pod
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| request.target.name.clone()),
        pod_uid: pod.as_ref().map(|p| p.uid.clone()).unwrap_or_default(),
        node: pod.as_ref().map(|p| p.node.clone()).unwrap_or_default(),
        lease_expires: expires,
        request: serde_json::to_string(request).unwrap_or_default(),
    }
}

fn start_run<R: ExperimentRunner>(
    ctx: Arc<Context<R>>,
    exp: Arc<Experiment>,
    checked: faultline_spec::Experiment,
    placed: Vec<PlacedTarget>,
    status: ExperimentStatus,
    started: DateTime<Utc>,
) {
    let cancel = CancellationToken::new();
    let (done_tx, done_rx) = watch::channel(false);
    let book: Arc<Mutex<Vec<ActiveFault>>> = Arc::new(Mutex::new(Vec::new()));
    lock(&ctx.runs).insert(
        key(&exp),
        ActiveRun {
            uid: exp.uid().unwrap_or_default(),
            started,
            cancel: cancel.clone(),
            done: done_rx,
            book: book.clone(),
        },
    );
    tokio::spawn(async move {
        let ns = exp.namespace().unwrap_or_default();
        let name = exp.name_any();
        let api: Api<Experiment> = Api::namespaced(ctx.client.clone(), &ns);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let context = RunContext {
            faults: Some(Arc::new(ChannelObserver(tx))),
            report_dir: ctx.config.report_dir.clone(),
            targets: placed.clone(),
            pods: Some(Arc::new(KubePodActions::new(ctx.client.clone()))),
            source: Some(document(&exp)),
        };
        let run = ctx.runner.run(checked, context, cancel);
        tokio::pin!(run);
        let record = |ev: FaultEvent| {
            let mut b = lock(&book);
            match ev {
                FaultEvent::Applied(agent, req) => {
                    let ttl: Duration = req.ttl.into();
                    let expires =
                        ctx.clock.now() + chrono::Duration::from_std(ttl).unwrap_or_default();
                    b.retain(|f| f.id != req.id);
                    let fault = placed
                        .iter()
                        .find(|p| p.target.pod.is_some() && p.target.pod == req.target.pod)
                        .map(|p| p.fault.clone())
                        .unwrap_or_default();
                    b.push(active_fault(&fault, &agent, &req, expires));
                }
                FaultEvent::Reverted(id) => {
                    b.retain(|f| f.id != id && !f.id.starts_with(&format!("{id}@")))
                }
            }
            b.clone()
        };
        let outcome: RunOutcome = loop {
            tokio::select! {
                // Record faults before taking the outcome, so the status never misses one.
                biased;
                Some(ev) = rx.recv() => {
                    let faults = record(ev);
                    if let Err(e) = patch_status(&api, &name, json!({"activeFaults": faults})).await {
                        tracing::warn!(experiment = %name, "could not record active faults: {e}");
                    }
                }
                outcome = &mut run => break outcome,
            }
        };
        let mut faults = lock(&book).clone();
        while let Ok(ev) = rx.try_recv() {
            faults = record(ev);
        }
        let finished = ctx.clock.now();
        let result = RunResult {
            started,
            finished,
            verdict: outcome.verdict,
            failing_slos: outcome.failing_slos.clone(),
            report_path: outcome
                .report_path
                .as_ref()
                .map(|p| p.display().to_string()),
        };
        let mut results = status.results.clone();
        results.push(result);
        let keep = ctx.config.keep_results.max(1);
        if results.len() > keep {
            results.drain(..results.len() - keep);
        }
        let passed = outcome.verdict == Verdict::Pass;
        let mut conditions = status.conditions.clone();
        set_condition(
            &mut conditions,
            condition(
                "Running",
                false,
                "Finished",
                "no run in progress".into(),
                finished,
            ),
        );
        let message = if passed {
            "every SLO held".to_owned()
        } else if outcome.failing_slos.is_empty() {
            format!("verdict {}", outcome.verdict.as_str())
        } else {
            format!(
                "verdict {}; failing SLOs: {}",
                outcome.verdict.as_str(),
                outcome.failing_slos.join(", ")
            )
        };
        set_condition(
            &mut conditions,
            condition(
                "Passed",
                passed,
                if passed { "Passed" } else { "Failed" },
                message.clone(),
                finished,
            ),
        );
        let patch = json!({
            "phase": Phase::Completed,
            "lastVerdict": outcome.verdict,
            "results": results,
            "activeFaults": faults,
            "conditions": conditions,
        });
        if let Err(e) = patch_status(&api, &name, patch).await {
            tracing::warn!(experiment = %name, "could not record the verdict: {e}");
        }
        let (type_, reason) = if passed {
            (EventType::Normal, "Passed")
        } else {
            (EventType::Warning, "Failed")
        };
        publish(&ctx, &exp, type_, reason, message).await;
        let seconds = (finished - started)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        ctx.metrics.observe(
            &name,
            &outcome,
            seconds,
            finished.timestamp_millis() as f64 / 1000.0,
        );
        let _ = done_tx.send(true);
    });
}

/// Re-inject faults whose target pod was replaced (same name, new uid), and renew the
/// leases of earlier re-injections while the original fault is active.
async fn reinject_restarted<R>(
    ctx: &Arc<Context<R>>,
    exp: &Experiment,
    book: &Arc<Mutex<Vec<ActiveFault>>>,
) -> Result<(), OperatorError> {
    let faults = lock(book).clone();
    let now = ctx.clock.now();
    let ttl = ctx.config.fault_ttl;
    let mut changed = false;
    for f in faults.iter() {
        if f.id.contains('@') {
            // A re-injection: the runner does not know it, so the operator renews it.
            if ctx.agents.renew(&f.agent, &f.id, ttl).await.is_ok() {
                let mut b = lock(book);
                if let Some(x) = b.iter_mut().find(|x| x.id == f.id) {
                    x.lease_expires = now + chrono::Duration::from_std(ttl).unwrap_or_default();
                }
            }
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &f.pod_namespace);
        let Some(pod) = pods.get_opt(&f.pod).await.map_err(OperatorError::Kube)? else {
            continue;
        };
        let Some(new) = targets::candidate(&pod) else {
            continue;
        };
        let reinjected_id = format!("{}@{}", f.id, new.pod.uid);
        if new.pod.uid == f.pod_uid || faults.iter().any(|x| x.id == reinjected_id) {
            continue;
        }
        let Ok(mut request) = serde_json::from_str::<FaultRequest>(&f.request) else {
            continue;
        };
        let Some(agent) = ctx
            .config
            .agents
            .agent_on(&ctx.client, &new.pod.node)
            .await?
        else {
            publish(
                ctx,
                exp,
                EventType::Warning,
                "NoAgent",
                format!(
                    "no agent on node {} for restarted pod {}",
                    new.pod.node, f.pod
                ),
            )
            .await;
            continue;
        };
        request.id = reinjected_id;
        request.ttl = ttl.into();
        request.target = ResolvedTarget {
            name: new.pod.name.clone(),
            pod: Some(new.pod.clone()),
            ..ResolvedTarget::default()
        };
        ctx.agents.apply(&agent, &request).await?;
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or_default();
        lock(book).push(active_fault(&f.fault, &agent, &request, expires));
        changed = true;
        publish(
            ctx,
            exp,
            EventType::Normal,
            "Reinjected",
            format!(
                "pod {} restarted (uid {}); fault {} re-injected",
                f.pod, new.pod.uid, f.fault
            ),
        )
        .await;
    }
    if changed {
        let api: Api<Experiment> =
            Api::namespaced(ctx.client.clone(), &exp.namespace().unwrap_or_default());
        let faults = lock(book).clone();
        patch_status(&api, &exp.name_any(), json!({"activeFaults": faults})).await?;
    }
    Ok(())
}

async fn cleanup<R: ExperimentRunner>(
    exp: Arc<Experiment>,
    ctx: &Arc<Context<R>>,
    api: &Api<Experiment>,
) -> Result<Action, OperatorError> {
    let name = exp.name_any();
    // 1. Stop the run; the runner reverts what it applied.
    let active = lock(&ctx.runs).remove(&key(&exp));
    let mut leftovers = exp.status.clone().unwrap_or_default().active_faults;
    if let Some(run) = active
        && Some(&run.uid) == exp.uid().as_ref()
    {
        run.cancel.cancel();
        let mut done = run.done.clone();
        let _ = tokio::time::timeout(ctx.config.fault_ttl, done.wait_for(|d| *d)).await;
        leftovers = lock(&run.book).clone();
    }
    if leftovers.is_empty() {
        publish(
            ctx,
            &exp,
            EventType::Normal,
            "FaultsReverted",
            "no fault left; finalizer released".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    patch_status(api, &name, json!({"phase": Phase::Reverting})).await?;
    // 2. Revert what is still listed, through the agent on each node.
    let now = ctx.clock.now();
    let mut remaining = Vec::new();
    let mut released = Vec::new();
    for f in leftovers {
        let agent = ctx.config.agents.agent_on(&ctx.client, &f.node).await?;
        let reverted = match &agent {
            Some(url) => match ctx.agents.revert(url, &f.id).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(experiment = %name, fault = %f.id, "revert failed: {e}");
                    false
                }
            },
            None => false,
        };
        if reverted {
            continue;
        }
        if now >= f.lease_expires {
            released.push(f);
        } else {
            remaining.push(f);
        }
    }
    for f in &released {
        publish(
            ctx,
            &exp,
            EventType::Warning,
            "LeaseExpired",
            format!(
                "agent on node {} unreachable; the lease of fault {} expired at {}, so it is no longer applied",
                f.node, f.id, f.lease_expires
            ),
        )
        .await;
    }
    patch_status(api, &name, json!({"activeFaults": remaining})).await?;
    if let Some(first) = remaining.iter().map(|f| f.lease_expires).min() {
        let retry_after = (first - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        publish(
            ctx,
            &exp,
            EventType::Warning,
            "RevertPending",
            format!(
                "{} fault(s) not reverted yet; retrying by {first}",
                remaining.len()
            ),
        )
        .await;
        return Err(OperatorError::RevertPending {
            count: remaining.len(),
            retry_after: retry_after.min(ctx.config.fault_ttl),
        });
    }
    publish(
        ctx,
        &exp,
        EventType::Normal,
        "FaultsReverted",
        "every fault reverted; finalizer released".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// Run the operator until `shutdown` fires: reconcile every `Experiment` in the
/// cluster while this replica holds the leader Lease.
pub async fn run<R: ExperimentRunner>(ctx: Arc<Context<R>>, shutdown: CancellationToken) {
    let api: Api<Experiment> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(experiment = %obj.name, "reconciled"),
                Err(e) => tracing::warn!("reconcile: {e}"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
