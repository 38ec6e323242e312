//! The five services' handlers and state.

pub mod gateway;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faultline_http::{Handler, OwnedRequest, Response, Router, handler_fn};
use serde::de::DeserializeOwned;

use crate::config::ServiceConfig;
use crate::observe::Observability;
use crate::{Service, upstream::UpstreamError};

/// Why a service could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A resilience policy rejected its settings.
    #[error("invalid resilience settings: {0}")]
    Policy(#[from] faultline_resilience::ConfigError),
}

/// A built service: its routes and the background tasks it needs.
pub struct Built {
    /// The routes, without `/metrics`, `/healthz` and middleware (added by `serve`).
    pub router: Router,
    /// Background work (degradation evaluation, queue workers) run until shutdown.
    pub background: Vec<Background>,
}

/// A service's background task, run until shutdown.
pub type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds `config.service`.
pub fn build(config: &ServiceConfig, obs: &Observability) -> Result<Built, BuildError> {
    match config.service {
        Service::Gateway => gateway::build(config, obs),
        Service::Orders => orders::build(config, obs),
        Service::Inventory => Ok(inventory::build(config)),
        Service::Payments => Ok(payments::build(config, obs)),
        Service::Notifications => Ok(notifications::build(config, obs)),
    }
}

/// An async handler that passes each request to `f` with its own `Arc` of `state`, so the
/// returned future owns what it uses.
pub(crate) fn with_state<T, F, Fut>(state: &Arc<T>, f: F) -> impl Handler + use<T, F, Fut>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, OwnedRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let state = Arc::clone(state);
    handler_fn(move |req: OwnedRequest| f(Arc::clone(&state), req))
}

/// The task that re-evaluates a service's degradation level (`evaluate`) every 200 ms.
pub(crate) fn degradation_ticker<T>(state: Arc<T>, evaluate: fn(&T)) -> Background
where
    T: Send + Sync + 'static,
{
    Box::pin(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            evaluate(&state);
        }
    })
}

/// Parses a JSON request body, or the 400 to answer with.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            format!("malformed JSON: {e}")
        };
        Response::error(if e.is_data() { 422 } else { 400 }, &msg)
    })
}

/// Response header naming the upstream whose open breaker made this service fail fast.
pub const SHED_HEADER: &str = "x-shed-by-breaker";

/// The response for a failed upstream call: 503 when shed by a breaker, 504 on timeouts, the
/// upstream's own 5xx/429 when it answered one, 502 otherwise.
pub(crate) fn upstream_failure(e: &UpstreamError) -> Response {
    if let UpstreamError::BreakerOpen { upstream } = e {
        // Marks a deliberate fast failure, so our own callers' breakers do not count a shed
        // request against this (healthy) service and cascade the outage upwards.
        return Response::error(503, &e.to_string()).with_header(
            SHED_HEADER,
            faultline_http::HeaderValue::from_static(upstream.name()),
        );
    }
    let status = match e {
        UpstreamError::BreakerOpen { .. } | UpstreamError::Rejected { .. } => 503,
        UpstreamError::Status { status, .. } => *status,
        e if e.is_timeout() => 504,
        _ => 502,
    };
    Response::error(status, &e.to_string())
}
