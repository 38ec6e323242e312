//! Backend selection: which injector handles a fault request.
//!
//! The choice depends on the target's form and on the host's capabilities, never on
//! guesses: a target that names agent proxies (local mode) always uses them; a node
//! target (`pid` or `containerId`) uses the privileged backends the preflight found.
//! A backend asked for explicitly but missing fails before anything is injected, with
//! the missing piece named (e.g. the `sch_netem` kernel module).

use faultline_spec::wire::{Capabilities, FaultRequest, ResolvedTarget};
use faultline_spec::{FaultKind, NetworkAction, NetworkBackend, NetworkFault};

use crate::fault::{FaultError, PreparedFault};
use crate::nft::{NftFault, action_name};
use crate::proxy::{ProxyFault, ProxyRegistry};

/// What backend selection needs to know.
#[derive(Debug, Clone)]
pub struct Context {
    /// The agent's userspace proxies (local mode).
    pub proxies: ProxyRegistry,
    /// What this host can do, probed at start.
    pub capabilities: Capabilities,
}

fn missing(caps: &Capabilities, name: &str) -> String {
    caps.missing
        .get(name)
        .cloned()
        .unwrap_or_else(|| format!("{name} is not available"))
}

/// Builds the fault for `request`; see [`crate::fault::build`].
pub fn build(request: &FaultRequest, ctx: &Context) -> Result<Box<dyn PreparedFault>, FaultError> {
    let target = &request.target;
    let node = crate::target::is_node_target(target) && target.proxies.is_empty();
    Ok(match &request.fault {
        FaultKind::Network(n) if node => network(request, n, ctx)?,
        FaultKind::Network(n) => {
            preflight_explicit(n, &ctx.capabilities)?;
            Box::new(ProxyFault::network(n, &ctx.proxies)?)
        }
        FaultKind::Http(h) if node => {
            // The redirect proxy needs nftables' `redirect` in the target's namespace.
            if !ctx.capabilities.nftables {
                return Err(FaultError::Unsupported(format!(
                    "an http fault on a node target needs nftables, which this host lacks: {}",
                    missing(&ctx.capabilities, "nftables")
                )));
            }
            Box::new(crate::redirect::RedirectLatency::http(
                &request.id,
                h,
                request.ttl.std(),
            )?)
        }
        FaultKind::Http(h) => Box::new(ProxyFault::http(h, &ctx.proxies)?),
        FaultKind::Cpu(c) if node && cgroup_capable(&ctx.capabilities) => {
            Box::new(crate::cgroup::CgroupCpu::new(c)?)
        }
        FaultKind::Memory(m) if node && cgroup_capable(&ctx.capabilities) => {
            let helper = std::env::current_exe()
                .map_err(|e| FaultError::io("find the agent's own binary", e))?;
            Box::new(crate::cgroup::memory::CgroupMemory::new(m, helper)?)
        }
        FaultKind::Cpu(c) => Box::new(crate::stress::cpu::CpuStress::new(c)?),
        FaultKind::Memory(m) => Box::new(crate::stress::memory::MemoryStress::new(m)?),
        FaultKind::Process(p) => Box::new(crate::process::SignalFault::new(p.signal)),
        FaultKind::Container(c) => {
            if ctx.capabilities.docker_socket.is_none() {
                return Err(FaultError::Unsupported(format!(
                    "container faults need the Docker socket: {}",
                    missing(&ctx.capabilities, "docker")
                )));
            }
            Box::new(crate::docker::ContainerFaultImpl::new(c))
        }
    })
}

/// Whether stress can be charged to a target's cgroup.
fn cgroup_capable(caps: &Capabilities) -> bool {
    caps.privileged && caps.cgroup_version.is_some()
}

/// Refuses an explicit netem or nftables request the host cannot serve.
fn preflight_explicit(n: &NetworkFault, caps: &Capabilities) -> Result<(), FaultError> {
    match n.backend {
        NetworkBackend::Netem if !caps.netem => Err(FaultError::Unsupported(format!(
            "backend netem needs the sch_netem kernel module: {}; use backend auto (the redirect proxy) or load sch_netem",
            missing(caps, "netem")
        ))),
        NetworkBackend::Nftables if !caps.nftables => Err(FaultError::Unsupported(format!(
            "backend nftables is unavailable: {}",
            missing(caps, "nftables")
        ))),
        _ => Ok(()),
    }
}

