//! The compose [`Environment`]: targets through compose labels, the stack's agent over
//! HTTP ([`HttpAgentApi`]), the stack's Prometheus, and the gateway's published port as
//! the load target. It starts nothing, so shutting it down stops nothing: the stack's
//! lifetime is the user's (`docker-compose up -d` / `down`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faultline_spec::wire::{Capabilities, FaultRequest, FaultState};
use faultline_spec::{Fault, LoadTarget};

use super::{ComposeError, ComposeStack, Docker};
use crate::operator::agent::{AgentError, HttpAgentApi};
use crate::report::RunMode;
use crate::run::RunError;
use crate::run::env::{AgentCallError, AgentHandle, Environment, Placement};
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

fn run_error(e: ComposeError) -> RunError {
    match e {
        ComposeError::TargetNotFound(_) | ComposeError::Unsupported(_) => {
            RunError::InvalidInput(e.to_string())
        }
        _ => RunError::Infrastructure(e.to_string()),
    }
}

/// The stack's agent behind the runner's [`AgentHandle`].
#[derive(Debug)]
pub struct HttpAgent {
    api: HttpAgentApi,
    url: String,
}

impl HttpAgent {
    /// The agent at `url`, authenticated with the token in `token_file`.
    pub fn new(url: String, token_file: PathBuf) -> Result<Self, AgentError> {
        Ok(Self {
            api: HttpAgentApi::new(token_file)?,
            url,
        })
    }

    fn call_error(&self, e: AgentError, id: Option<&str>) -> AgentCallError {
        match e {
            AgentError::Status { status, .. } if id.is_some() && matches!(status, 404 | 410) => {
                AgentCallError::NotActive {
                    agent: self.url.clone(),
                    id: id.unwrap_or_default().to_string(),
                }
            }
            AgentError::Status { status, body, .. } if (400..500).contains(&status) => {
                AgentCallError::Rejected {
                    agent: self.url.clone(),
                    message: format!("{status}: {body}"),
                }
            }
            other => AgentCallError::Failed {
                agent: self.url.clone(),
                message: other.to_string(),
            },
        }
    }
}

impl AgentHandle for HttpAgent {
    fn endpoint(&self) -> String {
        self.url.clone()
    }

    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities, AgentCallError>> {
        Box::pin(async move {
            self.api
                .capabilities(&self.url)
                .await
                .map_err(|e| self.call_error(e, None))
        })
    }

    fn apply(&self, request: FaultRequest) -> BoxFuture<'_, Result<FaultState, AgentCallError>> {
        Box::pin(async move {
            self.api
                .apply_state(&self.url, &request)
                .await
                .map_err(|e| self.call_error(e, None))
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), AgentCallError>> {
        Box::pin(async move {
            use crate::operator::agent::AgentApi;
            AgentApi::renew(&self.api, &self.url, id, ttl)
                .await
                .map_err(|e| self.call_error(e, Some(id)))
        })
    }

    fn revert<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FaultState>, AgentCallError>> {
        Box::pin(async move {
            self.api
                .revert_state(&self.url, id)
                .await
                .map_err(|e| self.call_error(e, None))
        })
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
            .field("agent", &self.agent.url)
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
            Ok(stack
                .resolve(&fault.target)
                .map_err(run_error)?
                .into_iter()
                .map(|target| Placement {
                    target,
                    agent: agent.clone(),
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
