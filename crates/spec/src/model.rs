//! The checked experiment model (v1alpha1).
//!
//! Values of these types have passed validation: downstream code (agent, controller,
//! operator) never re-checks them. They serialize in the same shape as the experiment
//! file, so reports and the agent wire format read like the YAML a user wrote.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Bandwidth, ByteSize, Duration, Percent, Rate};

/// The `apiVersion` every experiment document carries.
pub const API_VERSION: &str = "faultline.dev/v1alpha1";
/// The `kind` every experiment document carries.
pub const KIND: &str = "Experiment";

/// One validated experiment document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// `metadata.name`: a DNS-1123 label, unique within a file.
    pub name: String,
    /// `metadata.namespace`, used only in Kubernetes.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The experiment body.
    pub spec: ExperimentSpec,
}

/// `spec`: what to run, what to inject and what must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    /// Free text shown in reports.
    pub description: Option<String>,
    /// The whole run: steady state, faults and recovery.
    pub duration: Duration,
    /// Optional cron schedule used by `chaos controller`.
    pub schedule: Option<Schedule>,
    /// Optional built-in open-model traffic.
    pub load: Option<Load>,
    /// SLOs that must hold before any fault is injected.
    pub steady_state: Option<SteadyState>,
    /// Faults, each with its target and time window.
    pub faults: Vec<Fault>,
    /// Service level objectives judged over the run.
    pub slos: Vec<Slo>,
    /// Conditions that stop the run at once.
    pub abort: Vec<AbortCondition>,
    /// After the last fault ends, every SLO must hold again within this time.
    pub recovery: Option<Recovery>,
    /// `spec.replicas`: the least number of replicas of a service this experiment needs
    /// (one when absent). Local mode starts that many; see docs/experiments.md.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, u32>,
}

impl ExperimentSpec {
    /// How many replicas of `service` this experiment needs: at least one.
    pub fn replicas_of(&self, service: &str) -> u32 {
        self.replicas.get(service).copied().unwrap_or(1)
    }
}

/// When and how `chaos controller` runs an experiment on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    pub cron: String,
    /// IANA time zone the cron is read in (`spec.timeZone`); UTC when absent.
    pub time_zone: Option<String>,
    /// What to do when a run is due while the previous one still runs.
    pub concurrency_policy: ConcurrencyPolicy,
}

/// Same meaning as a Kubernetes CronJob's `concurrencyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new run while one is active.
    #[default]
    Forbid,
    /// Run both.
    Allow,
    /// Stop the active run (reverting its faults) and start the new one.
    Replace,
}

/// `spec.load`: open-model traffic at a constant arrival rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Where the traffic goes.
    pub target: LoadTarget,
    /// Arrival rate.
    pub rate: Rate,
    /// Keep-alive connections opened up front (pre-allocated).
    pub connections: u32,
    /// Most connections the generator may have open: when a request is due and every
    /// open connection is busy, it opens another, up to this many. Never below
    /// `connections`.
    pub max_connections: u32,
    /// Per-request timeout; a timed-out request counts as an error.
    pub timeout: Duration,
    /// Weighted request mix; never empty.
    pub requests: Vec<LoadRequest>,
    /// Spells of another arrival rate, in time order, not overlapping, inside the run.
    pub surges: Vec<Surge>,
}

/// A spell of another arrival rate (`spec.load.surges`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Surge {
    /// When it starts, from the start of the run.
    pub after: Duration,
    /// How long it lasts.
    pub duration: Duration,
    /// The arrival rate while it lasts.
    pub rate: Rate,
}

/// When the last fault or load surge ends, from the start of the run: what `recovery` is
/// judged from. `None` when there is neither.
pub fn disturbance_end(faults: &[Fault], surges: &[Surge]) -> Option<std::time::Duration> {
    let faults = faults.iter().map(|f| f.after.std() + f.duration.std());
    let surges = surges.iter().map(|s| s.after.std() + s.duration.std());
    faults.chain(surges).max()
}

/// A load target: a service name resolved by the environment, or a literal URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadTarget {
    /// A fleet, compose or Kubernetes service name.
    Service(String),
    /// An absolute `http://` URL.
    Url(String),
}

