//! Fault rules as a proxy applies them, their statistics, and the [`ProxyFault`] that
//! adds them to proxies.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faultline_spec::wire::{HistogramBucket, ObservedEffect, ResolvedTarget};
use faultline_spec::{
    Direction, HttpFault, JitterDistribution, NetworkAction, NetworkBackend, NetworkFault, Peer,
};

use super::{Proxy, ProxyRegistry};
use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;

/// First retransmission timeout of emulated loss: Linux's `TCP_RTO_MIN`.
pub const LOSS_RTO: Duration = Duration::from_millis(200);
/// Emulated retransmissions of one chunk stop here (TCP would keep backing off).
pub const LOSS_MAX_RETRIES: u32 = 6;

/// Upper bounds (ms) of the added-delay histogram buckets.
const BUCKETS_MS: [f64; 22] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0,
    150.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// What a rule does to the traffic it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Each chunk is held for a sampled delay, counted from its arrival.
    Latency {
        /// Mean delay.
        delay: Duration,
        /// Spread.
        jitter: Duration,
        /// Normal instead of uniform jitter.
        normal: bool,
        /// Correlation with the previous sample, 0..1.
        correlation: f64,
    },
    /// Each chunk is "lost" with this probability and stalls for TCP retransmission time.
    Loss {
        /// Probability, 0..1.
        probability: f64,
        /// Correlation with the previous decision, 0..1.
        correlation: f64,
    },
    /// Chunks are paced to this many bytes per second.
    Bandwidth {
        /// Bytes per second.
        bytes_per_second: f64,
    },
    /// Connections are reset (RST), existing and new.
    Reset,
    /// Nothing is forwarded; connections are held open.
    Partition,
    /// HTTP aborts and delays on requests (ingress only).
    Http(HttpRule),
}

/// An HTTP fault as the proxy applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRule {
    /// `(status, probability)`.
    pub abort: Option<(u16, f64)>,
    /// `(delay, jitter, probability)`.
    pub delay: Option<(Duration, Duration, f64)>,
    /// Path prefixes; empty matches all.
    pub paths: Vec<String>,
    /// Methods, upper case; empty matches all.
    pub methods: Vec<String>,
}

impl HttpRule {
    /// The rule for an experiment's `http` fault, shared by the local proxies and the
    /// redirect proxy of node targets.
    pub fn from_spec(fault: &HttpFault) -> Result<Self, FaultError> {
        if fault.abort.is_none() && fault.delay.is_none() {
            return Err(FaultError::Invalid(
                "an http fault needs `abort` or `delay`".into(),
            ));
        }
        if let Some(a) = &fault.abort
            && !(100..=599).contains(&a.status)
        {
            return Err(FaultError::Invalid(format!(
                "abort status {} is not an HTTP status",
                a.status
            )));
        }
        Ok(HttpRule {
            abort: fault
                .abort
                .as_ref()
                .map(|a| (a.status, a.percent.fraction())),
            delay: fault.delay.as_ref().map(|d| {
                (
                    d.delay.std(),
                    d.jitter.std().min(d.delay.std()),
                    d.percent.map_or(1.0, |p| p.fraction()),
                )
            }),
            paths: fault.paths.clone(),
            methods: fault
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
        })
    }
}

impl HttpRule {
    /// Whether a request with this method and target (path and query) is affected.
    pub fn matches(&self, method: &str, target: &str) -> bool {
        let path = target.split('?').next().unwrap_or(target);
        let method_ok =
            self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
        let path_ok = self.paths.is_empty()
            || self.paths.iter().any(|p| {
                let prefix = p.strip_suffix('*').unwrap_or(p);
                path.starts_with(prefix)
            });
        method_ok && path_ok
    }
}

/// Counters a rule keeps while it is applied: the evidence of what it did.
#[derive(Debug, Default)]
pub struct Stats {
    delayed: AtomicU64,
    delay_sum_us: AtomicU64,
    delay_max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS_MS.len()],
    stalls: AtomicU64,
    stall_sum_us: AtomicU64,
    paced_bytes: AtomicU64,
    resets: AtomicU64,
    holds: AtomicU64,
    requests: AtomicU64,
    aborted: AtomicU64,
    /// Requests an HTTP rule chose to delay, counted when chosen: one still held when the
    /// rule is removed (its effect read) is released later, and `delayed` misses it.
    requests_delayed: AtomicU64,
}

