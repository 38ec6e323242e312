//! Service configuration from `FL_*` environment variables, with clear errors.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `FL_BIND` | listen address | `127.0.0.1:0` |
//! | `FL_UPSTREAM_<SERVICE>` | comma-separated `host:port` list of an upstream | required for each upstream |
//! | `FL_RESILIENCE` | `on` or `off`: every resilience policy | `on` |
//! | `FL_DISABLE` | comma-separated [`Policy`] names to remove, one by one | none |
//! | `FL_LOG_FORMAT` | `pretty` or `json` | `pretty` |
//! | `FL_GATEWAY_RATE_LIMIT` | gateway requests per second before 429 | `800` |
//! | `FL_GATEWAY_BUDGET_MS` | gateway's whole-request timeout budget | `2000` |
//! | `FL_ATTEMPT_TIMEOUT_MS` | orders' per-attempt timeout to inventory and payments | `500` |
//! | `FL_NOTIFY_TIMEOUT_MS` | orders' timeout for the non-critical notifications call | `250` |
//! | `FL_BREAKER_OPEN_MS` | how long a breaker stays open before a probe | `2000` |
//! | `FL_PAYMENTS_WORK_ROUNDS` | hashing rounds per charge (~0.5 ms of CPU in a release build) | `48000` |
//! | `FL_INVENTORY_STOCK` | initial stock, `SKU=qty,...` | `A-1=1000000,B-2=1000000,C-3=100` |
//! | `FL_NOTIFY_QUEUE` | notifications queue capacity | `1024` |
//! | `FL_NOTIFY_SEND_RATE` | notifications the outbound provider accepts per second | `500` |

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::Service;

/// Hashing rounds per charge by default: about 0.5 ms of CPU in a release build on a
/// 2020s x86-64 core (measured 41 µs per 4000 rounds).
pub const DEFAULT_PAYMENTS_WORK_ROUNDS: u32 = 48_000;

/// The gateway's rate limit by default, in requests per second: about 40% of what the
/// fleet serves on the 2-core reference machine (1,960 placements/s closed-loop,
/// `scripts/bench-fleet.sh`), so a surge is refused at the door before it queues inside.
/// The rest of the machine answers the refused share and runs the load (see
/// docs/verdict-power.md for why not half).
pub const DEFAULT_GATEWAY_RATE_LIMIT: u32 = 800;

/// Notifications the outbound provider accepts per second by default: providers cap a
/// sender's rate, and half the gateway's limit leaves the queue to absorb the difference.
pub const DEFAULT_NOTIFY_SEND_RATE: u32 = 500;

/// A configuration value that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{var} is not set: {hint}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// What it should contain.
        hint: &'static str,
    },
    /// `FL_DISABLE` names a policy the fleet does not have.
    #[error(
        "FL_DISABLE names an unknown policy {name:?}: expected a comma-separated list of {}, or all",
        policy_names()
    )]
    UnknownPolicy {
        /// The name found.
        name: String,
    },
    /// A variable does not parse.
    #[error("{var}={value:?} is invalid: {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// One resilience policy of the fleet, which `FL_DISABLE` removes on its own (and
/// `FL_RESILIENCE=off` removes with all the others): the fragile variants a gate must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// orders retries a failed reservation or charge (up to 2 retries).
    Retries,
    /// The retry budget (20% of requests + 5/s) caps those retries.
    RetryBudget,
    /// orders' calls to inventory and payments time out per attempt (`FL_ATTEMPT_TIMEOUT_MS`).
    AttemptTimeout,
    /// Every service refuses a request that arrives after its caller's deadline (the
    /// gateway's budget, propagated in `x-request-deadline`), and orders' calls to inventory
    /// and payments end at that deadline or after 3 attempts' worth, whichever is first.
    Deadline,
    /// orders' call to notifications times out (`FL_NOTIFY_TIMEOUT_MS`).
    NotifyTimeout,
    /// The gateway's timeout budget for the whole orders call (`FL_GATEWAY_BUDGET_MS`).
    GatewayBudget,
    /// The gateway's breaker on orders.
    BreakerOrders,
    /// orders' breaker on inventory.
    BreakerInventory,
    /// orders' breaker on payments.
    BreakerPayments,
    /// orders' breaker on notifications.
    BreakerNotifications,
    /// A failed notification is logged and counted; the order still succeeds.
    NotifyNonCritical,
    /// orders sheds notifications at degradation L2 and above.
    Shedding,
    /// The gateway answers a failed order lookup from its cache at L1 and above.
    CacheFallback,
    /// The gateway's rate limit (`FL_GATEWAY_RATE_LIMIT`, 429 above it).
    RateLimit,
    /// A retried reservation or charge carries the order's idempotency key; without it every
    /// attempt carries a new key, so a retry after a lost answer charges twice.
    Idempotency,
    /// On SIGTERM a service stops accepting and lets in-flight requests finish.
    Drain,
    /// The notifications queue is bounded (`FL_NOTIFY_QUEUE`, 503 when full).
    NotifyQueueBound,
    /// Several endpoints of an upstream are balanced by p2c over peak-EWMA with passive
    /// ejection, not round robin, and a refused connection moves the attempt to another.
    Balancing,
}