fn network(
    request: &FaultRequest,
    n: &NetworkFault,
    ctx: &Context,
) -> Result<Box<dyn PreparedFault>, FaultError> {
    let caps = &ctx.capabilities;
    preflight_explicit(n, caps)?;
    let ttl = request.ttl.std();
    let action = action_name(&n.action);
    let unavailable = |what: &str| {
        FaultError::Unsupported(format!(
            "network {action} on a node target needs {what}, which this host lacks: {}",
            missing(caps, what)
        ))
    };
    match (&n.action, n.backend) {
        (NetworkAction::Loss(_) | NetworkAction::Partition(_) | NetworkAction::Reset(_), b)
            if b != NetworkBackend::Proxy =>
        {
            if !caps.nftables {
                return Err(unavailable("nftables"));
            }
            Ok(Box::new(NftFault::new(&request.id, n, ttl)?))
        }
        (NetworkAction::Bandwidth(_), NetworkBackend::Auto) => {
            if !(caps.tbf && caps.ifb) {
                return Err(unavailable(if caps.tbf { "ifb" } else { "htb" }));
            }
            Ok(Box::new(crate::tc::TcBandwidth::new(&request.id, n)?))
        }
        (NetworkAction::Latency(_), NetworkBackend::Netem) => {
            // preflight_explicit has already refused this without sch_netem.
            if !caps.ifb && n.direction != faultline_spec::Direction::Egress {
                return Err(unavailable("ifb"));
            }
            Ok(Box::new(crate::tc::TcBandwidth::netem(&request.id, n)?))
        }
        (NetworkAction::Latency(_), NetworkBackend::Auto)
            if caps.netem
                && caps.tbf
                && (caps.ifb || n.direction == faultline_spec::Direction::Egress) =>
        {
            Ok(Box::new(crate::tc::TcBandwidth::netem(&request.id, n)?))
        }
        (NetworkAction::Latency(_), NetworkBackend::Auto | NetworkBackend::Proxy) => {
            // Without netem, latency goes through the redirect proxy, which needs
            // nftables' `redirect`.
            if !caps.nftables {
                return Err(unavailable("nftables"));
            }
            Ok(Box::new(crate::redirect::RedirectLatency::new(
                &request.id,
                n,
                ttl,
            )?))
        }
        (_, b) => Err(FaultError::Unsupported(format!(
            "network {action} with backend {b:?} on node target `{}` is not available on this agent",
            describe(target_of(request))
        ))),
    }
}

fn target_of(r: &FaultRequest) -> &ResolvedTarget {
    &r.target
}

fn describe(t: &ResolvedTarget) -> String {
    match (&t.pid, &t.container_id) {
        (Some(p), _) => format!("{} (pid {p})", t.name),
        (None, Some(c)) => format!("{} (container {c})", t.name),
        _ => t.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_spec::{Direction, Empty, Latency, Loss, Percent};

    fn caps(netem: bool, nftables: bool) -> Capabilities {
        let mut c = crate::capabilities::probe();
        c.privileged = true;
        c.netem = netem;
        c.nftables = nftables;
        c.tbf = true;
        c.ifb = true;
        c.missing.insert(
            "netem".into(),
            "the kernel has no usable sch_netem module".into(),
        );
        c
    }

    fn request(action: NetworkAction, backend: NetworkBackend, proxies: bool) -> FaultRequest {
        FaultRequest {
            id: "f".into(),
            experiment: "e".into(),
            target: ResolvedTarget {
                name: "t".into(),
                pid: Some(std::process::id()),
                proxies: if proxies {
                    vec!["p".into()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            },
            fault: FaultKind::Network(NetworkFault {
                action,
                direction: Direction::Ingress,
                peers: Vec::new(),
                ports: Vec::new(),
                backend,
            }),
            ttl: faultline_spec::Duration::from_secs(5),
        }
    }

    fn latency() -> NetworkAction {
        NetworkAction::Latency(Latency {
            delay: faultline_spec::Duration::from_millis(10),
            jitter: Default::default(),
            correlation: None,
            distribution: Default::default(),
        })
    }

    fn chosen(r: &FaultRequest, c: Capabilities) -> Result<&'static str, FaultError> {
        let ctx = Context {
            proxies: ProxyRegistry::default(),
            capabilities: c,
        };
        build(r, &ctx).map(|p| p.backend())
    }

    #[test]
    fn auto_latency_picks_netem_where_present_else_the_redirect_proxy() {
        let r = request(latency(), NetworkBackend::Auto, false);
        assert_eq!(chosen(&r, caps(true, true)).unwrap(), "netem");
        assert_eq!(chosen(&r, caps(false, true)).unwrap(), "redirect");
    }

    #[test]
    fn an_explicit_netem_request_without_sch_netem_is_refused_naming_the_module() {
        let r = request(latency(), NetworkBackend::Netem, false);
        let e = chosen(&r, caps(false, true)).unwrap_err();
        assert!(matches!(e, FaultError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("sch_netem"), "{e}");
    }

    #[test]
    fn node_targets_get_nftables_and_proxy_targets_keep_the_proxy() {
        let loss = NetworkAction::Loss(Loss {
            percent: Percent::from_fraction(0.1).unwrap(),
            correlation: None,
        });
        let node = request(loss.clone(), NetworkBackend::Auto, false);
        assert_eq!(chosen(&node, caps(false, true)).unwrap(), "nftables");
        let local = request(loss, NetworkBackend::Auto, true);
        assert_eq!(chosen(&local, caps(false, true)).unwrap(), "proxy");
        let e = chosen(
            &request(
                NetworkAction::Partition(Empty {}),
                NetworkBackend::Auto,
                false,
            ),
            caps(false, false),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nftables"), "{e}");
    }
}
