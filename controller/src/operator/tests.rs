//! Reconciler tests against a fake API server (`tower_test::mock::pair` handed to
//! `kube::Client::new`). Every request the operator makes, every agent call and every
//! fault the (fake) runner injects goes into one timeline, and the tests assert it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeZone;
use faultline_spec::wire::{FaultRequest, PodRef};
use futures::future::BoxFuture;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::agent::{AgentApi, AgentError};
use super::crd::Experiment;
use super::targets::{AgentLocator, NamespacePolicy};
use super::*;
use crate::schedule::{
    Clock, ControllerMetrics, ExperimentRunner, RunContext, RunOutcome, Verdict,
};

/// One entry of the timeline.
#[derive(Debug, Clone)]
struct Call {
    /// `PATCH /apis/...`, `AGENT DELETE http://...`, `RUNNER inject ...`.
    line: String,
    body: Value,
}

#[derive(Default)]
struct World {
    experiment: Value,
    target_pods: Vec<Value>,
    /// node -> agent pod IP; a node missing here has no agent.
    agents: BTreeMap<String, String>,
    log: Vec<Call>,
}

type Shared = Arc<Mutex<World>>;

fn push(world: &Shared, line: String, body: Value) {
    world.lock().unwrap().log.push(Call { line, body });
}

fn decode(q: &str) -> String {
    q.replace("%3D", "=")
        .replace("%2F", "/")
        .replace("%2C", ",")
}

fn pod(name: &str, uid: &str, node: &str, ip: &str, ns: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels},
        "spec": {"nodeName": node, "containers": []},
        "status": {"phase": "Running", "podIP": ip}
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn route(world: &Shared, method: &str, path: &str, query: &str, body: &Value) -> (u16, Value) {
    let w = world.lock().unwrap();
    let exp_path = "/apis/faultline.dev/v1alpha1/namespaces/shop/experiments/nightly";
    match (method, path) {
        ("PATCH", p) if p == exp_path => {
            // A JSON patch on the finalizers: apply it to our copy.
            let mut exp = w.experiment.clone();
            for op in body.as_array().into_iter().flatten() {
                match (op["op"].as_str(), op["path"].as_str()) {
                    (Some("add"), Some("/metadata/finalizers")) => {
                        exp["metadata"]["finalizers"] = op["value"].clone()
                    }
                    (Some("add"), Some("/metadata/finalizers/-")) => exp["metadata"]["finalizers"]
                        .as_array_mut()
                        .unwrap()
                        .push(op["value"].clone()),
                    (Some("remove"), Some(_)) => exp["metadata"]["finalizers"] = json!([]),
                    _ => {}
                }
            }
            (200, exp)
        }
        ("PATCH", p) if p == format!("{exp_path}/status") => (200, w.experiment.clone()),
        ("POST", "/apis/events.k8s.io/v1/namespaces/shop/events") => (201, body.clone()),
        ("GET", "/api/v1/namespaces/faultline-system/pods") => {
            let q = decode(query);
            let node = q
                .split('&')
                .find_map(|kv| kv.strip_prefix("fieldSelector=spec.nodeName="))
                .unwrap_or("");
            let items = w
                .agents
                .get(node)
                .map(|ip| {
                    vec![pod(
                        &format!("agent-{node}"),
                        &format!("agent-uid-{node}"),
                        node,
                        ip,
                        "faultline-system",
                        json!({"app.kubernetes.io/name": "faultline-agent"}),
                    )]
                })
                .unwrap_or_default();
            (200, list(items))
        }
        ("GET", "/api/v1/namespaces/shop/pods") => (200, list(w.target_pods.clone())),
        ("GET", p) if p.starts_with("/api/v1/namespaces/shop/pods/") => {
            let name = p.rsplit('/').next().unwrap();
            match w.target_pods.iter().find(|p| p["metadata"]["name"] == name) {
                Some(p) => (200, p.clone()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            }
        }
        ("DELETE", p) if p.starts_with("/api/v1/namespaces/shop/pods/") => {
            let name = p.rsplit('/').next().unwrap();
            let found = w
                .target_pods
                .iter()
                .find(|p| p["metadata"]["name"] == name)
                .cloned();
            (200, found.unwrap_or(Value::Null))
        }
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("fake API server: no route for {method} {path}")}),
        ),
    }
}

