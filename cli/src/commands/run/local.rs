//! The `local` environment: the reference fleet as child processes of this binary, the
//! agent in-process, every upstream edge (and the load generator's edge into its target)
//! wired through one of the agent's proxies, and the embedded scraper. No root, no
//! Docker, no Prometheus.
//!
//! Replicas: X runs `spec.replicas.X` replicas (one by default), each a process with its
//! own address and its own proxy on every edge into it (`orders->inventory-2`); its
//! dependants balance over those proxies. The load's target runs one replica.
//!
//! Target resolution: `{service: X}` is the replicas of X its `mode` selects (all by
//! default; seeded from the fault's name when it gives no seed), with their current PIDs
//! and the proxies that carry their traffic, chosen by the fault:
//! - network faults: `ingress` = proxies of edges INTO the selected replicas (including
//!   `load->X` when the load targets X), `egress` = proxies of edges OUT of X, `both` = both
//!   sets. Every replica of X dials the same proxies, so egress needs all of them selected;
//! - HTTP faults act on requests, so they use the proxies INTO the selected replicas;
//! - CPU, memory and process faults use the PIDs, one placement per selected replica.
//!
//! `{pid: N}` works for CPU, memory and process faults. Containers and pods need the
//! compose or Kubernetes modes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_agent::{Agent, AgentConfig, AgentError};
use faultline_controller::compose::FLEET_PORT;
use faultline_controller::report::RunMode;
use faultline_controller::run::{AgentCallError, AgentHandle, Environment, Placement, RunError};
use faultline_controller::slo::embedded::{EmbeddedScraper, ScrapeTarget};
use faultline_controller::slo::{BoxFuture, SloBackend};
use faultline_fleet::{ChildLogs, EDGES, Fleet, LaunchOptions, Service, replica_name};
use faultline_spec::wire::{Capabilities, FaultRequest, FaultState, ResolvedTarget};
use faultline_spec::{
    Direction, Experiment, Fault, FaultKind, LoadTarget, NetworkBackend, NetworkFault, Peer,
    ServiceTarget, Target,
};
use tokio_util::sync::CancellationToken;

/// The in-process agent behind the runner's agent seam.
struct LocalAgent(Agent);

fn call_error(e: AgentError) -> AgentCallError {
    let (status, code) = e.status();
    if code == "protected" {
        return AgentCallError::Protected {
            agent: "in-process".into(),
            message: e.to_string(),
        };
    }
    if status == 409 {
        return AgentCallError::NotActive {
            agent: "in-process".into(),
            id: e.to_string(),
        };
    }
    if status < 500 {
        AgentCallError::Rejected {
            agent: "in-process".into(),
            message: e.to_string(),
        }
    } else {
        AgentCallError::Failed {
            agent: "in-process".into(),
            message: e.to_string(),
        }
    }
}

impl AgentHandle for LocalAgent {
    fn endpoint(&self) -> String {
        "in-process".into()
    }

    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities, AgentCallError>> {
        Box::pin(async move { Ok(self.0.capabilities()) })
    }

    fn check(&self, request: FaultRequest) -> BoxFuture<'_, Result<String, AgentCallError>> {
        Box::pin(async move {
            self.0
                .check(&request)
                .await
                .map(str::to_string)
                .map_err(call_error)
        })
    }

    fn apply(&self, request: FaultRequest) -> BoxFuture<'_, Result<FaultState, AgentCallError>> {
        Box::pin(async move {
            self.0
                .apply(request)
                .await
                .map(|o| o.state)
                .map_err(call_error)
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), AgentCallError>> {
        Box::pin(async move { self.0.renew(id, ttl.into()).map(drop).map_err(call_error) })
    }

    fn revert<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FaultState>, AgentCallError>> {
        Box::pin(async move { self.0.revert(id).await.map_err(call_error) })
    }
}

/// What `chaos run` needs to start the local environment.
#[derive(Clone, Default)]
pub struct LocalOptions {
    /// Environment overrides for every fleet service (`--set-env`, `FL_RESILIENCE`).
    pub fleet_env: Vec<(String, String)>,
    /// Where the services' logs go (a directory beside the reports).
    pub log_dir: Option<PathBuf>,
    /// Evaluate server-side SLOs on this backend (`--prometheus`) instead of the
    /// embedded scraper.
    pub server_backend: Option<Arc<dyn SloBackend>>,
}

