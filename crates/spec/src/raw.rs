//! Raw experiment documents exactly as written in YAML, before validation.
//!
//! These types mirror the file format field by field (`deny_unknown_fields`), derive
//! the JSON Schema that editors and Kubernetes use, and keep unit values as text so a
//! bad `duration` is reported by validation ([`crate::parse_str`],
//! [`ExperimentSpec::validate`]) together with every other mistake instead of
//! stopping deserialization. Alternatives (fault kinds, SLO kinds, target
//! forms) are optional fields rather than enums: the schema stays structural for a
//! Kubernetes CRD, and "exactly one kind" is a validation rule with a clear message.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::de::Recover;
use crate::model::{
    ConcurrencyPolicy, ContainerAction, Direction, JitterDistribution, NetworkBackend, Signal,
    SloSource,
};

macro_rules! unit_text {
    ($(#[$doc:meta])* $name:ident, $expecting:literal, $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The text as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name(v.to_owned()))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        Ok($name(v.to_string()))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        Ok($name(v.to_string()))
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$name, E> {
                        Ok($name(v.to_string()))
                    }
                }
                deserializer.deserialize_str(V)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

unit_text!(
    /// A duration as written: `250ms`, `5s`, `2m`, `1h`.
    DurationText,
    "a duration like `250ms`, `5s` or `2m`",
    {
        "type": "string",
        "description": "A duration: a number and a unit (ns, us, ms, s, m, h), e.g. `250ms`, `5s`, `2m`.",
        "pattern": "^[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)$"
    }
);

unit_text!(
    /// A percentage as written: `0.5%` or a fraction such as `0.005`.
    PercentText,
    "a percentage like `0.5%` or a fraction like `0.005`",
    {
        "description": "A percentage like `0.5%`, or a fraction between 0 and 1 like `0.005`.",
        "anyOf": [
            {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)? ?%$"},
            {"type": "number", "minimum": 0, "maximum": 1}
        ]
    }
);

unit_text!(
    /// A size as written: `256MiB`, `1GiB`, `512KB`.
    ByteSizeText,
    "a size like `256MiB`, `1GiB` or `512KB`",
    {
        "type": "string",
        "description": "A size: a number and a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), e.g. `256MiB`.",
        "pattern": "^[0-9]+(\\.[0-9]+)?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)$"
    }
);

unit_text!(
    /// A rate as written: `200/s`, `1200/m`, `10/h`.
    RateText,
    "a rate like `200/s`, `1200/m` or `10/h`",
    {
        "type": "string",
        "description": "An event rate: a number per second, minute or hour, e.g. `200/s`.",
        "pattern": "^[0-9]+(\\.[0-9]+)?/(s|m|h)$"
    }
);

unit_text!(
    /// A bandwidth as written: `10Mbit/s`, `512kbit`, `1MiB/s`.
    BandwidthText,
    "a bandwidth like `10Mbit/s`, `512kbit` or `1MiB/s`",
    {
        "type": "string",
        "description": "A bandwidth, e.g. `10Mbit/s`, `512kbit`, `1MiB/s`.",
        "pattern": "^[0-9]+(\\.[0-9]+)?(bit|bps|kbit|Kbit|mbit|Mbit|gbit|Gbit|B|KiB|MiB|GiB|KB|MB|GB)(/s)?$"
    }
);

/// One experiment document (`apiVersion`, `kind`, `metadata`, `spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Faultline Experiment (faultline.dev/v1alpha1)")]
pub struct ExperimentDocument {
    /// Always `faultline.dev/v1alpha1`.
    pub api_version: String,
    /// Always `Experiment`.
    pub kind: String,
    /// Name, namespace and labels.
    pub metadata: Recover<Metadata>,
    /// What to run, what to inject and what must hold.
    pub spec: Recover<ExperimentSpec>,
}

/// `metadata`: the same fields a Kubernetes object has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A DNS-1123 label: lower case letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free labels, shown in reports and usable by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free annotations (ignored by Faultline, kept for Kubernetes tools).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec`: the body of an experiment. This struct is also the Kubernetes CRD's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Free text shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The whole run: steady state, faults and recovery, e.g. `60s`.
    pub duration: DurationText,
    /// Cron expression with seconds (`sec min hour day-of-month month day-of-week [year]`),
    /// used by `chaos controller` to run the experiment on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in, e.g. `Europe/Paris`; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What to do when a scheduled run is due while the previous one still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// Built-in open-model traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Recover<Load>>,
    /// SLOs that must hold before any fault is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<Recover<SteadyState>>,
    /// Faults, each with its target and time window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Recover<Fault>>,
    /// Service level objectives judged over the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<Recover<Slo>>,
    /// Conditions that stop the run at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<Recover<AbortCondition>>,
    /// After the last fault ends, every SLO must hold again within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recover<Recovery>>,
    /// The least number of replicas of a service the experiment needs, e.g.
    /// `{inventory: 2}`; one when absent. Local mode starts that many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<BTreeMap<String, u32>>,
}

/// `spec.load`: constant-arrival-rate traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Load {
    /// A service name (`gateway`) or an absolute `http://` URL.
    pub target: String,
    /// Arrival rate, e.g. `200/s`.
    pub rate: RateText,
    /// Keep-alive connections opened up front; 16 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Most connections the generator may open when the open model needs more requests
    /// in flight than `connections`; at least `connections`, at most 10000. When absent,
    /// `max(connections, min(ceil(rate × timeout), 512))`, with the highest of `rate` and
    /// the surges' rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Per-request timeout; a timed-out request counts as an error. `5s` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Weighted request mix; at least one.
    pub requests: Vec<LoadRequest>,
    /// Spells of a higher (or lower) arrival rate: a flash sale, a retry storm from a
    /// client, a batch job. Each replaces `rate` from its `after` for its `duration`; they
    /// may not overlap and must end inside the experiment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub surges: Vec<Surge>,
}

