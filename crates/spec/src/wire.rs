//! Agent API v1 wire types (DESIGN.md §3), shared by the controller and the agent.
//!
//! The controller and the agent share only these types, never each other's code.
//! All durations travel as unit strings (`"30s"`), all timestamps as Unix milliseconds.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics, Path, Problems};
use crate::model::{FaultKind, Signal};
use crate::raw::{DurationText, FAULT_KINDS, FaultKindSpec};
use crate::units::Duration;
use crate::validate::ValidateOptions;

/// Path prefix of every versioned agent call.
pub const API_PREFIX: &str = "/v1";

/// A fault id: unique per fault application, chosen by the controller.
/// Applying the same id twice is idempotent.
pub type FaultId = String;

/// `POST /v1/faults`: apply one fault to one resolved target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRequest {
    /// Idempotency key and handle for renew and revert.
    pub id: FaultId,
    /// Name of the experiment that owns the fault (for listing and metrics).
    pub experiment: String,
    /// The concrete target on this node.
    pub target: ResolvedTarget,
    /// What to inject.
    #[schemars(with = "FaultKindSpec")]
    pub fault: FaultKind,
    /// Lease length; the agent reverts the fault when it is not renewed in time.
    #[schemars(with = "DurationText")]
    pub ttl: Duration,
}

/// Why an agent request body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the shape of the request (missing or unknown fields, wrong
    /// types). The agent answers 400.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// `fault` names a kind this version does not know. The agent answers 422.
    #[error("unknown fault kind `{kind}`: expected {expected}")]
    UnknownFaultKind {
        /// The kind that was asked for.
        kind: String,
        /// The kinds that exist.
        expected: String,
    },
    /// Well-formed, but values break the rules experiment files obey (loss above
    /// 100%, jitter above delay, ...). The agent answers 422.
    #[error("invalid request:\n{0}")]
    Invalid(Diagnostics),
}

impl WireError {
    /// The HTTP status the agent answers with.
    pub fn status(&self) -> u16 {
        match self {
            WireError::Malformed(_) => 400,
            WireError::UnknownFaultKind { .. } | WireError::Invalid(_) => 422,
        }
    }

    /// The machine-readable code of [`ApiError::error`].
    pub fn code(&self) -> &'static str {
        match self {
            WireError::Malformed(_) => "malformed",
            WireError::UnknownFaultKind { .. } => "unknown_fault_kind",
            WireError::Invalid(_) => "invalid",
        }
    }

    /// The JSON error body for this refusal.
    pub fn to_api_error(&self) -> ApiError {
        let details = match self {
            WireError::Invalid(d) => d
                .iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect(),
            _ => Vec::new(),
        };
        ApiError {
            error: self.code().to_owned(),
            message: match self {
                WireError::Invalid(d) => format!("{} invalid field(s)", d.len()),
                other => other.to_string(),
            },
            details,
        }
    }
}

/// The request as sent, before validation: the fault kind in its raw form so the
/// experiment-file validator checks it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFaultRequest {
    id: FaultId,
    experiment: String,
    target: ResolvedTarget,
    fault: FaultKindSpec,
    ttl: DurationText,
}

/// How agent request diagnostics name their "file".
const REQUEST_FILE: &str = "<request>";

impl FaultRequest {
    /// Parses and validates a `POST /v1/faults` body with default options.
    pub fn from_json(body: &[u8]) -> Result<FaultRequest, WireError> {
        Self::from_json_with(body, &ValidateOptions::default())
    }