/// The running local environment.
pub struct LocalEnvironment {
    agent: Agent,
    handle: Arc<dyn AgentHandle>,
    fleet: Mutex<Option<Fleet>>,
    shape: Shape,
    addrs: Vec<(Service, SocketAddr)>,
    load_edge: Option<(Service, SocketAddr)>,
    scraper: EmbeddedScraper,
    scraper_stop: CancellationToken,
    server_backend: Option<Arc<dyn SloBackend>>,
}

/// The proxy that carries `from`'s calls to the replica named `to`.
fn proxy_id(from: &str, to: &str) -> String {
    format!("{from}->{to}")
}

/// How many replicas of each fleet service an experiment runs, and their names (the
/// launcher's, [`replica_name`]).
#[derive(Debug, Clone, Default)]
struct Shape(std::collections::BTreeMap<Service, u32>);

impl Shape {
    /// The experiment's `spec.replicas`; names that are not fleet services are left to
    /// [`check`].
    fn of(experiment: &Experiment) -> Shape {
        Shape(
            experiment
                .spec
                .replicas
                .iter()
                .filter_map(|(name, n)| Some((name.parse().ok()?, *n)))
                .collect(),
        )
    }

    fn count(&self, service: Service) -> u32 {
        self.0.get(&service).copied().unwrap_or(1)
    }

    fn names(&self, service: Service) -> Vec<String> {
        let of = self.count(service);
        (1..=of).map(|n| replica_name(service, n, of)).collect()
    }

    /// The replicas of `target` its mode selects for the fault named `fault`.
    fn select(&self, target: &ServiceTarget, service: Service, fault: &str) -> Vec<String> {
        target.select(&self.names(service), String::as_str, fault)
    }
}

/// The fleet service the load targets, if it targets one.
fn load_service(experiment: &Experiment) -> Option<Service> {
    match experiment.spec.load.as_ref().map(|l| &l.target) {
        Some(LoadTarget::Service(s)) => s.parse().ok(),
        _ => None,
    }
}

/// The proxies a network fault on `service` acts on in local mode, where every edge of
/// the fleet (and the load's edge into its target) runs through one proxy:
/// - `direction` picks the edges into `service` (ingress), out of it (egress) or both;
/// - `peers:` keeps the edges whose other end is one of the named services;
/// - `ports:` may name only [`FLEET_PORT`], the port every fleet service listens on in
///   every mode (local mode maps it to each service's loopback port), so it narrows
///   nothing here.
///
/// What local mode cannot honour is an error naming the field (`path`), never a silent
/// widening: CIDR peers (all local traffic is loopback), a peer with no edge to
/// `service` in that direction, any other port, and the privileged backends.
fn network_proxies(
    at: &Replicas<'_>,
    fault: &NetworkFault,
    load_target: Option<Service>,
    path: &str,
) -> Result<Vec<String>, Vec<String>> {
    let service = at.service;
    let mut problems = Vec::new();
    if matches!(
        fault.backend,
        NetworkBackend::Nftables | NetworkBackend::Netem
    ) {
        problems.push(format!(
            "{path}.backend: local mode injects network faults through its proxies; use `auto` or `proxy` (nftables and netem need --env compose or Kubernetes)"
        ));
    }
    let mut peers = Vec::new();
    for (j, peer) in fault.peers.iter().enumerate() {
        match peer {
            Peer::Service(name) => match name.parse::<Service>() {
                Ok(s) => peers.push(s),
                Err(_) => problems.push(format!(
                    "{path}.peers[{j}]: `{name}` is not a reference fleet service"
                )),
            },
            Peer::Cidr { .. } => problems.push(format!(
                "{path}.peers[{j}]: local mode narrows by fleet service only (every local connection is loopback); name a service, or run with --env compose or Kubernetes"
            )),
        }
    }
    for (j, port) in fault.ports.iter().enumerate() {
        if *port != FLEET_PORT {
            problems.push(format!(
                "{path}.ports[{j}]: no fleet service listens on port {port}; every fleet service listens on {FLEET_PORT} in every mode"
            ));
        }
    }
    if !matches!(fault.direction, Direction::Ingress)
        && at.chosen.len() < at.shape.names(service).len()
    {
        problems.push(format!(
            "{path}.direction: every replica of {service} calls its upstreams through the same proxies in local mode, so an {} fault must select all of them (`mode: all`, the default); select fewer only with `direction: ingress`",
            direction_word(fault.direction)
        ));
    }
    let proxies = edge_proxies(at, fault.direction, &peers, load_target);
    for (j, peer) in peers.iter().enumerate() {
        if edge_proxies(at, fault.direction, &[*peer], None).is_empty() {
            problems.push(format!(
                "{path}.peers[{j}]: {service} has no {} traffic with {peer} (the fleet's edges: {})",
                direction_word(fault.direction),
                EDGES.map(|e| e.to_string()).join(", ")
            ));
        }
    }
    if proxies.is_empty() && problems.is_empty() {
        problems.push(format!(
            "{path}.direction: {service} has no {} traffic to fault in local mode",
            direction_word(fault.direction)
        ));
    }
    if problems.is_empty() {
        Ok(proxies)
    } else {
        Err(problems)
    }
}