/// One entry of `spec.load.surges`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Surge {
    /// When the surge starts, from the start of the run.
    pub after: DurationText,
    /// How long it lasts.
    pub duration: DurationText,
    /// The arrival rate while it lasts, e.g. `2500/s`.
    pub rate: RateText,
}

/// One entry of the request mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadRequest {
    /// HTTP method; `GET` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Relative weight, at least 1; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `spec.steadyState`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SteadyState {
    /// How long the steady state is observed before faults start.
    pub window: DurationText,
    /// Names of SLOs from `spec.slos` that must hold.
    pub slos: Vec<String>,
}

/// One fault: a name, a target, a time window and exactly one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Unique within the experiment.
    pub name: String,
    /// What the fault hits.
    pub target: Target,
    /// Offset from the start of the run; `0s` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<DurationText>,
    /// How long the fault lasts.
    pub duration: DurationText,
    /// Network latency, loss, bandwidth, reset or partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkFault>,
    /// CPU stress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuFault>,
    /// Memory stress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFault>,
    /// A signal to the target process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFault>,
    /// A Docker container action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerFault>,
    /// HTTP aborts and delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFault>,
    /// How the fault's measured effect is judged against what was asked (the effect
    /// gate, `docs/running.md`); the kind's default rule when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<EffectRule>,
}

/// `effect: {tolerance, required}`: relaxes the effect gate for one fault.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EffectRule {
    /// How far the measured effect may fall from the asked one, relative to it
    /// (e.g. `25%`: a 100 ms delay may measure 75-125 ms); `10%` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<PercentText>,
    /// When `false`, a fault that did not bite is reported but does not make the run
    /// inconclusive; `true` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

impl Fault {
    /// The fault-kind fields, in the shape the agent wire format uses.
    pub fn kind(&self) -> FaultKindSpec {
        FaultKindSpec {
            network: self.network.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            process: self.process.clone(),
            container: self.container.clone(),
            http: self.http.clone(),
        }
    }
}

/// Exactly one fault kind, as a set of optional fields. This is the `fault` of an
/// agent request (`{"cpu": {"load": "80%"}}`) and the kind part of a file's fault.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultKindSpec {
    /// Network latency, loss, bandwidth, reset or partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkFault>,
    /// CPU stress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuFault>,
    /// Memory stress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFault>,
    /// A signal to the target process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFault>,
    /// A Docker container action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerFault>,
    /// HTTP aborts and delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFault>,
}

/// The names of the fault kinds, in the order they are checked.
pub const FAULT_KINDS: &[&str] = &["network", "cpu", "memory", "process", "container", "http"];

/// What a fault hits: exactly one of `service`, `labels`, `pid` or `container`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// A service: fleet service, compose service or Kubernetes `app.kubernetes.io/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Kubernetes only: namespace of the pods selected by `labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes only: pod label selector (all must match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// How many of the service's replicas (`all` when absent) or of the pods matching
    /// `labels` (`one` when absent) are hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SelectionMode>,
    /// Seed that makes the `mode` selection replayable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Local and compose modes: a process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Local and compose modes: a container name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// How many matching pods a fault hits: `one`, `all`, `{fixed: N}` or `{percent: P}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SelectionMode {
    /// One pod, chosen by the seed.
    One,
    /// Every matching pod.
    All,
    /// Exactly N pods (all when fewer match).
    Fixed(u32),
    /// This share of the pods, rounded up, at least one.
    Percent(PercentText),
}

