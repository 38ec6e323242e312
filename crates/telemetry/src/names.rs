//! Metric names as exposed on `/metrics` and used in PromQL, SLOs and dashboards.
//!
//! Each constant is the *family name a query uses*: counters carry their `_total`
//! suffix, histograms are the base name whose `_bucket`, `_sum` and `_count` series
//! a query reads. [`CATALOG`] lists every family with its kind and label names, so
//! tests (dashboards, round trips) can check against one list. Agent and controller
//! metrics are added in their own sections below, next to the fleet's.

/// What kind of Prometheus metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter; the exposed name ends in `_total`.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Histogram with the standard [`crate::DURATION_BUCKETS`] unless stated otherwise.
    Histogram,
}

/// One metric family: its exposed name, kind, label names and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Name as used in queries (counters include `_total`).
    pub name: &'static str,
    /// Kind of the family.
    pub kind: MetricKind,
    /// Label names every series of the family carries, in order.
    pub labels: &'static [&'static str],
    /// Help text shown in the exposition.
    pub help: &'static str,
}

impl MetricDef {
    /// The name to hand to `prometheus_client::registry::Registry::register`, which
    /// appends `_total` to counters itself.
    pub fn registration_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            MetricKind::Gauge | MetricKind::Histogram => self.name,
        }
    }

    /// Names of the sample series this family exposes (`_bucket`, `_sum` and `_count`
    /// for histograms, the name itself otherwise).
    pub fn series_names(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", self.name))
                .collect(),
            MetricKind::Counter | MetricKind::Gauge => vec![self.name.to_string()],
        }
    }
}

// ---- label names -------------------------------------------------------------------

/// Label: the service that exposes the metric (`gateway`, `orders`, ...).
pub const LABEL_SERVICE: &str = "service";
/// Label: route template such as `/api/orders/:id`; never a raw path.
pub const LABEL_ROUTE: &str = "route";
/// Label: HTTP method, upper case, or `OTHER`.
pub const LABEL_METHOD: &str = "method";
/// Label: HTTP status code as three digits.
pub const LABEL_CODE: &str = "code";
/// Label: the upstream service a client call goes to.
pub const LABEL_UPSTREAM: &str = "upstream";
/// Label: how a client call ended, see [`crate::ClientOutcome`].
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: the breaker state a transition went to (`closed`, `half_open`, `open`).
pub const LABEL_TO: &str = "to";
/// Label: what a service did with a request that arrived after its caller's deadline
/// (`refused` or `served`).
pub const LABEL_ACTION: &str = "action";

// ---- fleet: server side ------------------------------------------------------------

/// Requests a service answered, by route template, method and status code.
pub const HTTP_SERVER_REQUESTS_TOTAL: &str = "http_server_requests_total";
/// Time from request head received to response written, in seconds.
pub const HTTP_SERVER_REQUEST_DURATION_SECONDS: &str = "http_server_request_duration_seconds";

// ---- fleet: client side ------------------------------------------------------------

/// Calls a service made to an upstream, by outcome.
pub const HTTP_CLIENT_REQUESTS_TOTAL: &str = "http_client_requests_total";
/// Duration of calls to an upstream including retries' individual attempts, in seconds.
pub const HTTP_CLIENT_REQUEST_DURATION_SECONDS: &str = "http_client_request_duration_seconds";

// ---- fleet: resilience -------------------------------------------------------------

/// Breaker state per upstream: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "breaker_state";
/// Breaker state changes per upstream, by the state entered.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "breaker_transitions_total";
/// Retry attempts made per upstream (the first attempt is not a retry).
pub const RETRIES_TOTAL: &str = "retries_total";
/// Current degradation level of a service: 0 normal, 1 to 3 as in DESIGN.md §5.
pub const DEGRADATION_LEVEL: &str = "degradation_level";

// ---- fleet: business invariants ----------------------------------------------------

/// Charges payments accepted for an order it had already charged under another
/// idempotency key: a customer charged twice.
pub const DOUBLE_CHARGES_TOTAL: &str = "double_charges_total";
/// Requests that arrived after the deadline their caller sent (`x-request-deadline`), by
/// what the service did with them: `refused` (504 at once) or `served` (work for a caller
/// that had already given up, such as a charge for an order its customer saw fail).
pub const DEADLINE_EXCEEDED_TOTAL: &str = "deadline_exceeded_total";

// ---- fleet: notifications queue --------------------------------------------------