impl Stats {
    /// Records one measured added delay.
    pub(crate) fn record_delay(&self, added: Duration) {
        let us = added.as_micros() as u64;
        self.delayed.fetch_add(1, Ordering::Relaxed);
        self.delay_sum_us.fetch_add(us, Ordering::Relaxed);
        self.delay_max_us.fetch_max(us, Ordering::Relaxed);
        let ms = us as f64 / 1000.0;
        if let Some(i) = BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_stall(&self, stall: Duration) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
        self.stall_sum_us
            .fetch_add(stall.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_paced(&self, bytes: usize) {
        self.paced_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_hold(&self) {
        self.holds.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_request(&self, aborted: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if aborted {
            self.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that a matching request was chosen to be delayed; its added delay is
    /// recorded when it is released.
    pub(crate) fn record_request_delayed(&self) {
        self.requests_delayed.fetch_add(1, Ordering::Relaxed);
    }

    /// The observed effect of the rule so far.
    pub fn effect(&self, action: &Action) -> ObservedEffect {
        let mut e = ObservedEffect::default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let delayed = get(&self.delayed);
        let mean_ms = if delayed == 0 {
            0.0
        } else {
            get(&self.delay_sum_us) as f64 / delayed as f64 / 1000.0
        };
        let max_ms = get(&self.delay_max_us) as f64 / 1000.0;
        if delayed > 0 {
            let mut cumulative = 0;
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                cumulative += get(&self.buckets[i]);
                e.delay_histogram.push(HistogramBucket {
                    le_ms: *b,
                    count: cumulative,
                });
            }
            e.metrics.insert("delayed_chunks".into(), delayed as f64);
            e.metrics.insert("mean_added_delay_ms".into(), mean_ms);
            e.metrics.insert("max_added_delay_ms".into(), max_ms);
        }
        let m = &mut e.metrics;
        e.summary = match action {
            Action::Latency { .. } => format!(
                "delayed {delayed} chunks, mean added delay {mean_ms:.2} ms, max {max_ms:.2} ms"
            ),
            Action::Loss { .. } => {
                let stalls = get(&self.stalls);
                let secs = get(&self.stall_sum_us) as f64 / 1e6;
                m.insert("stalled_chunks".into(), stalls as f64);
                m.insert("stall_seconds".into(), secs);
                format!("emulated loss stalled {stalls} chunks for {secs:.2} s in total")
            }
            Action::Bandwidth { bytes_per_second } => {
                let bytes = get(&self.paced_bytes);
                m.insert("paced_bytes".into(), bytes as f64);
                m.insert("rate_bytes_per_second".into(), *bytes_per_second);
                format!(
                    "paced {bytes} bytes at {:.0} B/s, mean added delay {mean_ms:.2} ms",
                    bytes_per_second
                )
            }
            Action::Reset => {
                let resets = get(&self.resets);
                m.insert("reset_connections".into(), resets as f64);
                format!("reset {resets} connections")
            }
            Action::Partition => {
                let holds = get(&self.holds);
                m.insert("held_streams".into(), holds as f64);
                format!("held traffic on {holds} connection directions, forwarding nothing")
            }
            Action::Http(_) => {
                let requests = get(&self.requests);
                let aborted = get(&self.aborted);
                let chosen = get(&self.requests_delayed);
                m.insert("matched_requests".into(), requests as f64);
                m.insert("aborted_requests".into(), aborted as f64);
                m.insert("delayed_requests".into(), chosen as f64);
                let held = if chosen > delayed {
                    format!(", {} still held", chosen - delayed)
                } else {
                    String::new()
                };
                format!(
                    "{requests} matching requests: {aborted} aborted, {chosen} delayed (mean {mean_ms:.2} ms{held})"
                )
            }
        };
        e
    }
}

/// One fault as applied to proxies: the action, where it applies, and its counters.
#[derive(Debug)]
pub struct Rule {
    /// Unique per agent; used to remove the rule again.
    pub id: u64,
    /// What it does.
    pub action: Action,
    /// Applies to client -> upstream traffic.
    pub ingress: bool,
    /// Applies to upstream -> client traffic.
    pub egress: bool,
    /// Only connections from these client networks; all when empty.
    pub peers: Vec<(IpAddr, u8)>,
    /// The evidence.
    pub stats: Stats,
}

fn in_cidr(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Rule {
    /// Whether the rule applies to a connection from `peer` in the given direction.
    pub fn applies(&self, ingress: bool, peer: IpAddr) -> bool {
        (if ingress { self.ingress } else { self.egress })
            && (self.peers.is_empty() || self.peers.iter().any(|c| in_cidr(peer, *c)))
    }
}

/// The rules of one proxy at one moment; replaced as a whole when a rule comes or goes.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    /// Rules in the order they were added.
    pub rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    pub(crate) fn with(&self, rule: Arc<Rule>) -> Self {
        let mut rules = self.rules.clone();
        rules.push(rule);
        Self { rules }
    }

    pub(crate) fn without(&self, id: u64) -> Self {
        Self {
            rules: self.rules.iter().filter(|r| r.id != id).cloned().collect(),
        }
    }

    /// Rules that apply to one direction of a connection from `peer`.
    pub fn matching(&self, ingress: bool, peer: IpAddr) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter().filter(move |r| r.applies(ingress, peer))
    }

    /// Whether a reset rule applies to a connection from `peer` (either direction).
    pub fn resets(&self, peer: IpAddr) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| {
            r.action == Action::Reset && (r.applies(true, peer) || r.applies(false, peer))
        })
    }

    /// Whether a partition rule applies to this direction.
    pub fn partition(&self, ingress: bool, peer: IpAddr) -> Option<&Arc<Rule>> {
        self.matching(ingress, peer)
            .find(|r| r.action == Action::Partition)
    }
}

static NEXT_RULE: AtomicU64 = AtomicU64::new(1);

/// A network or HTTP fault applied through the agent's proxies.
#[derive(Debug)]
pub struct ProxyFault {
    registry: ProxyRegistry,
    action: Action,
    ingress: bool,
    egress: bool,
    peers: Vec<(IpAddr, u8)>,
    ports: Vec<u16>,
}

impl ProxyFault {
    /// Builds a network fault; only the `auto` and `proxy` backends are available here.
    pub fn network(fault: &NetworkFault, registry: &ProxyRegistry) -> Result<Self, FaultError> {
        match fault.backend {
            NetworkBackend::Auto | NetworkBackend::Proxy => {}
            other => {
                return Err(FaultError::Unsupported(format!(
                    "network backend `{other:?}` needs the privileged agent; this one has the proxy backend only"
                )));
            }
        }
        let mut peers = Vec::new();
        for p in &fault.peers {
            match p {
                Peer::Cidr { addr, prefix } => peers.push((*addr, *prefix)),
                Peer::Service(s) => {
                    return Err(FaultError::Unsupported(format!(
                        "peer service `{s}`: the proxy backend narrows by proxy, so the controller resolves peers into `target.proxies`"
                    )));
                }
            }
        }
        let action = match &fault.action {
            NetworkAction::Latency(l) => {
                if l.jitter > l.delay {
                    return Err(FaultError::Invalid("jitter must not exceed delay".into()));
                }
                Action::Latency {
                    delay: l.delay.std(),
                    jitter: l.jitter.std(),
                    normal: l.distribution == JitterDistribution::Normal,
                    correlation: l.correlation.map_or(0.0, |c| c.fraction()),
                }
            }
            NetworkAction::Loss(l) => Action::Loss {
                probability: l.percent.fraction(),
                correlation: l.correlation.map_or(0.0, |c| c.fraction()),
            },
            NetworkAction::Bandwidth(b) => Action::Bandwidth {
                bytes_per_second: (b.rate.bits_per_second() as f64 / 8.0).max(1.0),
            },
            NetworkAction::Reset(_) => Action::Reset,
            NetworkAction::Partition(_) => Action::Partition,
        };
        let (ingress, egress) = match fault.direction {
            Direction::Ingress => (true, false),
            Direction::Egress => (false, true),
            Direction::Both => (true, true),
        };
        Ok(Self {
            registry: registry.clone(),
            action,
            ingress,
            egress,
            peers,
            ports: fault.ports.clone(),
        })
    }

    /// Builds an HTTP fault; it acts on requests, i.e. the ingress direction.
    pub fn http(fault: &HttpFault, registry: &ProxyRegistry) -> Result<Self, FaultError> {
        let rule = HttpRule::from_spec(fault)?;
        Ok(Self {
            registry: registry.clone(),
            action: Action::Http(rule),
            ingress: true,
            egress: false,
            peers: Vec::new(),
            ports: Vec::new(),
        })
    }
}

impl ProxyFault {
    /// The target's proxies this fault acts on: every named proxy must exist, narrowed
    /// to those forwarding to `ports` when any are given.
    fn select(&self, target: &ResolvedTarget) -> Result<Vec<Arc<Proxy>>, FaultError> {
        if target.proxies.is_empty() {
            return Err(FaultError::Invalid(format!(
                "target `{}` names no proxies; the unprivileged agent injects network and http faults through its proxies",
                target.name
            )));
        }
        let mut proxies = Vec::new();
        for id in &target.proxies {
            let p = self
                .registry
                .get(id)
                .ok_or_else(|| FaultError::TargetNotFound(format!("no proxy `{id}`")))?;
            if self.ports.is_empty() || self.ports.contains(&p.info.upstream.port()) {
                proxies.push(p);
            }
        }
        if proxies.is_empty() {
            return Err(FaultError::Invalid(format!(
                "none of the target's proxies forwards to ports {:?}",
                self.ports
            )));
        }
        Ok(proxies)
    }
}

/// The rule as installed on the target's proxies; removing it is the revert (also on drop).
#[derive(Debug)]
pub struct ProxyHandle {
    rule: Arc<Rule>,
    proxies: Vec<Arc<Proxy>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("info", &self.info).finish()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        for p in &self.proxies {
            p.remove_rule(self.rule.id);
        }
    }
}

impl Fault for ProxyFault {
    type Handle = ProxyHandle;

