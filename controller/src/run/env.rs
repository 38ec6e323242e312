//! The seam between the runner and where it runs: an [`Environment`] resolves targets,
//! hands out the agents that act on them, the SLO backend for server metrics and the
//! load target's URL, and tears down what it started.
//!
//! The runner knows nothing about fleets, containers or pods. Implementations:
//! - `local` (in the `chaos` binary, because it embeds the agent and the fleet launcher,
//!   which this crate must not depend on): the reference fleet as child processes, every
//!   edge wired through the in-process agent's proxies, the embedded scraper;
//! - [`crate::compose::ComposeEnvironment`]: compose label resolution, the agent
//!   container over HTTP ([`crate::operator::agent::HttpAgentApi`] behind
//!   [`AgentHandle`]) and the stack's Prometheus
//!   ([`crate::slo::prometheus::PrometheusBackend`]); see `docs/compose.md`.

use std::sync::Arc;
use std::time::Duration;

use faultline_spec::wire::{Capabilities, FaultRequest, FaultState, ResolvedTarget};
use faultline_spec::{Fault, FaultKind, LoadTarget};

use super::RunError;
use crate::report::RunMode;
use crate::slo::{BoxFuture, SloBackend};

/// Why an agent call failed. The runner maps [`AgentCallError::Rejected`] of an apply to
/// a preflight-style infrastructure failure naming the fault, never to a panic.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentCallError {
    /// The agent refused the request (invalid, unsupported, target gone: a 4xx).
    #[error("agent {agent} rejected the request: {message}")]
    Rejected {
        /// Which agent.
        agent: String,
        /// Its explanation.
        message: String,
    },
    /// The agent refuses the target by its protection rules (HTTP 403 `protected`): the
    /// experiment asks for what this node never allows, and no retry changes that.
    #[error("agent {agent} refused a protected target: {message}")]
    Protected {
        /// Which agent.
        agent: String,
        /// Which rule, from the agent.
        message: String,
    },
    /// The fault is no longer active (its lease expired or it was reverted).
    #[error("agent {agent}: fault {id} is no longer active")]
    NotActive {
        /// Which agent.
        agent: String,
        /// The fault id.
        id: String,
    },
    /// The agent could not be reached or failed internally (a 5xx).
    #[error("agent {agent} failed: {message}")]
    Failed {
        /// Which agent.
        agent: String,
        /// What happened.
        message: String,
    },
}

/// One agent as the runner uses it: the agent API of DESIGN.md §3. Local mode wraps the
/// in-process agent; remote modes wrap the HTTP client.
pub trait AgentHandle: Send + Sync {
    /// Where the agent is: `in-process` or its base URL. Used in messages and reports.
    fn endpoint(&self) -> String;
    /// `GET /v1/capabilities`: the preflight.
    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities, AgentCallError>>;
    /// `POST /v1/faults?dryRun=true`: whether the agent would apply `request`, changing
    /// nothing; the backend it would use. The dry run calls it for every fault.
    fn check(&self, request: FaultRequest) -> BoxFuture<'_, Result<String, AgentCallError>>;
    /// `POST /v1/faults`: applies a fault under a lease; idempotent on the id.
    fn apply(&self, request: FaultRequest) -> BoxFuture<'_, Result<FaultState, AgentCallError>>;
    /// `POST /v1/faults/{id}/renew`.
    fn renew<'a>(&'a self, id: &'a str, ttl: Duration)
    -> BoxFuture<'a, Result<(), AgentCallError>>;
    /// `DELETE /v1/faults/{id}`: idempotent; returns the final state when the agent
    /// reports one (with the fault's observed effect).
    fn revert<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FaultState>, AgentCallError>>;
}

/// One resolved target and the agent that acts on it.
#[derive(Clone)]
pub struct Placement {
    /// The target as the agent receives it.
    pub target: ResolvedTarget,
    /// The agent on the target's node.
    pub agent: Arc<dyn AgentHandle>,
    /// The fault as this agent receives it, when the environment narrowed it (local
    /// mode resolves `peers:` and `ports:` into the target's proxies); `None` sends the
    /// experiment's fault as written.
    pub fault: Option<FaultKind>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("target", &self.target)
            .field("agent", &self.agent.endpoint())
            .field("fault", &self.fault)
            .finish()
    }
}

/// Where an experiment runs. Built (and started) by the caller for its mode, handed to
/// [`super::run`], and shut down by the caller afterwards with [`Environment::shutdown`].
pub trait Environment: Send + Sync {
    /// The mode, for reports.
    fn mode(&self) -> RunMode;

    /// Resolves a fault's target to concrete targets with their agents. Called once in
    /// the resolve phase (to fail early) and again at injection time, so a PID is the
    /// target's *current* one. Unknown or unsupported targets are
    /// [`RunError::InvalidInput`]; a target that exists but cannot be reached now is
    /// [`RunError::Infrastructure`].
    fn resolve<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<Vec<Placement>, RunError>>;

    /// Every agent this environment uses, for the preflight.
    fn agents(&self) -> Vec<Arc<dyn AgentHandle>>;

    /// The backend that evaluates server-side SLOs (embedded scraper or Prometheus).
    fn slo_backend(&self) -> Arc<dyn SloBackend>;

    /// The base URL (`http://host:port`) the load generator sends to.
    fn load_url(&self, target: &LoadTarget) -> Result<String, RunError>;

    /// Stops everything the environment started (fleet, proxies, scraper). Idempotent.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