impl Policy {
    /// Every policy, in the order `docs/fleet.md` lists them.
    pub const ALL: [Policy; 18] = [
        Policy::Retries,
        Policy::RetryBudget,
        Policy::AttemptTimeout,
        Policy::Deadline,
        Policy::NotifyTimeout,
        Policy::GatewayBudget,
        Policy::BreakerOrders,
        Policy::BreakerInventory,
        Policy::BreakerPayments,
        Policy::BreakerNotifications,
        Policy::NotifyNonCritical,
        Policy::Shedding,
        Policy::CacheFallback,
        Policy::RateLimit,
        Policy::Idempotency,
        Policy::Drain,
        Policy::NotifyQueueBound,
        Policy::Balancing,
    ];

    /// The name `FL_DISABLE` uses.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Retries => "retries",
            Policy::RetryBudget => "retry-budget",
            Policy::AttemptTimeout => "attempt-timeout",
            Policy::Deadline => "deadline",
            Policy::NotifyTimeout => "notify-timeout",
            Policy::GatewayBudget => "gateway-budget",
            Policy::BreakerOrders => "breaker-orders",
            Policy::BreakerInventory => "breaker-inventory",
            Policy::BreakerPayments => "breaker-payments",
            Policy::BreakerNotifications => "breaker-notifications",
            Policy::NotifyNonCritical => "notify-non-critical",
            Policy::Shedding => "shedding",
            Policy::CacheFallback => "cache-fallback",
            Policy::RateLimit => "rate-limit",
            Policy::Idempotency => "idempotency",
            Policy::Drain => "drain",
            Policy::NotifyQueueBound => "notify-queue-bound",
            Policy::Balancing => "balancing",
        }
    }

    /// The breaker policy of the edge to `upstream`.
    pub fn breaker_on(upstream: Service) -> Option<Policy> {
        match upstream {
            Service::Orders => Some(Policy::BreakerOrders),
            Service::Inventory => Some(Policy::BreakerInventory),
            Service::Payments => Some(Policy::BreakerPayments),
            Service::Notifications => Some(Policy::BreakerNotifications),
            Service::Gateway => None,
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The policies a fleet runs without: what `FL_RESILIENCE` and `FL_DISABLE` say together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disabled(BTreeSet<Policy>);

impl Disabled {
    /// Every policy removed (`FL_RESILIENCE=off`).
    pub fn all() -> Self {
        Disabled(Policy::ALL.into_iter().collect())
    }

    /// Parses an `FL_DISABLE` value: policy names separated by commas (`all` for every one).
    /// An unknown name is an error that lists the valid ones.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let mut out = BTreeSet::new();
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                return Ok(Disabled::all());
            }
            let policy = Policy::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| ConfigError::UnknownPolicy {
                    name: name.to_string(),
                })?;
            out.insert(policy);
        }
        Ok(Disabled(out))
    }

    /// Whether `policy` is removed.
    pub fn has(&self, policy: Policy) -> bool {
        self.0.contains(&policy)
    }

    /// Whether `policy` is in force.
    pub fn keeps(&self, policy: Policy) -> bool {
        !self.has(policy)
    }

    /// Whether no policy is removed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The removed policies, in [`Policy::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Policy> + '_ {
        self.0.iter().copied()
    }
}

impl std::fmt::Display for Disabled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() == Policy::ALL.len() {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.iter().map(Policy::name).collect();
        f.write_str(&names.join(","))
    }
}

/// The valid `FL_DISABLE` names, comma-separated, for error messages and help.
pub fn policy_names() -> String {
    let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    names.join(", ")
}