/// `network`: exactly one of `latency`, `loss`, `bandwidth`, `reset`, `partition`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkFault {
    /// Added delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Packet loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// A bandwidth cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Connections are reset (TCP RST). Written `reset: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Empty>,
    /// Nothing gets through. Written `partition: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Empty>,
    /// `ingress` (default), `egress` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only traffic to or from these peers: service names or CIDRs like `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Only traffic on these target ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Injection backend: `auto` (default), `proxy`, `nftables` or `netem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<NetworkBackend>,
}

/// An empty body, written `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `latency: {delay, jitter, correlation, distribution}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Latency {
    /// Mean added delay, e.g. `100ms`.
    pub delay: DurationText,
    /// Spread around the delay, at most `delay`; `0s` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<DurationText>,
    /// Correlation with the previous sample, like netem's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<PercentText>,
    /// `uniform` (default) or `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<JitterDistribution>,
}

/// `loss: {percent, correlation}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Loss {
    /// Share of packets dropped, 0-100%.
    pub percent: PercentText,
    /// Correlation with the previous decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<PercentText>,
}

/// `bandwidth: {rate}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bandwidth {
    /// The cap, e.g. `1Mbit/s`.
    pub rate: BandwidthText,
}

/// `cpu: {load, workers}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuFault {
    /// Load per worker, e.g. `80%`.
    pub load: PercentText,
    /// Number of burner threads; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

/// `memory: {size}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryFault {
    /// Bytes allocated and touched, e.g. `256MiB`.
    pub size: ByteSizeText,
}

/// `process: {signal}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessFault {
    /// `SIGKILL`, `SIGTERM` or `SIGSTOP` (continued when the fault ends).
    pub signal: Signal,
}

/// `container: {action}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerFault {
    /// `kill`, `pause` (unpaused when the fault ends) or `restart`.
    pub action: ContainerAction,
}

/// `http: {abort, delay, paths, methods}`; at least one of `abort` and `delay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFault {
    /// Answer some requests with an error status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<HttpAbort>,
    /// Delay some requests.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAbort {
    /// Status code answered, 400-599.
    pub status: u16,
    /// Share of matching requests aborted.
    pub percent: PercentText,
}

/// `delay: {delay, jitter, percent}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDelay {
    /// Added delay.
    pub delay: DurationText,
    /// Uniform spread around the delay, at most `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<DurationText>,
    /// Share of matching requests delayed; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<PercentText>,
}

/// The SLO kinds shared by `slos[]` and `abort[]`: exactly one of `errorRate`,
/// `latency`, `throughput` or `promql` (with `max` and/or `min`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Slo {
    /// Unique within the experiment; referenced by `steadyState.slos`.
    pub name: String,
    /// Evaluation window for rates and quantiles; `10s` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DurationText>,
    /// `server` (default: the services' metrics) or `client` (the load generator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SloSource>,
    /// Share of failed requests stays at or below `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRate>,
    /// A latency quantile stays at or below `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySlo>,
    /// Successful requests per second stay at or above `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// A PromQL expression (needs a Prometheus server), bounded by `max` and/or `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<String>,
    /// Upper bound for `promql`, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Lower bound for `promql`, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// `spec.abort[]`: the run stops when this condition is violated for `for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortCondition {
    /// How long the condition must be violated before the run aborts.
    #[serde(rename = "for")]
    pub for_duration: DurationText,
    /// Evaluation window; `10s` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DurationText>,
    /// `server` (default) or `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SloSource>,
    /// Share of failed requests above `max` aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRate>,
    /// A latency quantile above `max` aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySlo>,
    /// Throughput below `min` aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// A PromQL expression outside `max`/`min` aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<String>,
    /// Upper bound for `promql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Lower bound for `promql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// `errorRate: {service, max, route}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorRate {
    /// Service whose requests count.
    pub service: String,
    /// Threshold, e.g. `0.5%`.
    pub max: PercentText,
    /// Only this route template, e.g. `/api/orders/:id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// `latency: {service, quantile, max}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencySlo {
    /// Service whose requests count.
    pub service: String,
    /// In (0, 1), e.g. `0.99`.
    pub quantile: f64,
    /// Threshold, e.g. `800ms`.
    pub max: DurationText,
}

/// `throughput: {service, min}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Throughput {
    /// Service whose requests count.
    pub service: String,
    /// Threshold, e.g. `150/s`.
    pub min: RateText,
}

/// `spec.recovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recovery {
    /// After the last fault ends, every SLO must hold again within this time.
    pub within: DurationText,
}