/// A client whose every request is answered by `route` and logged.
fn fake_api(world: Shared) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, resp) = route(&world, &method, &path, &query, &body);
            let line = if query.is_empty() {
                format!("{method} {path}")
            } else {
                format!("{method} {path}?{}", decode(&query))
            };
            push(&world, line, body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&resp).unwrap()))
                    .unwrap(),
            );
        }
    });
    Client::new(service, "default")
}

/// The agent API, logged into the same timeline.
struct FakeAgents(Shared);

impl AgentApi for FakeAgents {
    fn apply<'a>(
        &'a self,
        agent: &'a str,
        request: &'a FaultRequest,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            push(
                &self.0,
                format!("AGENT POST {agent}/v1/faults {}", request.id),
                serde_json::to_value(request).unwrap(),
            );
            Ok(())
        })
    }
    fn renew<'a>(
        &'a self,
        agent: &'a str,
        id: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            push(
                &self.0,
                format!("AGENT RENEW {agent}/v1/faults/{id}"),
                Value::Null,
            );
            Ok(())
        })
    }
    fn revert<'a>(&'a self, agent: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            push(
                &self.0,
                format!("AGENT DELETE {agent}/v1/faults/{id}"),
                Value::Null,
            );
            Ok(())
        })
    }
}

/// A runner that injects each placed target through the observer, holds the faults
/// for 5 s (or until cancelled), reverts them and fails `gateway-p99`.
struct FakeRunner {
    world: Shared,
    hold_until_cancelled: bool,
}

impl ExperimentRunner for FakeRunner {
    async fn run(
        &self,
        experiment: faultline_spec::Experiment,
        context: RunContext,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let observer = context.faults.clone().unwrap();
        let mut ids = Vec::new();
        for t in &context.targets {
            let fault = experiment
                .spec
                .faults
                .iter()
                .find(|f| f.name == t.fault)
                .unwrap();
            let request = FaultRequest {
                id: format!("{}-{}-{}", experiment.name, t.fault, t.target.name),
                experiment: experiment.name.clone(),
                target: t.target.clone(),
                fault: fault.kind.clone(),
                ttl: faultline_spec::units::Duration(Duration::from_secs(30)),
            };
            push(
                &self.world,
                format!("RUNNER inject {} via {}", request.id, t.agent),
                Value::Null,
            );
            observer.applied(&t.agent, &request);
            ids.push(request.id);
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)), if !self.hold_until_cancelled => {}
        }
        for id in &ids {
            push(&self.world, format!("RUNNER revert {id}"), Value::Null);
            observer.reverted(id);
        }
        let verdict = if cancel.is_cancelled() {
            Verdict::Aborted
        } else {
            Verdict::Fail
        };
        RunOutcome {
            verdict,
            failing_slos: vec!["gateway-p99".into()],
            report_path: None,
            report: None,
        }
    }
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn experiment(finalizer: bool, status: Option<Value>) -> Value {
    let mut exp = json!({
        "apiVersion": "faultline.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {
            "name": "nightly", "namespace": "shop", "uid": "exp-uid", "generation": 1,
            "resourceVersion": "10", "creationTimestamp": "2026-03-01T00:00:00Z"
        },
        "spec": {
            "duration": "60s",
            "faults": [{
                "name": "payments-cpu",
                "target": {"labels": {"app": "payments"}, "mode": {"fixed": 2}, "seed": 7},
                "after": "10s", "duration": "30s",
                "cpu": {"load": "80%"}
            }],
            "slos": [{"name": "gateway-p99", "latency": {"service": "gateway", "quantile": 0.99, "max": "800ms"}, "window": "10s"}]
        }
    });
    if finalizer {
        exp["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if let Some(s) = status {
        exp["status"] = s;
    }
    exp
}

struct Setup {
    world: Shared,
    ctx: Arc<Context<FakeRunner>>,
}

fn setup(exp: Value, hold: bool) -> Setup {
    let world: Shared = Arc::new(Mutex::new(World::default()));
    {
        let mut w = world.lock().unwrap();
        w.experiment = exp;
        let labels = json!({"app": "payments"});
        w.target_pods = vec![
            pod(
                "payments-0",
                "uid-0",
                "node-0",
                "10.1.0.10",
                "shop",
                labels.clone(),
            ),
            pod(
                "payments-1",
                "uid-1",
                "node-1",
                "10.1.0.11",
                "shop",
                labels.clone(),
            ),
            pod("payments-2", "uid-2", "node-2", "10.1.0.12", "shop", labels),
        ];
        for (node, ip) in [
            ("node-0", "10.0.0.1"),
            ("node-1", "10.0.0.2"),
            ("node-2", "10.0.0.3"),
        ] {
            w.agents.insert(node.into(), ip.into());
        }
    }
    let client = fake_api(world.clone());
    let config = OperatorConfig {
        namespaces: NamespacePolicy::new("faultline-system", []),
        agents: AgentLocator {
            namespace: "faultline-system".into(),
            port: 7070,
        },
        fault_ttl: Duration::from_secs(30),
        keep_results: 5,
        poll: Duration::from_secs(5),
        report_dir: None,
    };
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(FakeRunner {
            world: world.clone(),
            hold_until_cancelled: hold,
        }),
        Arc::new(FakeAgents(world.clone())),
        config,
        Clock::anchored(t0()),
        Arc::new(ControllerMetrics::new()),
        Some("controller-0".into()),
    ));
    Setup { world, ctx }
}