/// One entry of the request mix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Optional request body.
    pub body: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Relative weight, at least 1.
    pub weight: u32,
}

/// `spec.steadyState`: SLOs checked over a window before faults start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SteadyState {
    /// How long the steady state is observed.
    pub window: Duration,
    /// Names of SLOs in `spec.slos`; every one resolves.
    pub slos: Vec<String>,
}

/// One fault: what to inject, where, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Unique within the experiment.
    pub name: String,
    /// What the fault hits.
    pub target: Target,
    /// Offset from the start of the run.
    pub after: Duration,
    /// How long the fault lasts; `after + duration` lies inside `spec.duration`.
    pub duration: Duration,
    /// Exactly one fault kind (flattened: `network: {..}` sits beside `name`, as in files).
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How the measured effect is judged against what was asked.
    pub effect: EffectRule,
}

/// How a fault's measured effect is judged (the effect gate, `docs/running.md`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EffectRule {
    /// How far the measured effect may fall from the asked one, relative to it.
    pub tolerance: Percent,
    /// Whether a fault that did not bite makes the run inconclusive.
    pub required: bool,
}

impl EffectRule {
    /// The tolerance when an experiment names none: 10%.
    pub const DEFAULT_TOLERANCE: f64 = 0.10;
}

impl Default for EffectRule {
    fn default() -> Self {
        Self {
            tolerance: Percent::from_fraction(Self::DEFAULT_TOLERANCE)
                .unwrap_or_else(|| unreachable!("10% is a valid percentage")),
            required: true,
        }
    }
}

/// What a fault hits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// A service by name: fleet service, compose service or the Kubernetes
    /// label `app.kubernetes.io/name`, and how many of its replicas are hit. Works in
    /// every mode.
    Service(ServiceTarget),
    /// Kubernetes pods selected by labels (Kubernetes mode only).
    Pods(PodSelector),
    /// A process id on the node (local and compose modes).
    Pid(u32),
    /// A container name or id (local and compose modes).
    Container(String),
}

impl Target {
    /// Every replica of the service `name`.
    pub fn service(name: impl Into<String>) -> Target {
        Target::Service(ServiceTarget {
            name: name.into(),
            mode: SelectionMode::All,
            seed: None,
        })
    }
}

/// A service target: its replicas (local processes, compose containers or Kubernetes
/// pods) are chosen like pods by a label selector, but every one is hit by default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceTarget {
    /// The service name.
    pub name: String,
    /// How many of its replicas are hit; `all` when absent.
    pub mode: SelectionMode,
    /// Seed that makes the selection replayable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl ServiceTarget {
    /// The replicas of `candidates` this target selects for the fault named `fault`,
    /// outside Kubernetes: unseeded, the seed derives from the fault's name alone (in
    /// Kubernetes the operator adds the namespace and the experiment's name).
    pub fn select<T: Clone>(
        &self,
        candidates: &[T],
        name: impl Fn(&T) -> &str,
        fault: &str,
    ) -> Vec<T> {
        let seed = self
            .seed
            .unwrap_or_else(|| crate::selection::default_seed("", "", fault));
        crate::selection::select(candidates, name, self.mode, seed)
    }
}

/// Kubernetes pod selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodSelector {
    /// Namespace; the experiment's own when absent.
    pub namespace: Option<String>,
    /// Label selector; all must match. Never empty.
    pub labels: BTreeMap<String, String>,
    /// How many of the matching pods are hit.
    pub mode: SelectionMode,
    /// Seed that makes the selection replayable.
    pub seed: Option<u64>,
}

/// How many matching targets a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SelectionMode {
    /// One target, chosen by the seed.
    #[default]
    One,
    /// Every matching target.
    All,
    /// Exactly N targets (all of them when fewer match).
    Fixed(u32),
    /// This share of the targets, rounded up, at least one.
    Percent(Percent),
}

