//! The fleet's RED and resilience metrics, registered under the [`crate::names`] constants.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::DURATION_BUCKETS;
use crate::labels::{LabelValue, code_label, method_label};
use crate::names::{self, MetricDef};

/// How an upstream call ended. A bounded label set: never put error messages in labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientOutcome {
    /// A response below 500 arrived in time.
    Success,
    /// The upstream answered 5xx.
    ServerError,
    /// The call ran out of its time budget.
    Timeout,
    /// No connection could be made or it broke mid-call.
    ConnectError,
    /// The breaker was open, so no call was made.
    ShortCircuit,
    /// A bulkhead or rate limit refused the call locally.
    Rejected,
}

impl ClientOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [ClientOutcome; 6] = [
        ClientOutcome::Success,
        ClientOutcome::ServerError,
        ClientOutcome::Timeout,
        ClientOutcome::ConnectError,
        ClientOutcome::ShortCircuit,
        ClientOutcome::Rejected,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientOutcome::Success => "success",
            ClientOutcome::ServerError => "server_error",
            ClientOutcome::Timeout => "timeout",
            ClientOutcome::ConnectError => "connect_error",
            ClientOutcome::ShortCircuit => "short_circuit",
            ClientOutcome::Rejected => "rejected",
        }
    }
}

/// The numeric values of the `breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerStateValue {
    /// Calls flow (gauge 0).
    Closed,
    /// Probes are admitted (gauge 1).
    HalfOpen,
    /// Calls are short-circuited (gauge 2).
    Open,
}

impl BreakerStateValue {
    /// The gauge value.
    pub fn gauge_value(self) -> i64 {
        match self {
            BreakerStateValue::Closed => 0,
            BreakerStateValue::HalfOpen => 1,
            BreakerStateValue::Open => 2,
        }
    }

    /// The `to` label value of `breaker_transitions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerStateValue::Closed => "closed",
            BreakerStateValue::HalfOpen => "half_open",
            BreakerStateValue::Open => "open",
        }
    }
}

impl EncodeLabelValue for BreakerStateValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerRequestLabels {
    service: LabelValue,
    route: LabelValue,
    method: LabelValue,
    code: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerDurationLabels {
    service: LabelValue,
    route: LabelValue,
    method: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientRequestLabels {
    service: LabelValue,
    upstream: LabelValue,
    outcome: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    service: LabelValue,
    upstream: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    service: LabelValue,
    upstream: LabelValue,
    to: BreakerStateValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    service: LabelValue,
    action: DeadlineAction,
}

/// What a service did with a request that arrived after its caller's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadlineAction {
    /// Answered 504 without doing the work.
    Refused,
    /// Did the work anyway, for a caller that had already given up.
    Served,
}

impl DeadlineAction {
    /// Both actions, in label order.
    pub const ALL: [DeadlineAction; 2] = [DeadlineAction::Refused, DeadlineAction::Served];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineAction::Refused => "refused",
            DeadlineAction::Served => "served",
        }
    }
}

impl EncodeLabelValue for DeadlineAction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS.iter().copied())
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One service's metrics. Cheap to clone (every family is shared); record from any
/// thread. The `service` label is fixed at construction, so a service cannot
/// mislabel its own series.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    service: LabelValue,
    server_requests: Family<ServerRequestLabels, Counter>,
    server_duration: HistogramFamily<ServerDurationLabels>,
    client_requests: Family<ClientRequestLabels, Counter>,
    client_duration: HistogramFamily<UpstreamLabels>,
    breaker_state: Family<UpstreamLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    retries: Family<UpstreamLabels, Counter>,
    degradation: Family<ServiceLabels, Gauge>,
    double_charges: Family<ServiceLabels, Counter>,
    deadline_exceeded: Family<ActionLabels, Counter>,
    queue_depth: Family<ServiceLabels, Gauge>,
    delivery_lag: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
}

fn register(
    registry: &mut Registry,
    def: &MetricDef,
    metric: impl prometheus_client::registry::Metric,
) {
    registry.register(def.registration_name(), def.help, metric);
}

impl ServiceMetrics {
    /// Creates the fleet families for `service` and registers them in `registry`.
    /// Register once per registry: registering twice exposes duplicate families.
    pub fn register(service: &str, registry: &mut Registry) -> Self {
        let metrics = ServiceMetrics {
            service: LabelValue::new(service),
            server_requests: Family::default(),
            server_duration: Family::new_with_constructor(duration_histogram),
            client_requests: Family::default(),
            client_duration: Family::new_with_constructor(duration_histogram),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            retries: Family::default(),
            degradation: Family::default(),
            double_charges: Family::default(),
            deadline_exceeded: Family::default(),
            queue_depth: Family::default(),
            delivery_lag: Family::default(),
        };
        let defs = names::FLEET;
        register(registry, &defs[0], metrics.server_requests.clone());
        register(registry, &defs[1], metrics.server_duration.clone());
        register(registry, &defs[2], metrics.client_requests.clone());
        register(registry, &defs[3], metrics.client_duration.clone());
        register(registry, &defs[4], metrics.breaker_state.clone());
        register(registry, &defs[5], metrics.breaker_transitions.clone());
        register(registry, &defs[6], metrics.retries.clone());
        register(registry, &defs[7], metrics.degradation.clone());
        register(registry, &defs[8], metrics.double_charges.clone());
        register(registry, &defs[9], metrics.deadline_exceeded.clone());
        register(registry, &defs[10], metrics.queue_depth.clone());
        register(registry, &defs[11], metrics.delivery_lag.clone());
        // The degradation gauge and the late-request counters exist from the start, so
        // "level 0" and "none" are samples, not gaps.
        metrics.set_degradation_level(0);
        for action in DeadlineAction::ALL {
            drop(metrics.deadline_exceeded.get_or_create(&ActionLabels {
                service: metrics.service.clone(),
                action,
            }));
        }
        metrics
    }

