//! The `Experiment` custom resource (`faultline.dev/v1alpha1`).
//!
//! Its spec *is* the experiment file's `spec` ([`faultline_spec::raw::ExperimentSpec`]),
//! so `kubectl apply -f experiments/x.yaml` works unchanged, and its schema comes from
//! the same schemars derive that `chaos schema` prints. The status carries the verdict.
//!
//! Kubernetes requires a *structural* schema: no union of different JSON types. Two
//! spec values are such unions by design: a percentage (`"0.5%"` or `0.005`) and a
//! selection mode (`one`, `all`, `{fixed: 3}`, `{percent: 10%}`). [`make_structural`]
//! turns every such union into `x-kubernetes-preserve-unknown-fields: true` (any
//! value, kept as written) and keeps its description; the controller validates those
//! values with the same validator as `chaos run` and reports errors in the status.

use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::collections::BTreeSet;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schedule::Verdict;

/// The custom resource's spec: the experiment file's `spec`, unchanged.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "Experiment",
    plural = "experiments",
    singular = "experiment",
    shortname = "fx",
    namespaced,
    schema = "manual",
    status = "ExperimentStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.lastVerdict"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last run","type":"date","jsonPath":".status.lastRunTime"}"#
)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct ExperimentResourceSpec(pub faultline_spec::raw::ExperimentSpec);

impl JsonSchema for Experiment {
    fn schema_name() -> Cow<'static, str> {
        "Experiment".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut spec = generator
            .subschema_for::<ExperimentResourceSpec>()
            .to_value();
        let mut status = generator
            .subschema_for::<Option<ExperimentStatus>>()
            .to_value();
        make_structural(&mut spec);
        make_structural(&mut status);
        json_schema!({
            "type": "object",
            "title": "Experiment",
            "description": "A Faultline experiment: the same document as an experiment file, plus its status.",
            "required": ["spec"],
            "properties": {"spec": spec, "status": status}
        })
    }
}

/// Replace every `oneOf`/`anyOf` whose non-null alternatives have different JSON types
/// by `x-kubernetes-preserve-unknown-fields: true`, keeping the description (see the
/// module docs). Alternatives that only add `null` (an `Option`) are left alone.
pub fn make_structural(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(make_structural),
        Value::Object(map) => {
            for child in map.values_mut() {
                make_structural(child);
            }
            for key in ["oneOf", "anyOf"] {
                let Some(Value::Array(variants)) = map.get(key) else {
                    continue;
                };
                let non_null: Vec<&Value> = variants
                    .iter()
                    .filter(|v| v.get("type") != Some(&Value::from("null")))
                    .collect();
                let types: BTreeSet<String> = non_null
                    .iter()
                    .map(|v| {
                        v.get("type")
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "untyped".into())
                    })
                    .collect();
                let mixed = non_null.len() > 1 && (types.len() > 1 || types.contains("untyped"));
                if mixed {
                    let nullable = non_null.len() < variants.len();
                    let description = map.get("description").cloned();
                    map.clear();
                    if let Some(d) = description {
                        map.insert("description".into(), d);
                    }
                    map.insert(
                        "x-kubernetes-preserve-unknown-fields".into(),
                        Value::Bool(true),
                    );
                    if nullable {
                        map.insert("nullable".into(), Value::Bool(true));
                    }
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted; waiting for its first run or its next schedule.
    Pending,
    /// Waiting for the next cron fire time.
    Scheduled,
    /// A run is in progress.
    Running,
    /// The experiment is being deleted and its faults are being reverted.
    Reverting,
    /// The last run ended with a verdict.
    Completed,
    /// The experiment cannot run (invalid spec, denied namespace).
    Invalid,
}

/// A condition in the usual Kubernetes shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Valid`, `Running`, `Passed` or `FaultsReverted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason, PascalCase.
    pub reason: String,
    /// What a person reads.
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// One finished run as kept in the status (the last N).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// When the run started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Its verdict.
    pub verdict: Verdict,
    /// The SLOs that were violated.
    #[serde(default)]
    pub failing_slos: Vec<String>,
    /// Where the runner wrote its report, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_path: Option<String>,
}

/// A fault that is (or may still be) applied on an agent. Kept in the status so that a
/// restarted controller still knows what to revert when the experiment is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    /// The fault id (agent API).
    pub id: String,
    /// The fault's name in the spec.
    pub fault: String,
    /// Base URL of the agent that holds it.
    pub agent: String,
    /// Namespace of the target pod.
    pub pod_namespace: String,
    /// Target pod name.
    pub pod: String,
    /// Target pod uid at injection time; a different uid means the pod restarted.
    pub pod_uid: String,
    /// Node of the target pod (and of the agent).
    pub node: String,
    /// When the lease runs out unless renewed. After this the agent has reverted the
    /// fault on its own, or the agent is gone and the fault with it.
    pub lease_expires: DateTime<Utc>,
    /// The agent request as JSON, replayed to re-inject a restarted pod.
    pub request: String,
}

/// `status` of an `Experiment`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// Where the experiment is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Valid, Running, Passed, FaultsReverted.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<DateTime<Utc>>,
    /// The cron fire time the last scheduled run was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// The next cron fire time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<DateTime<Utc>>,
    /// The value of the `faultline.dev/run` annotation the last manual run answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_request: Option<String>,
    /// Verdict of the last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
    /// The last N finished runs, newest last.
    #[serde(default)]
    pub results: Vec<RunResult>,
    /// Faults applied and not yet known to be reverted.
    #[serde(default)]
    pub active_faults: Vec<ActiveFault>,
}

/// The CRD as YAML, as committed in `deploy/kubernetes/crd.yaml`.
pub fn crd_yaml() -> String {
    let crd = Experiment::crd();
    let body = serde_yaml::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated from faultline-spec's raw types by `chaos controller --print-crd`.\n\
         # Do not edit: a test (operator::crd::tests) keeps it in sync.\n{body}"
    )
}

#[cfg(test)]
mod tests;