/// The kind of a fault: exactly one per fault. Serialized externally tagged,
/// e.g. `{"cpu": {"load": "80%"}}`, which is also the agent wire form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum FaultKind {
    /// Latency, loss, bandwidth, reset or partition.
    Network(NetworkFault),
    /// CPU stress.
    Cpu(CpuFault),
    /// Memory stress.
    Memory(MemoryFault),
    /// A signal to the target process.
    Process(ProcessFault),
    /// A Docker container action.
    Container(ContainerFault),
    /// HTTP-level aborts and delays.
    Http(HttpFault),
}

impl FaultKind {
    /// The kind's name as written in experiment files (`network`, `cpu`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Network(_) => "network",
            FaultKind::Cpu(_) => "cpu",
            FaultKind::Memory(_) => "memory",
            FaultKind::Process(_) => "process",
            FaultKind::Container(_) => "container",
            FaultKind::Http(_) => "http",
        }
    }
}

/// A network fault: one action, narrowed by direction, peers and ports.
// No `deny_unknown_fields` here: serde cannot combine it with `flatten`. Wire input is
// checked through the raw types instead (see `wire::FaultRequest::from_json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFault {
    /// What happens to the matching traffic.
    #[serde(flatten)]
    pub action: NetworkAction,
    /// Which direction of the target's traffic is affected.
    #[serde(default)]
    pub direction: Direction,
    /// Only traffic to or from these peers; all peers when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// Only traffic on these target ports; all ports when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Which injection backend to use.
    #[serde(default)]
    pub backend: NetworkBackend,
}

/// The network action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetworkAction {
    /// Added delay with optional jitter.
    Latency(Latency),
    /// Packet loss (emulated as stalls by the proxy backend).
    Loss(Loss),
    /// A bandwidth cap.
    Bandwidth(BandwidthLimit),
    /// Connections are reset (TCP RST).
    Reset(Empty),
    /// Nothing gets through.
    Partition(Empty),
}

/// An empty body, written `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `latency: {delay, jitter, correlation, distribution}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Latency {
    /// Mean added delay.
    pub delay: Duration,
    /// Spread around the delay; never more than `delay`.
    #[serde(default)]
    pub jitter: Duration,
    /// Correlation with the previous sample, like netem's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Percent>,
    /// Shape of the jitter.
    #[serde(default)]
    pub distribution: JitterDistribution,
}

/// How jitter is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JitterDistribution {
    /// Uniform in `[delay - jitter, delay + jitter]` (netem's default).
    #[default]
    Uniform,
    /// Normal with `jitter` as standard deviation, clamped to `delay ± 2·jitter`, never negative.
    Normal,
}

/// `loss: {percent, correlation}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Loss {
    /// Share of packets dropped, 0–100%.
    pub percent: Percent,
    /// Correlation with the previous decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Percent>,
}

/// `bandwidth: {rate}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BandwidthLimit {
    /// The cap.
    pub rate: Bandwidth,
}

/// Which direction of the target's traffic a network fault affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Traffic arriving at the target.
    #[default]
    Ingress,
    /// Traffic the target sends.
    Egress,
    /// Both.
    Both,
}

/// A peer that narrows a network fault. Serialized as it is written in experiment
/// files: a service name (`orders`) or a CIDR (`10.0.0.0/8`; a bare address means one host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A service name, resolved by the environment.
    Service(String),
    /// An address range.
    Cidr {
        /// Network address.
        addr: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
}

impl Peer {
    /// Reads a peer as written in experiment files; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| {
                format!(
                    "expected a CIDR like `10.0.0.0/8`, found `{s}`: `{addr}` is not an IP address"
                )
            })?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("expected a CIDR prefix length between 0 and {max}, found `{s}`")
            })?;
            return Ok(Peer::Cidr { addr, prefix });
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Peer::Cidr { addr, prefix });
        }
        if crate::validate::is_dns_label(s) {
            return Ok(Peer::Service(s.to_owned()));
        }
        Err(format!(
            "expected a service name (lower case letters, digits and `-`) or a CIDR like `10.0.0.0/8`, found `{s}`"
        ))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Service(s) => f.write_str(s),
            Peer::Cidr { addr, prefix } => write!(f, "{addr}/{prefix}"),
        }
    }
}