/// Everything a service reads from its environment, checked.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Which service this process is.
    pub service: Service,
    /// Listen address.
    pub bind: SocketAddr,
    /// Endpoints of each upstream (one or more `host:port`).
    pub upstreams: BTreeMap<Service, Vec<String>>,
    /// The policies this service runs without: every one with `FL_RESILIENCE=off`, those
    /// `FL_DISABLE` names otherwise.
    pub disabled: Disabled,
    /// Gateway rate limit in requests per second.
    pub rate_limit: u32,
    /// Gateway timeout budget for a whole request.
    pub gateway_budget: Duration,
    /// Per-attempt timeout for inventory and payments calls.
    pub attempt_timeout: Duration,
    /// Timeout for the non-critical notifications call.
    pub notify_timeout: Duration,
    /// Breaker open wait before the first probe.
    pub breaker_open: Duration,
    /// Hashing rounds per payment.
    pub payments_work_rounds: u32,
    /// Initial stock per SKU.
    pub stock: BTreeMap<String, u64>,
    /// Notifications queue capacity.
    pub notify_queue: usize,
    /// Notifications the outbound provider accepts per second.
    pub notify_send_rate: u32,
}

impl ServiceConfig {
    /// The breaker open wait on the edge to `upstream`, or `None` when its breaker is removed.
    pub fn breaker_on(&self, upstream: Service) -> Option<Duration> {
        Policy::breaker_on(upstream)
            .filter(|p| self.disabled.keeps(*p))
            .map(|_| self.breaker_open)
    }

    /// Reads the configuration of `service` from the process environment.
    pub fn from_env(service: Service) -> Result<Self, ConfigError> {
        Self::from_lookup(service, |k| std::env::var(k).ok())
    }

    /// Reads the configuration of `service` through `get` (the environment, or a map in tests).
    pub fn from_lookup(
        service: Service,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let bind = match get("FL_BIND") {
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                var: "FL_BIND",
                value: v,
                expected: "an IP:port such as 127.0.0.1:8080 or 0.0.0.0:8080",
            })?,
        };
        let mut upstreams = BTreeMap::new();
        for edge in service.upstreams() {
            let var = edge.to.upstream_env();
            let raw = get(var).ok_or(ConfigError::Missing {
                var,
                hint: "a comma-separated list of host:port",
            })?;
            let endpoints: Vec<String> = raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if endpoints.is_empty() || endpoints.iter().any(|e| !valid_host_port(e)) {
                return Err(ConfigError::Invalid {
                    var,
                    value: raw,
                    expected: "a comma-separated list of host:port",
                });
            }
            upstreams.insert(edge.to, endpoints);
        }
        let disabled = disabled(&get)?;
        Ok(ServiceConfig {
            service,
            bind,
            upstreams,
            disabled,
            rate_limit: number(&get, "FL_GATEWAY_RATE_LIMIT", DEFAULT_GATEWAY_RATE_LIMIT)?,
            gateway_budget: millis(&get, "FL_GATEWAY_BUDGET_MS", 2000)?,
            attempt_timeout: millis(&get, "FL_ATTEMPT_TIMEOUT_MS", 500)?,
            notify_timeout: millis(&get, "FL_NOTIFY_TIMEOUT_MS", 250)?,
            breaker_open: millis(&get, "FL_BREAKER_OPEN_MS", 2000)?,
            payments_work_rounds: number(
                &get,
                "FL_PAYMENTS_WORK_ROUNDS",
                DEFAULT_PAYMENTS_WORK_ROUNDS,
            )?,
            stock: stock(&get)?,
            notify_queue: number::<u32>(&get, "FL_NOTIFY_QUEUE", 1024)? as usize,
            notify_send_rate: number(&get, "FL_NOTIFY_SEND_RATE", DEFAULT_NOTIFY_SEND_RATE)?,
        })
    }
}

/// Checks the `FL_*` settings every service shares, as a fleet would be started with
/// `overrides` on top of this process's environment, so a bad value (an unknown policy name
/// in `FL_DISABLE`, say) is refused before anything starts.
pub fn check_overrides(overrides: &[(String, String)]) -> Result<(), ConfigError> {
    // payments is a leaf: it needs no upstream addresses, and reads every shared variable.
    ServiceConfig::from_lookup(Service::Payments, |k| {
        overrides
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    })
    .map(drop)
}