    /// Parses and validates a `POST /v1/faults` body. The fault is checked by the same
    /// validator as experiment files; `opts.host_cpus` lets the agent refuse CPU load
    /// its host cannot give.
    pub fn from_json_with(body: &[u8], opts: &ValidateOptions) -> Result<FaultRequest, WireError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| WireError::Malformed(format!("not valid JSON: {e}")))?;
        let Some(obj) = value.as_object() else {
            return Err(WireError::Malformed("expected a JSON object".into()));
        };
        if let Some(fault) = obj.get("fault").and_then(|f| f.as_object()) {
            if let Some(kind) = fault.keys().find(|k| !FAULT_KINDS.contains(&k.as_str())) {
                return Err(WireError::UnknownFaultKind {
                    kind: kind.clone(),
                    expected: crate::diagnostic::one_of(FAULT_KINDS),
                });
            }
        }
        // Valid JSON is valid YAML: the positioned tree gives line and column to
        // every problem, exactly as for files.
        let text =
            std::str::from_utf8(body).map_err(|_| WireError::Malformed("not UTF-8".into()))?;
        let (docs, syntax) = crate::yaml::load(text);
        let root = match (docs.first().and_then(|d| d.root.as_ref()), syntax) {
            (Some(root), None) => root,
            (_, Some(e)) => return Err(WireError::Malformed(e.message)),
            (None, None) => return Err(WireError::Malformed("empty body".into())),
        };
        let sink = crate::de::Sink::default();
        let raw: Option<RawFaultRequest> = crate::de::from_node(root, Path::root(), &sink);
        let structural = sink.problems.into_inner();
        if !structural.is_empty() {
            let msg: Vec<String> = structural
                .iter()
                .map(|l| {
                    if l.path.is_empty() {
                        l.message.clone()
                    } else {
                        format!("{}: {}", l.path, l.message)
                    }
                })
                .collect();
            return Err(WireError::Malformed(msg.join("; ")));
        }
        let raw = raw.ok_or_else(|| WireError::Malformed("the body could not be read".into()))?;

        let mut problems = Problems::default();
        let root_path = Path::root();
        if raw.id.is_empty() {
            problems.push(&root_path.key("id"), "expected a non-empty fault id");
        }
        if raw.experiment.is_empty() {
            problems.push(
                &root_path.key("experiment"),
                "expected the name of the owning experiment",
            );
        }
        let ttl = raw.ttl.as_str().parse::<Duration>();
        match &ttl {
            Ok(d) if *d == Duration::ZERO => problems.push(
                &root_path.key("ttl"),
                "expected a lease above zero, found `0s`",
            ),
            Ok(_) => {}
            Err(e) => problems.push(&root_path.key("ttl"), e.message.clone()),
        }
        let fault = crate::validate::validate_fault_kind(
            &raw.fault,
            opts,
            &mut problems,
            &root_path.key("fault"),
        );
        if !problems.0.is_empty() {
            let positions = root.positions();
            let mut d = Diagnostics(
                problems
                    .0
                    .into_iter()
                    .map(|p| {
                        let pos = crate::locate(&positions, &p.path, root);
                        Diagnostic {
                            file: REQUEST_FILE.to_owned(),
                            line: pos.line,
                            column: pos.column,
                            path: p.path,
                            message: p.message,
                        }
                    })
                    .collect(),
            );
            d.sort();
            return Err(WireError::Invalid(d));
        }
        match (fault, ttl) {
            (Some(fault), Ok(ttl)) => Ok(FaultRequest {
                id: raw.id,
                experiment: raw.experiment,
                target: raw.target,
                fault,
                ttl,
            }),
            _ => Err(WireError::Malformed("the fault could not be read".into())),
        }
    }
}

/// `POST /v1/faults/{id}/renew`: extend a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewRequest {
    /// New lease length counted from now.
    #[schemars(with = "DurationText")]
    pub ttl: Duration,
}

/// A target resolved to what one agent can act on. Which fields are set depends on
/// the mode: local mode fills `proxies` (edges the in-process agent owns) and `pid`;
/// compose fills `container_id` and `pid`; Kubernetes fills `pod` and `pid`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolvedTarget {
    /// Human name: service, container or pod name. Used in reports.
    pub name: String,
    /// Host PID of the target's main process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Docker container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Ids of agent-owned proxies that carry the target's traffic (local mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<String>,
    /// The Kubernetes pod, when the target is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// A Kubernetes pod reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod uid; a restarted pod with a new uid is re-injected.
    pub uid: String,
    /// Node the pod runs on.
    pub node: String,
}

/// A lease as the agent holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    /// Lease length granted by the last apply or renew.
    #[schemars(with = "DurationText")]
    pub ttl: Duration,
    /// When the lease runs out, Unix milliseconds.
    pub expires_at_ms: u64,
    /// How many times the lease was renewed.
    pub renewals: u64,
}

/// Lifecycle state of one fault on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FaultPhase {
    /// Injected and holding a live lease.
    Active,
    /// Reverted on request.
    Reverted,
    /// Reverted because the lease ran out.
    Expired,
    /// Could not be applied; nothing is left on the host.
    Failed,
}

/// `201` body of `POST /v1/faults`, and an element of `GET /v1/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultState {
    /// The fault id.
    pub id: FaultId,
    /// The owning experiment.
    pub experiment: String,
    /// The target it was applied to.
    pub target: ResolvedTarget,
    /// What was injected.
    #[schemars(with = "FaultKindSpec")]
    pub fault: FaultKind,
    /// Current phase.
    pub phase: FaultPhase,
    /// The lease.
    pub lease: Lease,
    /// When it was applied, Unix milliseconds.
    pub applied_at_ms: u64,
    /// Which backend injected it (`proxy`, `nftables`, `tc`, `burner`, `signal`, `docker`, ...).
    pub backend: String,
    /// What the fault measurably did so far.
    pub effect: ObservedEffect,
}

