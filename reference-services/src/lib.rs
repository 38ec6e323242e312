//! `faultline-fleet`: the reference fleet Faultline experiments run against, and the local
//! launcher that starts it.
//!
//! Five services (DESIGN.md §5) built only on `faultline-http`, `faultline-resilience` and
//! `faultline-telemetry`:
//!
//! | service | API | upstreams |
//! |---|---|---|
//! | gateway | `POST /api/orders`, `GET /api/orders/{id}` | orders |
//! | orders | `POST /orders`, `GET /orders/{id}` | inventory, payments (critical), notifications (non-critical) |
//! | inventory | `POST /reserve`, `GET /stock/{sku}` | none |
//! | payments | `POST /charge` | none |
//! | notifications | `POST /notify` | none |
//!
//! Every service serves `/metrics`, `/healthz` and `/readyz`, shuts down gracefully on SIGTERM
//! and is configured from `FL_*` environment variables ([`config`]). `FL_RESILIENCE=off` turns
//! every resilience policy off (see `docs/fleet.md`).
//!
//! [`launcher::Fleet`] starts the fleet as child processes of the `chaos` binary
//! (`chaos fleet serve <service>`), lets the caller route every upstream edge through an
//! address of its choice (a fault-injecting proxy), supervises restarts and stops everything
//! cleanly; [`serve::run`] is what each child runs.

pub mod config;
pub mod deadline;
pub mod launcher;
pub mod observe;
pub mod serve;
pub mod services;
pub mod upstream;

use std::fmt;
use std::str::FromStr;

pub use config::{ConfigError, ServiceConfig};
pub use launcher::{
    ChildLogs, Fleet, LaunchError, LaunchOptions, Replica, RestartPolicy, replica_name,
};

/// One of the five reference services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Public entry point: rate limit and timeout budget in front of orders.
    Gateway,
    /// Order workflow: reserves stock, charges, notifies.
    Orders,
    /// Stock levels and idempotent reservations.
    Inventory,
    /// Idempotent charges with real CPU work per request.
    Payments,
    /// Accepts notifications into a bounded queue.
    Notifications,
}

impl Service {
    /// Every service, in start order: leaves first, so each dependant starts after its
    /// upstreams.
    pub const START_ORDER: [Service; 5] = [
        Service::Inventory,
        Service::Payments,
        Service::Notifications,
        Service::Orders,
        Service::Gateway,
    ];

    /// The service's name as used on the command line, in metric labels and in experiment
    /// targets (`{service: payments}`).
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Orders => "orders",
            Service::Inventory => "inventory",
            Service::Payments => "payments",
            Service::Notifications => "notifications",
        }
    }

    /// The upstream edges this service calls, in a fixed order.
    pub fn upstreams(self) -> &'static [Edge] {
        match self {
            Service::Gateway => &EDGES[0..1],
            Service::Orders => &EDGES[1..4],
            Service::Inventory | Service::Payments | Service::Notifications => &[],
        }
    }

    /// The environment variable through which a dependant receives this service's
    /// address(es): a comma-separated list of `host:port`.
    pub fn upstream_env(self) -> &'static str {
        match self {
            Service::Gateway => "FL_UPSTREAM_GATEWAY",
            Service::Orders => "FL_UPSTREAM_ORDERS",
            Service::Inventory => "FL_UPSTREAM_INVENTORY",
            Service::Payments => "FL_UPSTREAM_PAYMENTS",
            Service::Notifications => "FL_UPSTREAM_NOTIFICATIONS",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service `{0}`: expected gateway, orders, inventory, payments or notifications")]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gateway" => Ok(Service::Gateway),
            "orders" => Ok(Service::Orders),
            "inventory" => Ok(Service::Inventory),
            "payments" => Ok(Service::Payments),
            "notifications" => Ok(Service::Notifications),
            other => Err(UnknownService(other.to_string())),
        }
    }
}

/// A directed call edge: `from` calls `to`. Fault proxies are placed on edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    /// The calling service.
    pub from: Service,
    /// The called service.
    pub to: Service,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.from, self.to)
    }
}

/// Every edge of the fleet, ordered so that an edge's `to` never appears as a `from` of an
/// earlier edge's dependant start: the launcher wires them in this order.
pub const EDGES: [Edge; 4] = [
    Edge {
        from: Service::Gateway,
        to: Service::Orders,
    },
    Edge {
        from: Service::Orders,
        to: Service::Inventory,
    },
    Edge {
        from: Service::Orders,
        to: Service::Payments,
    },
    Edge {
        from: Service::Orders,
        to: Service::Notifications,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_round_trip_and_unknown_names_are_rejected() {
        for s in Service::START_ORDER {
            assert_eq!(s.name().parse::<Service>(), Ok(s));
        }
        let err = "billing".parse::<Service>().unwrap_err();
        assert!(err.to_string().contains("billing"));
    }

    #[test]
    fn start_order_puts_every_upstream_before_its_dependant() {
        for edge in EDGES {
            let pos = |s| Service::START_ORDER.iter().position(|x| *x == s);
            assert!(pos(edge.to) < pos(edge.from), "{edge}");
        }
    }

    #[test]
    fn upstreams_list_exactly_the_edges_from_a_service() {
        for s in Service::START_ORDER {
            let expected: Vec<_> = EDGES.iter().filter(|e| e.from == s).copied().collect();
            assert_eq!(s.upstreams(), expected.as_slice());
        }
    }
}
