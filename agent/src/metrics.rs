//! The agent's Prometheus metrics: active faults, applies, reverts, expiries.
//!
//! Label sets are bounded: the only label is the fault kind (six values).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use faultline_telemetry::names;

/// The `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Fault kind: network, cpu, memory, process, container, http.
    pub kind: String,
}

/// The agent's metric families, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Faults currently applied.
    pub active: Family<KindLabel, Gauge<i64, AtomicI64>>,
    /// Faults applied.
    pub applies: Family<KindLabel, Counter>,
    /// Applies that failed.
    pub apply_failures: Family<KindLabel, Counter>,
    /// Faults reverted on request.
    pub reverts: Family<KindLabel, Counter>,
    /// Faults reverted because their lease ran out.
    pub expiries: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let active = Family::<KindLabel, Gauge<i64, AtomicI64>>::default();
        let applies = Family::<KindLabel, Counter>::default();
        let apply_failures = Family::<KindLabel, Counter>::default();
        let reverts = Family::<KindLabel, Counter>::default();
        let expiries = Family::<KindLabel, Counter>::default();
        let def =
            |name: &str| names::lookup(name).expect("agent metrics are in the telemetry catalog");
        let d = def(names::AGENT_ACTIVE_FAULTS);
        registry.register(d.registration_name(), d.help, active.clone());
        let d = def(names::AGENT_FAULT_APPLIES_TOTAL);
        registry.register(d.registration_name(), d.help, applies.clone());
        let d = def(names::AGENT_FAULT_APPLY_FAILURES_TOTAL);
        registry.register(d.registration_name(), d.help, apply_failures.clone());
        let d = def(names::AGENT_FAULT_REVERTS_TOTAL);
        registry.register(d.registration_name(), d.help, reverts.clone());
        let d = def(names::AGENT_FAULT_EXPIRIES_TOTAL);
        registry.register(d.registration_name(), d.help, expiries.clone());
        Self {
            registry,
            active,
            applies,
            apply_failures,
            reverts,
            expiries,
        }
    }
}

impl Metrics {
    /// The label for a fault kind.
    pub fn kind(kind: &str) -> KindLabel {
        KindLabel { kind: kind.into() }
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        faultline_telemetry::encode(&self.registry).expect("writing to a String cannot fail")
    }
}