/// Notifications accepted and not yet handed to the outbound provider.
pub const NOTIFICATION_QUEUE_DEPTH: &str = "notification_queue_depth";
/// How long the notification handed to the provider last had waited in the queue, in
/// seconds: what a customer waits for their confirmation beyond the provider's own time.
pub const NOTIFICATION_DELIVERY_LAG_SECONDS: &str = "notification_delivery_lag_seconds";

const SERVER_REQUEST_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_ROUTE, LABEL_METHOD, LABEL_CODE];
const SERVER_DURATION_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_ROUTE, LABEL_METHOD];
const CLIENT_REQUEST_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_UPSTREAM, LABEL_OUTCOME];
const CLIENT_DURATION_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_UPSTREAM];
const UPSTREAM_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_UPSTREAM];
const TRANSITION_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_UPSTREAM, LABEL_TO];
const SERVICE_LABELS: &[&str] = &[LABEL_SERVICE];
const ACTION_LABELS: &[&str] = &[LABEL_SERVICE, LABEL_ACTION];

/// The fleet's metric families, as registered by [`crate::ServiceMetrics`].
pub const FLEET: &[MetricDef] = &[
    MetricDef {
        name: HTTP_SERVER_REQUESTS_TOTAL,
        kind: MetricKind::Counter,
        labels: SERVER_REQUEST_LABELS,
        help: "Requests answered, by route template, method and status code.",
    },
    MetricDef {
        name: HTTP_SERVER_REQUEST_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        labels: SERVER_DURATION_LABELS,
        help: "Server-side request duration in seconds.",
    },
    MetricDef {
        name: HTTP_CLIENT_REQUESTS_TOTAL,
        kind: MetricKind::Counter,
        labels: CLIENT_REQUEST_LABELS,
        help: "Calls made to an upstream, by outcome.",
    },
    MetricDef {
        name: HTTP_CLIENT_REQUEST_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        labels: CLIENT_DURATION_LABELS,
        help: "Duration of each upstream call attempt in seconds.",
    },
    MetricDef {
        name: BREAKER_STATE,
        kind: MetricKind::Gauge,
        labels: UPSTREAM_LABELS,
        help: "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
    },
    MetricDef {
        name: BREAKER_TRANSITIONS_TOTAL,
        kind: MetricKind::Counter,
        labels: TRANSITION_LABELS,
        help: "Circuit breaker state changes per upstream, by the state entered.",
    },
    MetricDef {
        name: RETRIES_TOTAL,
        kind: MetricKind::Counter,
        labels: UPSTREAM_LABELS,
        help: "Retry attempts per upstream.",
    },
    MetricDef {
        name: DEGRADATION_LEVEL,
        kind: MetricKind::Gauge,
        labels: SERVICE_LABELS,
        help: "Degradation level: 0 normal, 1 cached fallback, 2 non-critical shed, 3 lightweight path.",
    },
    MetricDef {
        name: DOUBLE_CHARGES_TOTAL,
        kind: MetricKind::Counter,
        labels: SERVICE_LABELS,
        help: "Charges accepted for an order already charged under another idempotency key.",
    },
    MetricDef {
        name: DEADLINE_EXCEEDED_TOTAL,
        kind: MetricKind::Counter,
        labels: ACTION_LABELS,
        help: "Requests that arrived after their caller's deadline, by what was done with them.",
    },
    MetricDef {
        name: NOTIFICATION_QUEUE_DEPTH,
        kind: MetricKind::Gauge,
        labels: SERVICE_LABELS,
        help: "Notifications accepted and not yet handed to the outbound provider.",
    },
    MetricDef {
        name: NOTIFICATION_DELIVERY_LAG_SECONDS,
        kind: MetricKind::Gauge,
        labels: SERVICE_LABELS,
        help: "Seconds the last delivered notification waited in the queue.",
    },
];

// ---- agent -------------------------------------------------------------------------

/// Label: fault kind (`network`, `cpu`, `memory`, `process`, `container`, `http`).
pub const LABEL_KIND: &str = "kind";

