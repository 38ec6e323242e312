//! The compose [`Environment`]: targets through compose labels, the stack's agent over
//! HTTP ([`HttpAgentApi`]), the stack's Prometheus, and the gateway's published port as
//! the load target. It starts nothing, so shutting it down stops nothing: the stack's
//! lifetime is the user's (`docker-compose up -d` / `down`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faultline_spec::{Fault, FaultKind, LoadTarget, NetworkFault, Peer};

use super::{ComposeError, ComposeStack, Docker};
use crate::operator::agent::HttpAgent;
use crate::report::RunMode;
use crate::run::RunError;
use crate::run::env::{AgentHandle, Environment, Placement};
use crate::slo::prometheus::PrometheusBackend;
use crate::slo::{BoxFuture, SloBackend};

/// How `chaos run --env compose` finds the stack; every field has a default read from
/// the stack itself.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    /// The compose project (`COMPOSE_PROJECT_NAME`, `faultline` by default).
    pub project: String,
    /// Prometheus base URL; the stack's Prometheus container when `None`.
    pub prometheus: Option<String>,
    /// Agent base URL; the agent container's published port when `None`.
    pub agent_url: Option<String>,
    /// Agent token file; the file mounted into the agent container when `None`.
    pub agent_token: Option<PathBuf>,
    /// Per-request timeout towards Prometheus.
    pub prometheus_timeout: Duration,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        Self {
            project: super::DEFAULT_PROJECT.to_string(),
            prometheus: None,
            agent_url: None,
            agent_token: None,
            prometheus_timeout: Duration::from_secs(5),
        }
    }
}

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infrastructure(e.to_string())
}

/// A network fault whose `peers:` name services, with each service replaced by its
/// containers' addresses on the compose network (one host each): node agents match
/// addresses, not names. `None` when there is nothing to replace.
fn peers_as_addresses(
    stack: &ComposeStack,
    kind: &FaultKind,
) -> Result<Option<FaultKind>, ComposeError> {
    let FaultKind::Network(n) = kind else {
        return Ok(None);
    };
    if !n.peers.iter().any(|p| matches!(p, Peer::Service(_))) {
        return Ok(None);
    }
    let mut peers = Vec::new();
    for p in &n.peers {
        match p {
            Peer::Service(s) => {
                peers.extend(
                    stack
                        .service_addresses(s)?
                        .into_iter()
                        .map(|addr| Peer::Cidr {
                            addr,
                            prefix: if addr.is_ipv4() { 32 } else { 128 },
                        }),
                )
            }
            cidr => peers.push(cidr.clone()),
        }
    }
    Ok(Some(FaultKind::Network(NetworkFault {
        peers,
        ..n.clone()
    })))
}

fn run_error(e: ComposeError) -> RunError {
    match e {
        ComposeError::TargetNotFound(_) | ComposeError::Unsupported(_) => {
            RunError::InvalidInput(e.to_string())
        }
        _ => RunError::Infrastructure(e.to_string()),
    }
}

/// `chaos run --env compose`.
pub struct ComposeEnvironment {
    docker: Docker,
    project: String,
    stack: ComposeStack,
    agent: Arc<HttpAgent>,
    slo: Arc<PrometheusBackend>,
}

impl std::fmt::Debug for ComposeEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComposeEnvironment")
            .field("project", &self.project)
            .field("agent", &self.agent.endpoint())
            .finish()
    }
}

impl ComposeEnvironment {
    /// Finds the running stack of `options.project` through the local Docker engine, its
    /// agent and its Prometheus. Fails with [`RunError::Infrastructure`] when the stack,
    /// the agent or Prometheus is missing, naming what to start.
    pub async fn connect(options: ComposeOptions) -> Result<Self, RunError> {
        let docker = Docker::from_env().map_err(infra)?;
        let stack = ComposeStack::discover(&docker, &options.project)
            .await
            .map_err(infra)?;
        let (url, token_file) = match (&options.agent_url, &options.agent_token) {
            (Some(u), Some(t)) => (u.clone(), t.clone()),
            (url, token) => {
                let found = stack.agent().map_err(infra)?;
                (
                    url.clone().unwrap_or(found.url),
                    token.clone().unwrap_or(found.token_file),
                )
            }
        };
        let agent = HttpAgent::new(url, token_file).map_err(infra)?;
        let prometheus = match &options.prometheus {
            Some(u) => u.clone(),
            None => stack.prometheus_url().map_err(infra)?,
        };
        let slo = PrometheusBackend::new(&prometheus, options.prometheus_timeout).map_err(infra)?;
        Ok(Self {
            docker,
            project: options.project,
            stack,
            agent: Arc::new(agent),
            slo: Arc::new(slo),
        })
    }

    /// The stack as found at connection time.
    pub fn stack(&self) -> &ComposeStack {
        &self.stack
    }
}

impl Environment for ComposeEnvironment {
    fn mode(&self) -> RunMode {
        RunMode::Compose
    }

    fn resolve<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<Vec<Placement>, RunError>> {
        Box::pin(async move {
            // Read the stack again: a restarted container has a new PID.
            let stack = ComposeStack::discover(&self.docker, &self.project)
                .await
                .map_err(infra)?;
            let agent: Arc<dyn AgentHandle> = self.agent.clone();
            let narrowed = peers_as_addresses(&stack, &fault.kind).map_err(run_error)?;
            Ok(stack
                .resolve(&fault.target, &fault.name)
                .map_err(run_error)?
                .into_iter()
                .map(|target| Placement {
                    target,
                    agent: agent.clone(),
                    fault: narrowed.clone(),
                })
                .collect())
        })
    }

    fn agents(&self) -> Vec<Arc<dyn AgentHandle>> {
        vec![self.agent.clone()]
    }

    fn slo_backend(&self) -> Arc<dyn SloBackend> {
        self.slo.clone()
    }

    fn load_url(&self, target: &LoadTarget) -> Result<String, RunError> {
        match target {
            LoadTarget::Url(u) => Ok(u.clone()),
            LoadTarget::Service(s) => self.stack.service_url(s).map_err(run_error),
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