/// The replicas of one service a fault acts on.
struct Replicas<'a> {
    service: Service,
    /// Their names, a subset of `shape.names(service)`.
    chosen: Vec<String>,
    shape: &'a Shape,
}

/// The proxies on the edges into the chosen replicas (ingress), out of their service
/// (egress) or both, whose other end is one of `peers` (any, when empty); the load's edge
/// counts as ingress from no fleet service.
fn edge_proxies(
    at: &Replicas<'_>,
    direction: Direction,
    peers: &[Service],
    load_target: Option<Service>,
) -> Vec<String> {
    let service = at.service;
    let ingress = matches!(direction, Direction::Ingress | Direction::Both);
    let egress = matches!(direction, Direction::Egress | Direction::Both);
    let wanted = |other: Service| peers.is_empty() || peers.contains(&other);
    let mut proxies = Vec::new();
    for e in &EDGES {
        if ingress && e.to == service && wanted(e.from) {
            proxies.extend(at.chosen.iter().map(|r| proxy_id(e.from.name(), r)));
        }
        if egress && e.from == service && wanted(e.to) {
            proxies.extend(
                at.shape
                    .names(e.to)
                    .iter()
                    .map(|r| proxy_id(service.name(), r)),
            );
        }
    }
    if ingress && peers.is_empty() && load_target == Some(service) {
        proxies.push(proxy_id("load", service.name()));
    }
    proxies
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
        Direction::Both => "ingress or egress",
    }
}

