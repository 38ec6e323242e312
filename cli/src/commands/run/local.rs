//! The `local` environment: the reference fleet as child processes of this binary, the
//! agent in-process, every upstream edge (and the load generator's edge into its target)
//! wired through one of the agent's proxies, and the embedded scraper. No root, no
//! Docker, no Prometheus.
//!
//! Target resolution: `{service: X}` is X's current PID plus the proxies that carry its
//! traffic, chosen by the fault:
//! - network faults: `ingress` = proxies of edges INTO X (including `load->X` when the
//!   load targets X), `egress` = proxies of edges OUT of X, `both` = both sets;
//! - HTTP faults act on requests, so they use the proxies INTO X;
//! - CPU, memory and process faults use the PID.
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
use faultline_fleet::{ChildLogs, EDGES, Fleet, LaunchOptions, Service};
use faultline_spec::wire::{Capabilities, FaultRequest, FaultState, ResolvedTarget};
use faultline_spec::{
    Direction, Experiment, Fault, FaultKind, LoadTarget, NetworkBackend, NetworkFault, Peer, Target,
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
    addrs: Vec<(Service, SocketAddr)>,
    load_edge: Option<(Service, SocketAddr)>,
    scraper: EmbeddedScraper,
    scraper_stop: CancellationToken,
    server_backend: Option<Arc<dyn SloBackend>>,
}

fn proxy_id(from: &str, to: Service) -> String {
    format!("{from}->{to}")
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
    service: Service,
    fault: &NetworkFault,
    load_target: Option<Service>,
    path: &str,
) -> Result<Vec<String>, Vec<String>> {
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
    let proxies = edge_proxies(service, fault.direction, &peers, load_target);
    for (j, peer) in peers.iter().enumerate() {
        if edge_proxies(service, fault.direction, &[*peer], None).is_empty() {
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

/// The proxies on the edges into `service` (ingress), out of it (egress) or both, whose
/// other end is one of `peers` (any, when empty); the load's edge counts as ingress from
/// no fleet service.
fn edge_proxies(
    service: Service,
    direction: Direction,
    peers: &[Service],
    load_target: Option<Service>,
) -> Vec<String> {
    let ingress = matches!(direction, Direction::Ingress | Direction::Both);
    let egress = matches!(direction, Direction::Egress | Direction::Both);
    let wanted = |other: Service| peers.is_empty() || peers.contains(&other);
    let mut proxies: Vec<String> = EDGES
        .iter()
        .filter(|e| {
            (ingress && e.to == service && wanted(e.from))
                || (egress && e.from == service && wanted(e.to))
        })
        .map(|e| proxy_id(e.from.name(), e.to))
        .collect();
    if ingress && peers.is_empty() && load_target == Some(service) {
        proxies.push(proxy_id("load", service));
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
    for (i, f) in experiment.spec.faults.iter().enumerate() {
        match &f.target {
            Target::Service(s) => match s.parse::<Service>() {
                Ok(service) => {
                    if let FaultKind::Network(n) = &f.kind {
                        let path = format!("spec.faults[{i}].network");
                        problems.extend(
                            network_proxies(service, n, load_target, &path)
                                .err()
                                .into_iter()
                                .flatten()
                                .map(|p| format!("fault `{}`: {p}", f.name)),
                        );
                    }
                }
                Err(_) => problems.push(format!(
                    "fault `{}`: `{s}` is not a reference fleet service (gateway, orders, inventory, payments, notifications)",
                    f.name
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
        launch = launch.logs(match &options.log_dir {
            Some(dir) => ChildLogs::Dir(dir.clone()),
            None => ChildLogs::Discard,
        });
        let wire_error: Arc<Mutex<Option<String>>> = Arc::default();
        let fleet = {
            let agent = agent.clone();
            let wire_error = Arc::clone(&wire_error);
            let rt = tokio::runtime::Handle::current();
            Fleet::start_wired(launch, move |edge, upstream| {
                let id = proxy_id(edge.from.name(), edge.to);
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
                let id = proxy_id("load", service);
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
            .map(|(s, url)| ScrapeTarget {
                instance: s.name().to_string(),
                url,
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
            addrs,
            load_edge,
            scraper,
            scraper_stop,
            server_backend: options.server_backend,
        })
    }

    fn pid(&self, service: Service) -> Option<u32> {
        self.fleet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|f| f.pid(service))
    }

    fn resolve_now(&self, fault: &Fault) -> Result<Vec<Placement>, RunError> {
        let mut narrowed = None;
        let target = match &fault.target {
            Target::Service(name) => {
                let service: Service = name
                    .parse()
                    .map_err(|e| RunError::InvalidInput(format!("fault `{}`: {e}", fault.name)))?;
                let pid = self.pid(service).ok_or_else(|| {
                    RunError::Infrastructure(format!(
                        "fault `{}`: {service} is not running right now",
                        fault.name
                    ))
                })?;
                let proxies = match &fault.kind {
                    FaultKind::Network(n) => {
                        let load = self.load_edge.map(|(s, _)| s);
                        let path = format!("fault `{}`: network", fault.name);
                        let proxies = network_proxies(service, n, load, &path)
                            .map_err(|p| RunError::InvalidInput(p.join("; ")))?;
                        // The agent receives the fault already narrowed to these
                        // proxies: its peers and ports are resolved here.
                        narrowed = Some(FaultKind::Network(NetworkFault {
                            peers: Vec::new(),
                            ports: Vec::new(),
                            ..n.clone()
                        }));
                        proxies
                    }
                    // An HTTP fault acts on what `service` answers: every edge into it.
                    FaultKind::Http(_) => edge_proxies(
                        service,
                        Direction::Ingress,
                        &[],
                        self.load_edge.map(|(s, _)| s),
                    ),
                    _ => Vec::new(),
                };
                if matches!(fault.kind, FaultKind::Network(_) | FaultKind::Http(_))
                    && proxies.is_empty()
                {
                    return Err(RunError::InvalidInput(format!(
                        "fault `{}`: {service} has no traffic in that direction to fault in local mode (it calls no upstream)",
                        fault.name
                    )));
                }
                ResolvedTarget {
                    name: service.name().to_string(),
                    pid: Some(pid),
                    proxies,
                    ..Default::default()
                }
            }
            Target::Pid(pid) => ResolvedTarget {
                name: format!("pid {pid}"),
                pid: Some(*pid),
                ..Default::default()
            },
            Target::Container(_) | Target::Pods(_) => {
                return Err(RunError::InvalidInput(format!(
                    "fault `{}`: this target needs another mode than local",
                    fault.name
                )));
            }
        };
        Ok(vec![Placement {
            target,
            agent: Arc::clone(&self.handle),
            fault: narrowed,
        }])
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