    /// The sanitized service label.
    pub fn service(&self) -> &LabelValue {
        &self.service
    }

    /// Records one answered request. `route` is the router template (`/api/orders/{id}`
    /// or `/api/orders/:id`), never the raw path; unmatched requests should pass a
    /// fixed template such as `unmatched`.
    pub fn observe_server_request(&self, route: &str, method: &str, code: u16, elapsed: Duration) {
        let route = LabelValue::route(route);
        let method = LabelValue::from_static(method_label(method));
        self.server_requests
            .get_or_create(&ServerRequestLabels {
                service: self.service.clone(),
                route: route.clone(),
                method: method.clone(),
                code: code_label(code),
            })
            .inc();
        self.server_duration
            .get_or_create(&ServerDurationLabels {
                service: self.service.clone(),
                route,
                method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one call attempt to `upstream` and how it ended. Short-circuited and
    /// rejected calls have no duration worth observing; pass `None`.
    pub fn observe_client_request(
        &self,
        upstream: &str,
        outcome: ClientOutcome,
        elapsed: Option<Duration>,
    ) {
        let upstream = LabelValue::new(upstream);
        self.client_requests
            .get_or_create(&ClientRequestLabels {
                service: self.service.clone(),
                upstream: upstream.clone(),
                outcome: LabelValue::from_static(outcome.as_str()),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.client_duration
                .get_or_create(&UpstreamLabels {
                    service: self.service.clone(),
                    upstream,
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Sets the breaker gauge for `upstream` and counts the transition when the
    /// state changed.
    pub fn breaker_transition(&self, upstream: &str, to: BreakerStateValue) {
        let labels = UpstreamLabels {
            service: self.service.clone(),
            upstream: LabelValue::new(upstream),
        };
        let previous = self
            .breaker_state
            .get_or_create(&labels)
            .set(to.gauge_value());
        if previous != to.gauge_value() {
            self.breaker_transitions
                .get_or_create(&TransitionLabels {
                    service: labels.service,
                    upstream: labels.upstream,
                    to,
                })
                .inc();
        }
    }

    /// Declares the calls to an upstream: one request counter per outcome, at 0, so a
    /// rate or increase over them counts the first events too. A series that is born
    /// with its first event is first scraped already above 0, and PromQL's `increase`
    /// counts only from that first sample: the burst of timeouts that opens an outage
    /// was lost that way (up to a scrape interval's worth, ~80 calls at 100/s).
    pub fn register_upstream(&self, upstream: &str) {
        for outcome in ClientOutcome::ALL {
            drop(self.client_requests.get_or_create(&ClientRequestLabels {
                service: self.service.clone(),
                upstream: LabelValue::new(upstream),
                outcome: LabelValue::from_static(outcome.as_str()),
            }));
        }
    }

    /// Declares an upstream's breaker as closed, so its gauge is exposed before the
    /// first transition.
    pub fn register_breaker(&self, upstream: &str) {
        drop(self.breaker_state.get_or_create(&UpstreamLabels {
            service: self.service.clone(),
            upstream: LabelValue::new(upstream),
        }));
    }

    /// Counts one retry attempt to `upstream`.
    pub fn retry(&self, upstream: &str) {
        self.retries
            .get_or_create(&UpstreamLabels {
                service: self.service.clone(),
                upstream: LabelValue::new(upstream),
            })
            .inc();
    }

    /// Counts `n` charges accepted for orders that were already charged. A service that
    /// charges calls it with 0 at start, so "none" is a sample, not a gap.
    pub fn double_charges(&self, n: u64) {
        self.double_charges
            .get_or_create(&ServiceLabels {
                service: self.service.clone(),
            })
            .inc_by(n);
    }

    /// Declares the notifications queue empty, so its gauges are samples from the start.
    /// Only a service with a notifications queue calls it.
    pub fn declare_notification_queue(&self) {
        self.queue_depth
            .get_or_create(&self.service_labels())
            .set(0);
        self.delivery_lag
            .get_or_create(&self.service_labels())
            .set(0.0);
    }

    /// One notification accepted into the queue.
    pub fn notification_queued(&self) {
        self.queue_depth.get_or_create(&self.service_labels()).inc();
    }

    /// The notification last counted as queued did not fit after all (the queue was full).
    pub fn notification_refused(&self) {
        self.queue_depth.get_or_create(&self.service_labels()).dec();
    }

    /// One notification handed to the provider after waiting `lag` in the queue.
    pub fn notification_delivered(&self, lag: Duration) {
        self.queue_depth.get_or_create(&self.service_labels()).dec();
        self.delivery_lag
            .get_or_create(&self.service_labels())
            .set(lag.as_secs_f64());
    }

    fn service_labels(&self) -> ServiceLabels {
        ServiceLabels {
            service: self.service.clone(),
        }
    }

    /// Counts one request that arrived after its caller's deadline, and what was done with it.
    pub fn deadline_exceeded(&self, action: DeadlineAction) {
        self.deadline_exceeded
            .get_or_create(&ActionLabels {
                service: self.service.clone(),
                action,
            })
            .inc();
    }

    /// Sets the service's degradation level (0 normal, 1–3 as in DESIGN.md §5).
    pub fn set_degradation_level(&self, level: u8) {
        self.degradation
            .get_or_create(&ServiceLabels {
                service: self.service.clone(),
            })
            .set(i64::from(level));
    }
}