/// Invalid-input rules of local mode, checked before anything starts: targets must name
/// reference fleet services, a bare PID takes no network or HTTP fault, and a network
/// fault must be one local mode can narrow as written ([`network_proxies`]). Breaking one
/// is exit 2. What local mode cannot do at all (containers, pods, raw PromQL) is not
/// decided here: those experiments are skipped (`super::plan::skip_reason`), and this
/// check ignores their container and pod targets.
pub fn check(experiment: &Experiment) -> Result<(), RunError> {
    let mut problems = Vec::new();
    let load_target = load_service(experiment);
    let shape = Shape::of(experiment);
    for name in experiment.spec.replicas.keys() {
        if name.parse::<Service>().is_err() {
            problems.push(format!(
                "spec.replicas.{name}: `{name}` is not a reference fleet service (gateway, orders, inventory, payments, notifications)"
            ));
        }
    }
    if let Some(service) = load_target
        && shape.count(service) > 1
    {
        problems.push(format!(
            "spec.replicas.{service}: the load targets {service}, and local mode sends it through one proxy to one replica; replicate a service behind it"
        ));
    }
    for (i, f) in experiment.spec.faults.iter().enumerate() {
        match &f.target {
            Target::Service(s) => match s.name.parse::<Service>() {
                Ok(service) => {
                    if let FaultKind::Network(n) = &f.kind {
                        let path = format!("spec.faults[{i}].network");
                        let at = Replicas {
                            service,
                            chosen: shape.select(s, service, &f.name),
                            shape: &shape,
                        };
                        problems.extend(
                            network_proxies(&at, n, load_target, &path)
                                .err()
                                .into_iter()
                                .flatten()
                                .map(|p| format!("fault `{}`: {p}", f.name)),
                        );
                    }
                }
                Err(_) => problems.push(format!(
                    "fault `{}`: `{}` is not a reference fleet service (gateway, orders, inventory, payments, notifications)",
                    f.name, s.name
                )),
            },
            Target::Pid(_) => {
                if matches!(f.kind, FaultKind::Network(_) | FaultKind::Http(_)) {
                    problems.push(format!(
                        "fault `{}`: network and HTTP faults on a bare PID need a privileged agent; local mode injects them through the fleet's proxies, so target a service",
                        f.name
                    ));
                }
            }
            Target::Container(_) | Target::Pods(_) => {}
        }
    }
    if let Some(load) = &experiment.spec.load
        && let LoadTarget::Service(s) = &load.target
        && s.parse::<Service>().is_err()
    {
        problems.push(format!(
            "load.target: `{s}` is not a reference fleet service"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::InvalidInput(problems.join("; ")))
    }
}

impl LocalEnvironment {
    /// Starts the agent, the fleet wired through its proxies, and the scraper.
    /// Must run on a multi-threaded runtime (proxy creation happens inside the
    /// launcher's synchronous wiring callback).
    pub async fn start(
        experiment: &Experiment,
        options: LocalOptions,
    ) -> Result<LocalEnvironment, RunError> {
        let infra = |what: &str, e: &dyn std::fmt::Display| {
            RunError::Infrastructure(format!("local environment: {what}: {e}"))
        };
        let (agent, _) = Agent::start(AgentConfig::default())
            .await
            .map_err(|e| infra("starting the in-process agent", &e))?;
        let mut launch = LaunchOptions::current_exe().map_err(|e| infra("launcher", &e))?;
        if let Ok(v) = std::env::var("FL_RESILIENCE") {
            launch = launch.env("FL_RESILIENCE", v);
        }
        for (k, v) in &options.fleet_env {
            launch = launch.env(k.clone(), v.clone());
        }
        let shape = Shape::of(experiment);
        for (service, n) in &shape.0 {
            launch = launch.replicas(*service, *n);
        }
        launch = launch.logs(match &options.log_dir {
            Some(dir) => ChildLogs::Dir(dir.clone()),
            None => ChildLogs::Discard,
        });
        let wire_error: Arc<Mutex<Option<String>>> = Arc::default();
        let fleet = {
            let agent = agent.clone();
            let wire_error = Arc::clone(&wire_error);
            let rt = tokio::runtime::Handle::current();
            Fleet::start_wired(launch, move |edge, replica, upstream| {
                let id = proxy_id(edge.from.name(), replica);
                // The launcher's wiring callback is synchronous; proxy creation is a bind.
                let created =
                    tokio::task::block_in_place(|| rt.block_on(agent.create_proxy(&id, upstream)));
                match created {
                    Ok(listen) => listen,
                    Err(e) => {
                        wire_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(format!("proxy {id}: {e}"));
                        upstream
                    }
                }
            })
            .await
            .map_err(|e| infra("starting the reference fleet", &e))?
        };
        let wired = wire_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(e) = wired {
            fleet.stop().await;
            return Err(infra("wiring the fleet through the agent", &e));
        }
        let load_edge = match experiment.spec.load.as_ref().map(|l| &l.target) {
            Some(LoadTarget::Service(s)) => {
                let service: Service = s
                    .parse()
                    .map_err(|e| RunError::InvalidInput(format!("load.target: {e}")))?;
                let id = proxy_id("load", service.name());
                match agent.create_proxy(&id, fleet.addr(service)).await {
                    Ok(listen) => Some((service, listen)),
                    Err(e) => {
                        fleet.stop().await;
                        return Err(infra("creating the load proxy", &e));
                    }
                }
            }
            _ => None,
        };
        let targets = fleet
            .metrics_targets()
            .into_iter()
            .map(|r| ScrapeTarget {
                url: r.metrics_url(),
                instance: r.name,
            })
            .collect();
        let scraper = match EmbeddedScraper::new(targets, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(e) => {
                fleet.stop().await;
                return Err(infra("embedded scraper", &e));
            }
        };
        let scraper_stop = CancellationToken::new();
        // The task ends with the token; shutdown cancels it.
        drop(scraper.spawn(scraper_stop.clone()));
        let addrs = Service::START_ORDER
            .iter()
            .map(|s| (*s, fleet.addr(*s)))
            .collect();
        Ok(LocalEnvironment {
            handle: Arc::new(LocalAgent(agent.clone())),
            agent,
            fleet: Mutex::new(Some(fleet)),
            shape,
            addrs,
            load_edge,
            scraper,
            scraper_stop,
            server_backend: options.server_backend,
        })
    }

    /// The current PID of each replica of `service`, by name.
    fn pids(&self, service: Service) -> Vec<(String, Option<u32>)> {
        self.fleet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| {
                f.replicas(service)
                    .into_iter()
                    .map(|r| (r.name, r.pid))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn resolve_now(&self, fault: &Fault) -> Result<Vec<Placement>, RunError> {
        let s = match &fault.target {
            Target::Service(s) => s,
            Target::Pid(pid) => {
                return Ok(vec![self.placement(
                    ResolvedTarget {
                        name: format!("pid {pid}"),
                        pid: Some(*pid),
                        ..Default::default()
                    },
                    None,
                )]);
            }
            Target::Container(_) | Target::Pods(_) => {
                return Err(RunError::InvalidInput(format!(
                    "fault `{}`: this target needs another mode than local",
                    fault.name
                )));
            }
        };
        let service: Service = s
            .name
            .parse()
            .map_err(|e| RunError::InvalidInput(format!("fault `{}`: {e}", fault.name)))?;
        let at = Replicas {
            service,
            chosen: self.shape.select(s, service, &fault.name),
            shape: &self.shape,
        };
        let pids = self.pids(service);
        let mut chosen = Vec::new();
        for name in &at.chosen {
            match pids.iter().find(|(n, _)| n == name) {
                Some((_, Some(pid))) => chosen.push((name.clone(), *pid)),
                _ => {
                    return Err(RunError::Infrastructure(format!(
                        "fault `{}`: {name} is not running right now",
                        fault.name
                    )));
                }
            }
        }
        let load = self.load_edge.map(|(s, _)| s);
        let (proxies, narrowed) = match &fault.kind {
            FaultKind::Network(n) => {
                let path = format!("fault `{}`: network", fault.name);
                let proxies = network_proxies(&at, n, load, &path)
                    .map_err(|p| RunError::InvalidInput(p.join("; ")))?;
                // The agent receives the fault already narrowed to these proxies: its
                // peers and ports are resolved here.
                let narrowed = FaultKind::Network(NetworkFault {
                    peers: Vec::new(),
                    ports: Vec::new(),
                    ..n.clone()
                });
                (proxies, Some(narrowed))
            }
            // An HTTP fault acts on what the replicas answer: every edge into them.
            FaultKind::Http(_) => (edge_proxies(&at, Direction::Ingress, &[], load), None),
            // CPU, memory and process faults: one placement per replica, by PID.
            _ => {
                return Ok(chosen
                    .into_iter()
                    .map(|(name, pid)| {
                        self.placement(
                            ResolvedTarget {
                                name,
                                pid: Some(pid),
                                ..Default::default()
                            },
                            None,
                        )
                    })
                    .collect());
            }
        };
        if proxies.is_empty() {
            return Err(RunError::InvalidInput(format!(
                "fault `{}`: {service} has no traffic in that direction to fault in local mode (it calls no upstream)",
                fault.name
            )));
        }
        // A network or HTTP fault is one placement over the proxies of every chosen
        // replica, named after the service when it hits all of them.
        let name = if at.chosen.len() == self.shape.names(service).len() {
            service.name().to_string()
        } else {
            at.chosen.join(",")
        };
        Ok(vec![self.placement(
            ResolvedTarget {
                name,
                pid: chosen.first().map(|(_, pid)| *pid),
                proxies,
                ..Default::default()
            },
            narrowed,
        )])
    }

    fn placement(&self, target: ResolvedTarget, fault: Option<FaultKind>) -> Placement {
        Placement {
            target,
            agent: Arc::clone(&self.handle),
            fault,
        }
    }
}

impl Environment for LocalEnvironment {
    fn mode(&self) -> RunMode {
        RunMode::Local
    }

    fn resolve<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<Vec<Placement>, RunError>> {
        Box::pin(async move { self.resolve_now(fault) })
    }

    fn agents(&self) -> Vec<Arc<dyn AgentHandle>> {
        vec![Arc::clone(&self.handle)]
    }

    fn slo_backend(&self) -> Arc<dyn SloBackend> {
        if let Some(b) = &self.server_backend {
            return Arc::clone(b);
        }
        Arc::new(self.scraper.backend())
    }

    fn load_url(&self, target: &LoadTarget) -> Result<String, RunError> {
        match target {
            LoadTarget::Url(u) => Ok(u.clone()),
            LoadTarget::Service(s) => {
                let service: Service = s
                    .parse()
                    .map_err(|e| RunError::InvalidInput(format!("load.target: {e}")))?;
                if let Some((svc, addr)) = self.load_edge
                    && svc == service
                {
                    return Ok(format!("http://{addr}"));
                }
                self.addrs
                    .iter()
                    .find(|(s, _)| *s == service)
                    .map(|(_, a)| format!("http://{a}"))
                    .ok_or_else(|| RunError::InvalidInput(format!("load.target: {s}")))
            }
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Faults first (the runner reverted them; this catches anything left), then
            // traffic sources, then the fleet.
            self.agent.revert_all().await;
            self.scraper_stop.cancel();
            for p in self.agent.proxies() {
                let _ = self.agent.remove_proxy(&p.id);
            }
            let fleet = self.fleet.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(fleet) = fleet {
                fleet.stop().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::run::plan::tests::experiment;

    fn inventory_fault(target: &str, fault: &str) -> Experiment {
        experiment(&format!(
            "  replicas: {{inventory: 2}}\n  faults:\n    - name: f\n      target: {target}\n      after: 5s\n      duration: 5s\n      {fault}\n"
        ))
    }

    fn network_proxies_of(e: &Experiment) -> Result<Vec<String>, Vec<String>> {
        let f = &e.spec.faults[0];
        let (Target::Service(s), FaultKind::Network(n)) = (&f.target, &f.kind) else {
            panic!("a network fault on a service")
        };
        let shape = Shape::of(e);
        let service: Service = s.name.parse().unwrap();
        let at = Replicas {
            service,
            chosen: shape.select(s, service, &f.name),
            shape: &shape,
        };
        network_proxies(&at, n, None, "n")
    }

    #[test]
    fn a_replicated_service_has_a_proxy_per_replica_on_each_edge_into_it() {
        let e = inventory_fault("{service: inventory}", "network: {latency: {delay: 10ms}}");
        assert_eq!(
            network_proxies_of(&e).unwrap(),
            ["orders->inventory-1", "orders->inventory-2"]
        );
        // Its callers' egress reaches every replica.
        let orders = experiment(
            "  replicas: {inventory: 2}\n  faults:\n    - name: f\n      target: {service: orders}\n      after: 5s\n      duration: 5s\n      network: {latency: {delay: 10ms}, direction: egress, peers: [inventory]}\n",
        );
        assert_eq!(
            network_proxies_of(&orders).unwrap(),
            ["orders->inventory-1", "orders->inventory-2"]
        );
    }

    #[test]
    fn mode_one_selects_one_replica_the_same_every_time_and_its_seed_can_move_it() {
        let one = |seed: &str| {
            network_proxies_of(&inventory_fault(
                &format!("{{service: inventory, mode: one{seed}}}"),
                "network: {latency: {delay: 10ms}}",
            ))
            .unwrap()
        };
        let unseeded = one("");
        assert_eq!(unseeded.len(), 1);
        assert_eq!(one(""), unseeded);
        let seeded: std::collections::BTreeSet<Vec<String>> =
            (0..16).map(|s| one(&format!(", seed: {s}"))).collect();
        assert_eq!(
            seeded.len(),
            2,
            "16 seeds pick each of the two replicas: {seeded:?}"
        );
    }

    #[test]
    fn egress_from_some_replicas_is_refused_because_they_share_their_proxies() {
        let e = experiment(
            "  replicas: {orders: 2}\n  faults:\n    - name: f\n      target: {service: orders, mode: one}\n      after: 5s\n      duration: 5s\n      network: {latency: {delay: 10ms}, direction: egress}\n",
        );
        let problems = network_proxies_of(&e).unwrap_err();
        assert!(
            problems[0].contains("must select all of them"),
            "{problems:?}"
        );
        assert!(check(&e).is_err());
    }

    #[test]
    fn replicas_of_the_load_target_or_of_an_unknown_service_are_invalid_input() {
        let load = experiment(
            "  replicas: {gateway: 2}\n  load: {target: gateway, rate: 10/s, requests: [{method: GET, path: /}]}\n  faults:\n    - name: f\n      target: {service: orders}\n      after: 5s\n      duration: 5s\n      process: {signal: SIGSTOP}\n",
        );
        let err = check(&load).unwrap_err().to_string();
        assert!(err.contains("spec.replicas.gateway"), "{err}");
        let unknown = experiment(
            "  replicas: {search: 2}\n  faults:\n    - name: f\n      target: {service: orders}\n      after: 5s\n      duration: 5s\n      process: {signal: SIGSTOP}\n",
        );
        let err = check(&unknown).unwrap_err().to_string();
        assert!(
            err.contains("`search` is not a reference fleet service"),
            "{err}"
        );
        assert!(
            check(&inventory_fault(
                "{service: inventory, mode: one}",
                "process: {signal: SIGSTOP}"
            ))
            .is_ok()
        );
    }
}
