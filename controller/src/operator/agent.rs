//! Talking to the node agents (DESIGN.md §3) over HTTP: the operator reverts on
//! deletion and re-injects after a pod restart; `chaos run --env compose` drives a whole
//! run through the same client ([`HttpAgentApi::capabilities`], [`HttpAgentApi::apply_state`],
//! [`HttpAgentApi::revert_state`]).

use std::path::PathBuf;

use std::time::Duration;

use faultline_spec::wire::{API_PREFIX, Capabilities, FaultRequest, FaultState, RenewRequest};
use futures::future::BoxFuture;

use crate::run::env::{AgentCallError, AgentHandle};

/// Why an agent call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent could not be reached (connection refused, timeout, DNS).
    #[error("agent {agent} unreachable: {message}")]
    Unreachable {
        /// Base URL.
        agent: String,
        /// What happened.
        message: String,
    },
    /// The agent answered with an error status.
    #[error("agent {agent} answered {status}: {body}")]
    Status {
        /// Base URL.
        agent: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The bearer token file could not be read.
    #[error("agent token {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The agent calls the operator makes. A trait so reconciler tests use a fake agent.
pub trait AgentApi: Send + Sync + 'static {
    /// `POST /v1/faults`.
    fn apply<'a>(
        &'a self,
        agent: &'a str,
        request: &'a FaultRequest,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    /// `POST /v1/faults/{id}/renew`.
    fn renew<'a>(
        &'a self,
        agent: &'a str,
        id: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    /// `DELETE /v1/faults/{id}` (idempotent: 404 counts as reverted).
    fn revert<'a>(&'a self, agent: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), AgentError>>;
}

/// The agent API over HTTP with a bearer token read from a file (the Secret mount).
#[derive(Debug, Clone)]
pub struct HttpAgentApi {
    client: reqwest::Client,
    token_file: PathBuf,
}

impl HttpAgentApi {
    /// A client that sends the token in `token_file` with every call, with a 10 s
    /// timeout per call.
    pub fn new(token_file: impl Into<PathBuf>) -> Result<Self, AgentError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| AgentError::Unreachable {
                agent: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self {
            client,
            token_file: token_file.into(),
        })
    }

    fn token(&self) -> Result<String, AgentError> {
        // Re-read every call: a rotated Secret takes effect without a restart.
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_owned())
            .map_err(|source| AgentError::Token {
                path: self.token_file.clone(),
                source,
            })
    }

    /// One call; the body of a successful answer, `None` for a tolerated 404.
    async fn call(
        &self,
        agent: &str,
        req: reqwest::RequestBuilder,
        ok_404: bool,
    ) -> Result<Option<bytes::Bytes>, AgentError> {
        let unreachable = |e: reqwest::Error| AgentError::Unreachable {
            agent: agent.to_owned(),
            message: e.to_string(),
        };
        let resp = req
            .bearer_auth(self.token()?)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        if ok_404 && status == 404 {
            return Ok(None);
        }
        if resp.status().is_success() {
            return resp.bytes().await.map(Some).map_err(unreachable);
        }
        Err(AgentError::Status {
            agent: agent.to_owned(),
            status,
            body: resp.text().await.unwrap_or_default(),
        })
    }

    async fn send(
        &self,
        agent: &str,
        req: reqwest::RequestBuilder,
        ok_404: bool,
    ) -> Result<(), AgentError> {
        self.call(agent, req, ok_404).await.map(drop)
    }

    fn decode<T: serde::de::DeserializeOwned>(agent: &str, body: &[u8]) -> Result<T, AgentError> {
        serde_json::from_slice(body).map_err(|e| AgentError::Unreachable {
            agent: agent.to_owned(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `GET /v1/capabilities`: the preflight.
    pub async fn capabilities(&self, agent: &str) -> Result<Capabilities, AgentError> {
        let url = format!("{agent}{API_PREFIX}/capabilities");
        let body = self.call(agent, self.client.get(url), false).await?;
        Self::decode(agent, &body.unwrap_or_default())
    }

    /// `POST /v1/faults`, returning the fault's state as the agent reports it.
    pub async fn apply_state(
        &self,
        agent: &str,
        request: &FaultRequest,
    ) -> Result<FaultState, AgentError> {
        let url = format!("{agent}{API_PREFIX}/faults");
        let body = self
            .call(agent, self.client.post(url).json(request), false)
            .await?;
        Self::decode(agent, &body.unwrap_or_default())
    }

    /// `POST /v1/faults?dryRun=true`: whether the agent would apply `request`, changing
    /// nothing; the backend it would use.
    pub async fn check(&self, agent: &str, request: &FaultRequest) -> Result<String, AgentError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            backend: String,
        }
        let url = format!("{agent}{API_PREFIX}/faults?dryRun=true");
        let body = self
            .call(agent, self.client.post(url).json(request), false)
            .await?;
        Self::decode::<Answer>(agent, &body.unwrap_or_default()).map(|a| a.backend)
    }

    /// `DELETE /v1/faults/{id}`, returning the final state (with the observed effect)
    /// when the agent still knew the fault.
    pub async fn revert_state(
        &self,
        agent: &str,
        id: &str,
    ) -> Result<Option<FaultState>, AgentError> {
        let url = format!("{agent}{API_PREFIX}/faults/{id}");
        match self.call(agent, self.client.delete(url), true).await? {
            Some(body) if !body.is_empty() => Self::decode(agent, &body).map(Some),
            _ => Ok(None),
        }
    }
}

impl AgentApi for HttpAgentApi {
    fn apply<'a>(
        &'a self,
        agent: &'a str,
        request: &'a FaultRequest,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            let url = format!("{agent}{API_PREFIX}/faults");
            self.send(agent, self.client.post(url).json(request), false)
                .await
        })
    }

    fn renew<'a>(
        &'a self,
        agent: &'a str,
        id: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            let url = format!("{agent}{API_PREFIX}/faults/{id}/renew");
            let body = RenewRequest { ttl: ttl.into() };
            self.send(agent, self.client.post(url).json(&body), false)
                .await
        })
    }

    fn revert<'a>(&'a self, agent: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async move {
            let url = format!("{agent}{API_PREFIX}/faults/{id}");
            self.send(agent, self.client.delete(url), true).await
        })
    }
}

/// One agent over HTTP behind the runner's [`AgentHandle`] (compose and Kubernetes runs).
#[derive(Debug)]
pub struct HttpAgent {
    api: HttpAgentApi,
    url: String,
}

/// The agent's explanation when `body` is its `protected` refusal (a 403 is also what a
/// wrong token gets).
fn protected_refusal(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: String,
        message: String,
    }
    serde_json::from_str::<Refusal>(body)
        .ok()
        .filter(|r| r.error == "protected")
        .map(|r| r.message)
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
        if let AgentError::Status {
            status: 403, body, ..
        } = &e
            && let Some(message) = protected_refusal(body)
        {
            return AgentCallError::Protected {
                agent: self.url.clone(),
                message,
            };
        }
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

    fn check(&self, request: FaultRequest) -> BoxFuture<'_, Result<String, AgentCallError>> {
        Box::pin(async move {
            self.api
                .check(&self.url, &request)
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