    fn backend(&self) -> &'static str {
        "proxy"
    }

    fn revert_record(&self, _: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Ok(RevertRecord::DiesWithAgent)
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        self.select(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<ProxyHandle, FaultError> {
        let proxies = self.select(target)?;
        let rule = Arc::new(Rule {
            id: NEXT_RULE.fetch_add(1, Ordering::Relaxed),
            action: self.action.clone(),
            ingress: self.ingress,
            egress: self.egress,
            peers: self.peers.clone(),
            stats: Stats::default(),
        });
        for p in &proxies {
            p.add_rule(rule.clone());
        }
        Ok(ProxyHandle { rule, proxies })
    }

    fn observe(&self, handle: &ProxyHandle) -> ObservedEffect {
        handle.rule.stats.effect(&handle.rule.action)
    }

    fn revert(&self, handle: ProxyHandle) -> Result<ObservedEffect, FaultError> {
        let effect = self.observe(&handle);
        drop(handle);
        Ok(effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_rules_match_methods_and_path_prefixes() {
        let r = HttpRule {
            abort: None,
            delay: None,
            paths: vec!["/api/orders*".into(), "/charge".into()],
            methods: vec!["POST".into()],
        };
        assert!(r.matches("POST", "/api/orders/1?x=1"));
        assert!(r.matches("post", "/charge"));
        assert!(!r.matches("GET", "/charge"));
        assert!(!r.matches("POST", "/stock/1"));
    }

    #[test]
    fn cidr_peers_narrow_rules() {
        assert!(in_cidr(
            "127.0.0.5".parse().unwrap(),
            ("127.0.0.0".parse().unwrap(), 8)
        ));
        assert!(!in_cidr(
            "10.0.0.5".parse().unwrap(),
            ("127.0.0.0".parse().unwrap(), 8)
        ));
        assert!(in_cidr(
            "::1".parse().unwrap(),
            ("::1".parse().unwrap(), 128)
        ));
        assert!(!in_cidr(
            "::1".parse().unwrap(),
            ("127.0.0.1".parse().unwrap(), 32)
        ));
    }

    #[test]
    fn histogram_is_cumulative_and_mean_is_measured() {
        let s = Stats::default();
        s.record_delay(Duration::from_millis(95));
        s.record_delay(Duration::from_millis(105));
        let e = s.effect(&Action::Partition);
        assert_eq!(e.metrics["mean_added_delay_ms"], 100.0);
        let at = |le: f64| {
            e.delay_histogram
                .iter()
                .find(|b| b.le_ms == le)
                .unwrap()
                .count
        };
        assert_eq!((at(90.0), at(100.0), at(110.0), at(5000.0)), (0, 1, 2, 2));
    }
}