/// `GET /v1/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultList {
    /// Active faults.
    pub faults: Vec<FaultState>,
}

/// The measured effect of a fault, reported as evidence. `metrics` holds named figures
/// such as `cpu_seconds`, `utilization`, `bytes_held`, `delayed_chunks`, `mean_added_delay_ms`,
/// `aborted_requests`; `delay_histogram` holds added-delay buckets where the fault delays traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObservedEffect {
    /// One line a person reads, e.g. `burned 2.41 CPU-s over 3.00 s (80.3%)`.
    pub summary: String,
    /// Named figures.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Histogram of added delay, when the fault delays traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delay_histogram: Vec<HistogramBucket>,
    /// The signal delivered, for process faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

/// One cumulative histogram bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistogramBucket {
    /// Upper bound in milliseconds, inclusive.
    pub le_ms: f64,
    /// Samples at or below the bound.
    pub count: u64,
}

/// `GET /v1/capabilities`: what this host can do. The controller's preflight.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    /// Agent version.
    pub agent_version: String,
    /// Kernel release.
    pub kernel: String,
    /// Running with the privileges host changes need (root or CAP_NET_ADMIN + CAP_SYS_ADMIN).
    pub privileged: bool,
    /// `sch_netem` is usable.
    pub netem: bool,
    /// nftables is usable, with set element timeouts.
    pub nftables: bool,
    /// `tbf`/`htb` qdiscs are usable.
    pub tbf: bool,
    /// `ifb` devices can be created (ingress shaping).
    pub ifb: bool,
    /// cgroup version: 1, 2, or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_version: Option<u8>,
    /// Path of a reachable Docker Engine socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_socket: Option<String>,
    /// `pidfd_open` works, so signals never hit a recycled PID.
    pub pidfd: bool,
    /// Fault kinds this agent can apply, e.g. `network.latency`, `cpu`, `process`.
    pub fault_kinds: Vec<String>,
    /// Backends available per network action, e.g. `latency: [proxy]`.
    pub network_backends: BTreeMap<String, Vec<String>>,
    /// Why a capability is missing, by name, e.g. `netem: module sch_netem not available`.
    #[serde(default)]
    pub missing: BTreeMap<String, String>,
}

/// JSON error body of every 4xx and 5xx answer from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiError {
    /// Machine-readable code: `unauthorized`, `malformed`, `unknown_fault_kind`,
    /// `invalid`, `not_found`, `unsupported`, `apply_failed`, ...
    pub error: String,
    /// Human explanation.
    pub message: String,
    /// Per-field problems, when the body was well-formed but invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// One operation of the agent API, from a request's method and path: the first step of
/// decoding a request, before authentication. `/healthz` and `/metrics` are open; every
/// other route needs the bearer token, checked before its body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `POST /v1/faults` (apply, or check with `?dryRun=true`).
    Apply,
    /// `GET /v1/faults`.
    List,
    /// `GET /v1/faults/{id}`.
    Get(&'a str),
    /// `POST /v1/faults/{id}/renew`.
    Renew(&'a str),
    /// `DELETE /v1/faults/{id}`.
    Revert(&'a str),
    /// `GET /v1/capabilities`.
    Capabilities,
    /// `GET /v1/openapi.json`: this API's OpenAPI document.
    OpenApi,
}

/// A request whose method and path name no operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such path (404).
    #[error("no route {0}")]
    NotFound(String),
    /// The path exists, not with this method (405).
    #[error("{method} {path} is not allowed")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
}

impl RouteError {
    /// The HTTP status the agent answers with.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound(_) => 404,
            RouteError::MethodNotAllowed { .. } => 405,
        }
    }

    /// The machine-readable code of [`ApiError::error`].
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NotFound(_) => "not_found",
            RouteError::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }
}