fn object(v: &Value) -> Arc<Experiment> {
    Arc::new(serde_json::from_value(v.clone()).unwrap())
}

fn lines(world: &Shared) -> Vec<String> {
    world
        .lock()
        .unwrap()
        .log
        .iter()
        .map(|c| c.line.clone())
        .collect()
}

fn calls(world: &Shared) -> Vec<Call> {
    world.lock().unwrap().log.clone()
}

/// Wait (on paused time) until the timeline has an entry starting with `prefix`.
async fn wait_for(world: &Shared, pred: impl Fn(&Call) -> bool) {
    for _ in 0..10_000 {
        if world.lock().unwrap().log.iter().any(&pred) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timeline never matched: {:#?}", lines(world));
}

fn event_reason(c: &Call) -> Option<&str> {
    c.line
        .ends_with("/events")
        .then(|| c.body["reason"].as_str())
        .flatten()
}

const EXP: &str = "/apis/faultline.dev/v1alpha1/namespaces/shop/experiments/nightly";
const TARGETS: &str = "GET /api/v1/namespaces/shop/pods?&labelSelector=app=payments";

/// The operator's lookup of the agent pod on `node`.
fn agents_on(node: &str) -> String {
    format!(
        "GET /api/v1/namespaces/faultline-system/pods?&fieldSelector=spec.nodeName={node}&labelSelector=app.kubernetes.io/name=faultline-agent"
    )
}

/// The experiment, deleted at 12:00:00 with `status` plus one fault still active on
/// payments-1 (node-1), its lease running to 12:00:30.
fn deleted_with_an_active_fault(mut status: Value) -> Value {
    status["activeFaults"] = json!([{
        "id": "nightly-payments-cpu-payments-1", "fault": "payments-cpu", "agent": "http://10.0.0.2:7070",
        "podNamespace": "shop", "pod": "payments-1", "podUid": "uid-1", "node": "node-1",
        "leaseExpires": "2026-03-01T12:00:30Z", "request": "{}"
    }]);
    let mut exp = experiment(true, Some(status));
    exp["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:00:00Z");
    exp
}

#[tokio::test(start_paused = true)]
async fn finalizer_is_added_before_any_fault_is_injected() {
    let s = setup(experiment(false, None), false);
    let action = reconcile(object(&experiment(false, None)), s.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let first = calls(&s.world);
    assert_eq!(first.len(), 1, "{:#?}", lines(&s.world));
    assert_eq!(first[0].line, format!("PATCH {EXP}"));
    assert_eq!(
        first[0].body,
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    );
    // The watch delivers the object with the finalizer; only now is anything injected.
    let with_finalizer = experiment(true, None);
    reconcile(object(&with_finalizer), s.ctx.clone())
        .await
        .unwrap();
    wait_for(&s.world, |c| c.line.starts_with("RUNNER inject")).await;
    let l = lines(&s.world);
    let inject = l
        .iter()
        .position(|x| x.starts_with("RUNNER inject"))
        .unwrap();
    assert_eq!(
        l.iter()
            .position(|x| x.starts_with(&format!("PATCH {EXP}"))),
        Some(0)
    );
    assert!(inject > 0);
}

#[tokio::test(start_paused = true)]
async fn run_now_resolves_targets_patches_status_and_records_events_with_the_verdict() {
    let s = setup(experiment(true, None), false);
    let action = reconcile(object(&experiment(true, None)), s.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    wait_for(&s.world, |c| event_reason(c) == Some("Failed")).await;
    let log = calls(&s.world);
    let l: Vec<&str> = log.iter().map(|c| c.line.as_str()).collect();
    // Seed 7 with {fixed: 2} over payments-0..2 picks these two (pinned: replayable).
    let chosen = ["payments-0", "payments-1"];
    let status = format!("PATCH {EXP}/status");
    let expected: Vec<String> = vec![
        TARGETS.into(),
        agents_on("node-0"),
        agents_on("node-1"),
        status.clone(),
        "POST /apis/events.k8s.io/v1/namespaces/shop/events".into(),
        format!(
            "RUNNER inject nightly-payments-cpu-{} via http://10.0.0.1:7070",
            chosen[0]
        ),
        format!(
            "RUNNER inject nightly-payments-cpu-{} via http://10.0.0.2:7070",
            chosen[1]
        ),
        status.clone(),
        status.clone(),
        format!("RUNNER revert nightly-payments-cpu-{}", chosen[0]),
        format!("RUNNER revert nightly-payments-cpu-{}", chosen[1]),
        // Reverts reported as the run ends go into the final status patch.
        status.clone(),
        "POST /apis/events.k8s.io/v1/namespaces/shop/events".into(),
    ];
    assert_eq!(l, expected, "{l:#?}");
    // Status: Running first, with the Started event naming the targets.
    assert_eq!(log[3].body["status"]["phase"], "Running");
    assert_eq!(log[3].body["status"]["lastRunTime"], "2026-03-01T12:00:00Z");
    assert_eq!(log[4].body["reason"], "Started");
    assert_eq!(log[4].body["type"], "Normal");
    assert!(
        log[4].body["note"]
            .as_str()
            .unwrap()
            .contains("payments-0, payments-1")
    );
    // Active faults are recorded with their lease expiry, then cleared on revert.
    let active = &log[8].body["status"]["activeFaults"];
    assert_eq!(active.as_array().unwrap().len(), 2, "{active}");
    assert_eq!(active[0]["pod"], "payments-0");
    assert_eq!(active[0]["podUid"], "uid-0");
    assert_eq!(active[0]["node"], "node-0");
    assert_eq!(active[0]["fault"], "payments-cpu");
    assert_eq!(active[0]["leaseExpires"], "2026-03-01T12:00:30Z");
    // The verdict with its failing SLO, in the status and in a Warning event.
    let last = &log[11].body["status"];
    assert_eq!(last["activeFaults"], json!([]));
    assert_eq!(last["phase"], "Completed");
    assert_eq!(last["lastVerdict"], "fail");
    assert_eq!(last["results"][0]["verdict"], "fail");
    assert_eq!(last["results"][0]["failingSlos"], json!(["gateway-p99"]));
    assert_eq!(last["results"][0]["started"], "2026-03-01T12:00:00Z");
    assert_eq!(last["results"][0]["finished"], "2026-03-01T12:00:05Z");
    let passed = last["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Passed")
        .unwrap();
    assert_eq!(passed["status"], "False");
    assert_eq!(log[12].body["reason"], "Failed");
    assert_eq!(log[12].body["type"], "Warning");
    assert!(
        log[12].body["note"]
            .as_str()
            .unwrap()
            .contains("gateway-p99")
    );
    assert_eq!(s.ctx.metrics.runs("nightly", Verdict::Fail), 1);

    // A stale object (the cache has not seen the run's status yet) does not start the
    // same run again; the updated one is left alone.
    s.world.lock().unwrap().log.clear();
    let action = reconcile(object(&experiment(true, None)), s.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let mut seen = experiment(true, None);
    seen["status"] = json!({"phase": "Completed", "lastRunTime": "2026-03-01T12:00:00Z"});
    let action = reconcile(object(&seen), s.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(lines(&s.world).is_empty(), "{:#?}", lines(&s.world));
}

#[tokio::test(start_paused = true)]
async fn deletion_reverts_every_fault_through_the_agent_then_releases_the_finalizer() {
    let exp = deleted_with_an_active_fault(json!({"phase": "Completed"}));
    let s = setup(exp.clone(), false);
    let action = reconcile(object(&exp), s.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let log = calls(&s.world);
    let l: Vec<&str> = log.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        l,
        [
            format!("PATCH {EXP}/status").as_str(),
            agents_on("node-1").as_str(),
            "AGENT DELETE http://10.0.0.2:7070/v1/faults/nightly-payments-cpu-payments-1",
            format!("PATCH {EXP}/status").as_str(),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
            format!("PATCH {EXP}").as_str(),
        ],
        "{l:#?}"
    );
    assert_eq!(log[0].body["status"]["phase"], "Reverting");
    assert_eq!(log[3].body["status"]["activeFaults"], json!([]));
    assert_eq!(log[4].body["reason"], "FaultsReverted");
    // The finalizer is removed with a test-and-remove JSON patch, after the revert.
    assert_eq!(
        log[5].body,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
}

#[tokio::test(start_paused = true)]
async fn finalizer_is_released_after_the_lease_ttl_when_the_agent_is_gone() {
    let exp = deleted_with_an_active_fault(json!({}));
    let s = setup(exp.clone(), false);
    s.world.lock().unwrap().agents.remove("node-1");

    // The agent is gone and the lease is live: deletion waits, and says until when.
    let err = reconcile(object(&exp), s.ctx.clone()).await.unwrap_err();
    assert_eq!(
        error_policy(object(&exp), &err, s.ctx.clone()),
        Action::requeue(Duration::from_secs(30))
    );
    let log = calls(&s.world);
    let l: Vec<&str> = log.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        l,
        [
            format!("PATCH {EXP}/status").as_str(),
            agents_on("node-1").as_str(),
            format!("PATCH {EXP}/status").as_str(),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
        ],
        "{l:#?}"
    );
    assert_eq!(
        log[2].body["status"]["activeFaults"][0]["id"],
        "nightly-payments-cpu-payments-1"
    );
    assert_eq!(log[3].body["reason"], "RevertPending");

    // After the lease TTL the fault is known to be dead: the finalizer is released.
    tokio::time::sleep(Duration::from_secs(30)).await;
    s.world.lock().unwrap().log.clear();
    let action = reconcile(object(&exp), s.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let log = calls(&s.world);
    let l: Vec<&str> = log.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        l,
        [
            format!("PATCH {EXP}/status").as_str(),
            agents_on("node-1").as_str(),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
            format!("PATCH {EXP}/status").as_str(),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
            format!("PATCH {EXP}").as_str(),
        ],
        "{l:#?}"
    );
    assert_eq!(log[2].body["reason"], "LeaseExpired");
    assert_eq!(log[2].body["type"], "Warning");
    assert_eq!(log[3].body["status"]["activeFaults"], json!([]));
    assert_eq!(
        log[5].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
}

#[tokio::test(start_paused = true)]
async fn deleting_a_running_experiment_cancels_the_run_and_reverts_before_release() {
    let s = setup(experiment(true, None), true);
    reconcile(object(&experiment(true, None)), s.ctx.clone())
        .await
        .unwrap();
    wait_for(&s.world, |c| c.line.starts_with("RUNNER inject")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut exp = experiment(true, None);
    exp["metadata"]["deletionTimestamp"] = json!("2026-03-01T12:00:01Z");
    reconcile(object(&exp), s.ctx.clone()).await.unwrap();
    let l = lines(&s.world);
    let revert = l
        .iter()
        .position(|x| x.starts_with("RUNNER revert"))
        .unwrap();
    let release = l
        .iter()
        .rposition(|x| *x == format!("PATCH {EXP}"))
        .unwrap();
    assert!(revert < release, "{l:#?}");
    let log = calls(&s.world);
    let verdict = log
        .iter()
        .find(|c| c.body["status"]["lastVerdict"].is_string())
        .unwrap();
    assert_eq!(verdict.body["status"]["lastVerdict"], "aborted");
}

#[tokio::test(start_paused = true)]
async fn restarted_target_pod_is_reinjected_on_its_new_node() {
    let s = setup(experiment(true, None), true);
    reconcile(object(&experiment(true, None)), s.ctx.clone())
        .await
        .unwrap();
    wait_for(&s.world, |c| c.line.starts_with("RUNNER inject")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // payments-0 is recreated (StatefulSet-style: same name, new uid) on node-1.
    {
        let mut w = s.world.lock().unwrap();
        w.target_pods[0] = pod(
            "payments-0",
            "uid-0b",
            "node-1",
            "10.1.0.20",
            "shop",
            json!({"app": "payments"}),
        );
        w.log.clear();
    }
    let mut running = experiment(true, None);
    running["status"] = json!({"phase": "Running", "lastRunTime": "2026-03-01T12:00:00Z"});
    reconcile(object(&running), s.ctx.clone()).await.unwrap();
    let log = calls(&s.world);
    let l: Vec<&str> = log.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        l,
        [
            "GET /api/v1/namespaces/shop/pods/payments-0",
            agents_on("node-1").as_str(),
            "AGENT POST http://10.0.0.2:7070/v1/faults nightly-payments-cpu-payments-0@uid-0b",
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
            "GET /api/v1/namespaces/shop/pods/payments-1",
            format!("PATCH {EXP}/status").as_str(),
        ],
        "{l:#?}"
    );
    let req = &log[2].body;
    assert_eq!(req["target"]["pod"]["uid"], "uid-0b");
    assert_eq!(req["target"]["pod"]["node"], "node-1");
    assert_eq!(req["fault"], json!({"cpu": {"load": "80%"}}));
    assert_eq!(log[3].body["reason"], "Reinjected");
    assert_eq!(
        log[5].body["status"]["activeFaults"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The next poll renews the re-injection (the runner does not know it) and does not
    // inject it twice.
    s.world.lock().unwrap().log.clear();
    reconcile(object(&running), s.ctx.clone()).await.unwrap();
    let l = lines(&s.world);
    assert!(
        l.contains(
            &"AGENT RENEW http://10.0.0.2:7070/v1/faults/nightly-payments-cpu-payments-0@uid-0b"
                .to_string()
        ),
        "{l:#?}"
    );
    assert!(!l.iter().any(|x| x.starts_with("AGENT POST")), "{l:#?}");
}

#[tokio::test(start_paused = true)]
async fn experiment_targeting_kube_system_is_refused_with_status_and_warning() {
    let mut exp = experiment(true, None);
    exp["spec"]["faults"][0]["target"]["namespace"] = json!("kube-system");
    let s = setup(exp.clone(), false);
    let action = reconcile(object(&exp), s.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let log = calls(&s.world);
    let l: Vec<&str> = log.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        l,
        [
            format!("PATCH {EXP}/status").as_str(),
            "POST /apis/events.k8s.io/v1/namespaces/shop/events"
        ]
    );
    assert_eq!(log[0].body["status"]["phase"], "Invalid");
    assert_eq!(log[1].body["reason"], "DeniedNamespace");
    assert!(!lines(&s.world).iter().any(|x| x.starts_with("RUNNER")));
}

#[tokio::test(start_paused = true)]
async fn scheduled_experiment_waits_for_its_fire_time() {
    let mut exp = experiment(true, None);
    exp["spec"]["schedule"] = json!("0 0 2 * * *");
    let s = setup(exp.clone(), false);
    let action = reconcile(object(&exp), s.ctx.clone()).await.unwrap();
    // Created at 00:00, now 12:00: the 02:00 fire time has passed, so it runs now.
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    wait_for(&s.world, |c| event_reason(c) == Some("Failed")).await;
    let log = calls(&s.world);
    let running = log
        .iter()
        .find(|c| c.body["status"]["phase"] == "Running")
        .unwrap();
    assert_eq!(
        running.body["status"]["lastScheduleTime"],
        "2026-03-01T02:00:00Z"
    );
    // With that recorded, the next fire time is tomorrow 02:00: the phase is Scheduled.
    let mut done = exp.clone();
    done["status"] =
        json!({"lastScheduleTime": "2026-03-01T02:00:00Z", "lastRunTime": "2026-03-01T12:00:00Z"});
    s.world.lock().unwrap().log.clear();
    let action = reconcile(object(&done), s.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    let log = calls(&s.world);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].body["status"],
        json!({"phase": "Scheduled", "nextRunTime": "2026-03-02T02:00:00Z"})
    );
}

#[tokio::test(start_paused = true)]
async fn pod_kill_deletes_the_pod_with_zero_grace_and_a_uid_precondition() {
    let s = setup(experiment(true, None), false);
    let actions = KubePodActions::new(s.ctx.client.clone());
    let pod = PodRef {
        namespace: "shop".into(),
        name: "payments-1".into(),
        uid: "uid-1".into(),
        node: "node-1".into(),
    };
    actions.kill(&pod).await.unwrap();
    let log = calls(&s.world);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].line,
        "DELETE /api/v1/namespaces/shop/pods/payments-1"
    );
    assert_eq!(log[0].body["gracePeriodSeconds"], 0);
    assert_eq!(log[0].body["preconditions"]["uid"], "uid-1");
}

#[test]
fn a_resource_too_large_for_an_experiment_is_refused_by_the_file_parser() {
    let mut exp = experiment(true, None);
    assert!(to_checked(&object(&exp)).is_ok());
    exp["spec"]["description"] = json!("x".repeat(faultline_spec::MAX_SOURCE_BYTES));
    let err = to_checked(&object(&exp)).unwrap_err();
    assert!(err.contains("larger than 4 MiB"), "{err}");
}