/// Faults an agent currently holds applied, by kind.
pub const AGENT_ACTIVE_FAULTS: &str = "faultline_agent_active_faults";
/// Faults an agent applied, by kind.
pub const AGENT_FAULT_APPLIES_TOTAL: &str = "faultline_agent_fault_applies_total";
/// Fault applies that failed (nothing was left on the host), by kind.
pub const AGENT_FAULT_APPLY_FAILURES_TOTAL: &str = "faultline_agent_fault_apply_failures_total";
/// Faults reverted on request, by kind.
pub const AGENT_FAULT_REVERTS_TOTAL: &str = "faultline_agent_fault_reverts_total";
/// Faults reverted because their lease expired without renewal, by kind.
pub const AGENT_FAULT_EXPIRIES_TOTAL: &str = "faultline_agent_fault_expiries_total";

const KIND_LABELS: &[&str] = &[LABEL_KIND];

/// The agent's metric families, as registered by `faultline-agent`.
pub const AGENT: &[MetricDef] = &[
    MetricDef {
        name: AGENT_ACTIVE_FAULTS,
        kind: MetricKind::Gauge,
        labels: KIND_LABELS,
        help: "Faults currently applied by this agent, by kind.",
    },
    MetricDef {
        name: AGENT_FAULT_APPLIES_TOTAL,
        kind: MetricKind::Counter,
        labels: KIND_LABELS,
        help: "Faults applied, by kind.",
    },
    MetricDef {
        name: AGENT_FAULT_APPLY_FAILURES_TOTAL,
        kind: MetricKind::Counter,
        labels: KIND_LABELS,
        help: "Fault applies that failed, by kind.",
    },
    MetricDef {
        name: AGENT_FAULT_REVERTS_TOTAL,
        kind: MetricKind::Counter,
        labels: KIND_LABELS,
        help: "Faults reverted on request, by kind.",
    },
    MetricDef {
        name: AGENT_FAULT_EXPIRIES_TOTAL,
        kind: MetricKind::Counter,
        labels: KIND_LABELS,
        help: "Faults reverted because their lease expired, by kind.",
    },
];

// ---- controller --------------------------------------------------------------------

/// Label: the experiment's name (`chaos controller` metrics).
pub const LABEL_EXPERIMENT: &str = "experiment";
/// Label: a run's verdict (`pass`, `fail`, `aborted`, `error`, `skipped`).
pub const LABEL_VERDICT: &str = "verdict";
/// Label: an SLO's name.
pub const LABEL_SLO: &str = "slo";

/// Counter: experiment runs by verdict.
pub const FAULTLINE_RUNS_TOTAL: &str = "faultline_runs_total";
/// Counter: SLO violations, per experiment and SLO.
pub const FAULTLINE_SLO_VIOLATIONS_TOTAL: &str = "faultline_slo_violations_total";
/// Gauge: Unix time the experiment's last run ended.
pub const FAULTLINE_LAST_RUN_TIMESTAMP_SECONDS: &str = "faultline_last_run_timestamp_seconds";
/// Histogram: wall time of experiment runs in seconds (buckets 1 s .. ~9 h).
pub const FAULTLINE_RUN_DURATION_SECONDS: &str = "faultline_run_duration_seconds";

/// The metric families of `chaos controller` (scheduler and operator).
pub const CONTROLLER: &[MetricDef] = &[
    MetricDef {
        name: FAULTLINE_RUNS_TOTAL,
        kind: MetricKind::Counter,
        labels: &[LABEL_EXPERIMENT, LABEL_VERDICT],
        help: "Experiment runs by verdict.",
    },
    MetricDef {
        name: FAULTLINE_SLO_VIOLATIONS_TOTAL,
        kind: MetricKind::Counter,
        labels: &[LABEL_EXPERIMENT, LABEL_SLO],
        help: "SLO violations by experiment and SLO.",
    },
    MetricDef {
        name: FAULTLINE_LAST_RUN_TIMESTAMP_SECONDS,
        kind: MetricKind::Gauge,
        labels: &[LABEL_EXPERIMENT],
        help: "Unix time the experiment's last run ended.",
    },
    MetricDef {
        name: FAULTLINE_RUN_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        labels: &[LABEL_EXPERIMENT],
        help: "Wall time of experiment runs in seconds.",
    },
];

/// Every metric family Faultline exposes. Dashboards and SLOs may use only these.
pub const CATALOG: &[&[MetricDef]] = &[FLEET, CONTROLLER, AGENT];

/// Looks a family up by its exposed name in [`CATALOG`].
pub fn lookup(name: &str) -> Option<&'static MetricDef> {
    CATALOG
        .iter()
        .flat_map(|defs| defs.iter())
        .find(|def| def.name == name)
}