impl<'a> Route<'a> {
    /// The operation `method path` names (a trailing slash is ignored; `HEAD` is `GET`
    /// without the body).
    pub fn of(method: &str, path: &'a str) -> Result<Route<'a>, RouteError> {
        let method = if method == "HEAD" { "GET" } else { method };
        let segments: Vec<&'a str> = path.trim_end_matches('/').split('/').skip(1).collect();
        // An empty segment (`/v1/faults//renew`) names nothing, least of all an empty id.
        if segments.iter().any(|s| s.is_empty()) {
            return Err(RouteError::NotFound(path.to_string()));
        }
        let route = match (method, segments.as_slice()) {
            ("GET", ["healthz"]) => Route::Health,
            ("GET", ["metrics"]) => Route::Metrics,
            ("POST", ["v1", "faults"]) => Route::Apply,
            ("GET", ["v1", "faults"]) => Route::List,
            ("GET", ["v1", "faults", id]) => Route::Get(id),
            ("DELETE", ["v1", "faults", id]) => Route::Revert(id),
            ("POST", ["v1", "faults", id, "renew"]) => Route::Renew(id),
            ("GET", ["v1", "capabilities"]) => Route::Capabilities,
            ("GET", ["v1", "openapi.json"]) => Route::OpenApi,
            (
                _,
                ["healthz"]
                | ["metrics"]
                | ["v1", "faults"]
                | ["v1", "faults", _]
                | ["v1", "faults", _, "renew"]
                | ["v1", "capabilities"]
                | ["v1", "openapi.json"],
            ) => {
                return Err(RouteError::MethodNotAllowed {
                    method: method.to_string(),
                    path: path.to_string(),
                });
            }
            _ => return Err(RouteError::NotFound(path.to_string())),
        };
        Ok(route)
    }

    /// Whether the route is served without the bearer token.
    pub fn is_open(&self) -> bool {
        matches!(self, Route::Health | Route::Metrics)
    }
}

/// A decoded `POST /v1/faults`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyCall {
    /// The validated request.
    pub request: FaultRequest,
    /// `?dryRun=true`: check it, change nothing.
    pub dry_run: bool,
}

impl ApplyCall {
    /// Decodes the query and body of `POST /v1/faults`. The query takes only
    /// `dryRun=true|false`: anything else is refused rather than ignored, so a typo such
    /// as `dryrun=true` never applies a fault.
    pub fn decode(query: Option<&str>, body: &[u8]) -> Result<ApplyCall, WireError> {
        let request = FaultRequest::from_json(body)?;
        let mut dry_run = false;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("dryRun", "true")) => dry_run = true,
                Some(("dryRun", "false")) => dry_run = false,
                _ => {
                    return Err(WireError::Malformed(format!(
                        "unknown query `{pair}`: POST /v1/faults takes only dryRun=true|false"
                    )));
                }
            }
        }
        Ok(ApplyCall { request, dry_run })
    }
}