impl Serialize for Peer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Peer::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Network injection backend. `auto` picks by capability: netem where the kernel has
/// it for latency, otherwise the proxy; nftables for loss, partition and reset when
/// privileged, otherwise the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NetworkBackend {
    /// Choose by capability.
    #[default]
    Auto,
    /// The userspace proxy (redirected when privileged).
    Proxy,
    /// nftables rules in the target's namespace.
    Nftables,
    /// The `sch_netem` qdisc; fails preflight where the kernel lacks it.
    Netem,
}

/// `cpu: {load, workers}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuFault {
    /// Load per worker, e.g. 80%.
    pub load: Percent,
    /// Number of burner threads; one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

/// `memory: {size}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryFault {
    /// Bytes allocated and touched.
    pub size: ByteSize,
}

/// `process: {signal}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessFault {
    /// The signal delivered.
    pub signal: Signal,
}

/// Signals a process fault may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Signal {
    /// Kill at once.
    #[serde(rename = "SIGKILL")]
    Kill,
    /// Ask to terminate.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Freeze for the fault's duration, then `SIGCONT`.
    #[serde(rename = "SIGSTOP")]
    Stop,
}

/// `container: {action}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerFault {
    /// What happens to the container.
    pub action: ContainerAction,
}

/// Docker container actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ContainerAction {
    /// `docker kill`.
    Kill,
    /// `docker pause` for the fault's duration, then unpause.
    Pause,
    /// `docker restart`.
    Restart,
}

/// `http: {abort, delay, paths, methods}`; at least one of `abort` and `delay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFault {
    /// Answer some requests with an error status instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<HttpAbort>,
    /// Delay some requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HttpDelay>,
    /// Path prefixes the fault applies to (a trailing `*` is allowed); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods the fault applies to; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// `abort: {status, percent}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAbort {
    /// Status code answered, 400–599.
    pub status: u16,
    /// Share of matching requests aborted.
    pub percent: Percent,
}

/// `delay: {delay, jitter, percent}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDelay {
    /// Added delay.
    pub delay: Duration,
    /// Uniform spread around the delay.
    #[serde(default)]
    pub jitter: Duration,
    /// Share of matching requests delayed; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
}

/// One service level objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    /// Unique within the experiment.
    pub name: String,
    /// Evaluation window (for rates and quantiles).
    pub window: Duration,
    /// Whose measurements are judged.
    pub source: SloSource,
    /// What is measured and the threshold (flattened, as in files).
    #[serde(flatten)]
    pub kind: SloKind,
}

/// Whose measurements an SLO judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SloSource {
    /// The services' own metrics (embedded scraper or Prometheus).
    #[default]
    Server,
    /// The load generator's own measurements.
    Client,
}

/// What an SLO measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SloKind {
    /// Share of 5xx (server) or failed (client) requests stays at or below `max`.
    ErrorRate {
        /// Service whose requests count.
        service: String,
        /// Threshold.
        max: Percent,
        /// Only this route template, e.g. `/api/orders/:id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// The quantile of request latency stays at or below `max`.
    Latency {
        /// Service whose requests count.
        service: String,
        /// In (0, 1).
        quantile: f64,
        /// Threshold.
        max: Duration,
    },
    /// Successful requests per second stay at or above `min`.
    Throughput {
        /// Service whose requests count.
        service: String,
        /// Threshold.
        min: Rate,
    },
    /// A raw PromQL expression with `max` and/or `min` (needs a Prometheus server).
    Promql {
        /// The expression, evaluated as an instant query.
        expr: String,
        /// Upper bound, inclusive.
        max: Option<f64>,
        /// Lower bound, inclusive.
        min: Option<f64>,
    },
}

/// `spec.abort[]`: stop the run at once when this SLO-like condition is violated for `for`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbortCondition {
    /// Window and source as for SLOs.
    pub window: Duration,
    /// Whose measurements are judged.
    pub source: SloSource,
    /// The condition; the run aborts when its threshold is exceeded.
    #[serde(flatten)]
    pub kind: SloKind,
    /// How long it must be violated before the run aborts (`for` in files).
    #[serde(rename = "for")]
    pub for_duration: Duration,
}

/// `spec.recovery`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// After the last fault ends, every SLO must hold again within this time.
    pub within: Duration,
}