/// `FL_RESILIENCE=off` removes every policy; otherwise `FL_DISABLE` names those removed.
fn disabled(get: &impl Fn(&str) -> Option<String>) -> Result<Disabled, ConfigError> {
    let named = get("FL_DISABLE").map_or(Ok(Disabled::default()), |v| Disabled::parse(&v))?;
    match get("FL_RESILIENCE").as_deref() {
        None | Some("on" | "true" | "1") => Ok(named),
        Some("off" | "false" | "0") => Ok(Disabled::all()),
        Some(other) => Err(ConfigError::Invalid {
            var: "FL_RESILIENCE",
            value: other.to_string(),
            expected: "on or off",
        }),
    }
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

fn number<T: std::str::FromStr + PartialOrd + Default>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(ConfigError::Invalid {
                var,
                value: v,
                expected: "a positive integer",
            }),
        },
    }
}

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    number(get, var, default).map(Duration::from_millis)
}

fn stock(get: &impl Fn(&str) -> Option<String>) -> Result<BTreeMap<String, u64>, ConfigError> {
    let raw =
        get("FL_INVENTORY_STOCK").unwrap_or_else(|| "A-1=1000000,B-2=1000000,C-3=100".to_string());
    let invalid = || ConfigError::Invalid {
        var: "FL_INVENTORY_STOCK",
        value: raw.clone(),
        expected: "SKU=quantity pairs separated by commas, e.g. A-1=100,B-2=5",
    };
    let mut out = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (sku, qty) = pair.split_once('=').ok_or_else(invalid)?;
        let qty = qty.trim().parse::<u64>().map_err(|_| invalid())?;
        if sku.trim().is_empty() {
            return Err(invalid());
        }
        out.insert(sku.trim().to_string(), qty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn leaf_service_needs_no_variables() {
        let c = ServiceConfig::from_lookup(Service::Payments, lookup(&[])).unwrap();
        assert!(c.disabled.is_empty());
        assert_eq!(c.bind.port(), 0);
    }

    #[test]
    fn missing_upstream_is_named_in_the_error() {
        let err = ServiceConfig::from_lookup(Service::Gateway, lookup(&[])).unwrap_err();
        assert_eq!(
            err.to_string().split(' ').next(),
            Some("FL_UPSTREAM_ORDERS")
        );
    }

    #[test]
    fn several_endpoints_are_split_and_bad_ones_rejected() {
        let c = ServiceConfig::from_lookup(
            Service::Gateway,
            lookup(&[("FL_UPSTREAM_ORDERS", "127.0.0.1:1, orders:8080")]),
        )
        .unwrap();
        assert_eq!(c.upstreams[&Service::Orders].len(), 2);
        let err = ServiceConfig::from_lookup(
            Service::Gateway,
            lookup(&[("FL_UPSTREAM_ORDERS", "127.0.0.1")]),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                var: "FL_UPSTREAM_ORDERS",
                ..
            }
        ));
    }

    #[test]
    fn resilience_switch_and_numbers_are_validated() {
        let off =
            ServiceConfig::from_lookup(Service::Payments, lookup(&[("FL_RESILIENCE", "off")]))
                .unwrap();
        assert_eq!(off.disabled, Disabled::all());
        for (var, value) in [
            ("FL_RESILIENCE", "maybe"),
            ("FL_BIND", "localhost"),
            ("FL_ATTEMPT_TIMEOUT_MS", "0"),
            ("FL_PAYMENTS_WORK_ROUNDS", "-3"),
            ("FL_INVENTORY_STOCK", "A-1"),
            ("FL_DISABLE", "retries,breakers"),
        ] {
            let err =
                ServiceConfig::from_lookup(Service::Payments, lookup(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn each_policy_is_removed_by_its_name_alone() {
        for policy in Policy::ALL {
            let c = ServiceConfig::from_lookup(
                Service::Payments,
                lookup(&[("FL_DISABLE", policy.name())]),
            )
            .unwrap();
            assert!(c.disabled.has(policy), "{policy}");
            assert_eq!(c.disabled.iter().count(), 1, "{policy}");
            assert_eq!(c.disabled.to_string(), policy.name());
        }
        let two = Disabled::parse(" retries , drain,").unwrap();
        assert_eq!(
            two.iter().collect::<Vec<_>>(),
            [Policy::Retries, Policy::Drain]
        );
        assert_eq!(Disabled::parse("all").unwrap(), Disabled::all());
        assert_eq!(Disabled::all().to_string(), "all");
    }

    #[test]
    fn an_unknown_policy_is_an_error_listing_the_valid_ones() {
        let err = Disabled::parse("retries,breaker").unwrap_err().to_string();
        assert!(err.contains("\"breaker\""), "{err}");
        for policy in Policy::ALL {
            assert!(err.contains(policy.name()), "{err} lacks {policy}");
        }
    }
}