impl RenewRequest {
    /// Decodes a `POST /v1/faults/{id}/renew` body.
    pub fn from_json(body: &[u8]) -> Result<RenewRequest, WireError> {
        serde_json::from_slice(body)
            .map_err(|e| WireError::Malformed(format!("malformed renew body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CpuFault, Latency, NetworkAction, NetworkFault, Peer};
    use crate::units::Percent;

    fn body(fault: &str) -> Vec<u8> {
        format!(
            r#"{{"id": "f-1", "experiment": "quickstart", "target": {{"name": "payments", "pid": 42}}, "fault": {fault}, "ttl": "15s"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn routes_come_from_method_and_path_and_say_404_or_405_otherwise() {
        assert_eq!(Route::of("POST", "/v1/faults"), Ok(Route::Apply));
        assert_eq!(Route::of("GET", "/v1/faults/"), Ok(Route::List));
        assert_eq!(Route::of("HEAD", "/v1/faults/f-1"), Ok(Route::Get("f-1")));
        assert_eq!(
            Route::of("DELETE", "/v1/faults/f-1"),
            Ok(Route::Revert("f-1"))
        );
        assert_eq!(
            Route::of("POST", "/v1/faults/f-1/renew"),
            Ok(Route::Renew("f-1"))
        );
        assert_eq!(Route::of("GET", "/v1/openapi.json"), Ok(Route::OpenApi));
        assert!(Route::of("GET", "/healthz").unwrap().is_open());
        assert!(!Route::of("GET", "/v1/capabilities").unwrap().is_open());
        for (method, path, status) in [
            ("PUT", "/v1/faults", 405),
            ("POST", "/v1/capabilities", 405),
            ("GET", "/v1/faults/f-1/renew", 405),
            ("GET", "/v2/faults", 404),
            ("GET", "/", 404),
            // Found by the agent_request fuzz target: an empty id is no id.
            ("POST", "/v1/faults//renew", 404),
            ("GET", "/v1//faults", 404),
        ] {
            let err = Route::of(method, path).unwrap_err();
            assert_eq!(err.status(), status, "{method} {path}: {err}");
        }
    }

    #[test]
    fn an_apply_query_takes_only_dry_run() {
        let body = body(r#"{"cpu": {"load": "80%"}}"#);
        assert!(
            ApplyCall::decode(Some("dryRun=true"), &body)
                .unwrap()
                .dry_run
        );
        assert!(
            !ApplyCall::decode(Some("dryRun=false"), &body)
                .unwrap()
                .dry_run
        );
        assert!(!ApplyCall::decode(None, &body).unwrap().dry_run);
        let err = ApplyCall::decode(Some("dryrun=true"), &body).unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
    }

    #[test]
    fn valid_request_parses_into_checked_types() {
        let req =
            FaultRequest::from_json(&body(r#"{"cpu": {"load": "80%", "workers": 2}}"#)).unwrap();
        assert_eq!(req.id, "f-1");
        assert_eq!(req.target.pid, Some(42));
        assert_eq!(req.ttl, Duration::from_secs(15));
        assert_eq!(
            req.fault,
            FaultKind::Cpu(CpuFault {
                load: Percent::from_fraction(0.8).unwrap(),
                workers: Some(2)
            })
        );
    }

    #[test]
    fn checked_fault_survives_serialization_round_trip_through_from_json() {
        let fault = FaultKind::Network(NetworkFault {
            action: NetworkAction::Latency(Latency {
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(20),
                correlation: None,
                distribution: Default::default(),
            }),
            direction: crate::model::Direction::Egress,
            peers: vec![
                Peer::Service("orders".into()),
                Peer::Cidr {
                    addr: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                },
            ],
            ports: vec![8080],
            backend: Default::default(),
        });
        let req = FaultRequest {
            id: "a".into(),
            experiment: "e".into(),
            target: ResolvedTarget {
                name: "payments".into(),
                ..Default::default()
            },
            fault,
            ttl: Duration::from_secs(10),
        };
        let json = serde_json::to_vec(&req).unwrap();
        assert_eq!(FaultRequest::from_json(&json).unwrap(), req);
    }

    #[test]
    fn bad_json_and_missing_fields_are_malformed_with_status_400() {
        for bad in [
            b"{not json".to_vec(),
            br#"{"id": "x"}"#.to_vec(),
            body(r#"{"cpu": {"load": "80%", "wrokers": 2}}"#),
            body(r#""cpu""#),
        ] {
            let e = FaultRequest::from_json(&bad).unwrap_err();
            assert!(matches!(e, WireError::Malformed(_)), "{e}");
            assert_eq!(e.status(), 400);
        }
        let e = FaultRequest::from_json(br#"{"id": "x"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("missing required field `experiment`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fault_kind_is_distinguished_with_status_422() {
        let e = FaultRequest::from_json(&body(r#"{"teleport": {}}"#)).unwrap_err();
        assert_eq!(
            e,
            WireError::UnknownFaultKind {
                kind: "teleport".into(),
                expected: "`network`, `cpu`, `memory`, `process`, `container` or `http`".into()
            }
        );
        assert_eq!(e.status(), 422);
        assert_eq!(e.to_api_error().error, "unknown_fault_kind");
    }

    #[test]
    fn out_of_range_values_are_invalid_with_the_same_messages_as_files() {
        let e = FaultRequest::from_json(&body(r#"{"network": {"loss": {"percent": "150%"}}}"#))
            .unwrap_err();
        let WireError::Invalid(d) = &e else {
            panic!("expected Invalid, got {e}")
        };
        assert_eq!(e.status(), 422);
        let d: Vec<&Diagnostic> = d.iter().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "fault.network.loss.percent");
        assert_eq!(
            d[0].message,
            "expected a percentage between 0% and 100%, found `150%`"
        );
        // The column of `"150%"` in the one-line body.
        assert_eq!((d[0].line, d[0].column), (1, 128));

        let e = FaultRequest::from_json(&body(
            r#"{"network": {"latency": {"delay": "10ms"}}, "cpu": {"load": "5%"}}"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("exactly one of"), "{e}");
        let api = e.to_api_error();
        assert_eq!(api.error, "invalid");
        assert_eq!(api.details.len(), 1);
    }

    #[test]
    fn agent_refuses_cpu_load_its_host_cannot_give() {
        let opts = ValidateOptions {
            host_cpus: Some(1),
            ..Default::default()
        };
        let e =
            FaultRequest::from_json_with(&body(r#"{"cpu": {"load": "80%", "workers": 2}}"#), &opts)
                .unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 1.60 CPUs, but this host can give 1"),
            "{e}"
        );
    }
}
