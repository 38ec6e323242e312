//! Calls to an upstream service, wrapped in the resilience policies (or in none with
//! `FL_RESILIENCE=off`), with client metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultline_http::{Client, ClientError, ClientResponse, Method};
use faultline_resilience::Event;
use faultline_resilience::balance::{Balancer, BalancerConfig};
use faultline_resilience::breaker::{CircuitBreaker, Outcome, State};
use faultline_resilience::retry::{Backoff, BackoffKind, Retry, RetryBudget, RetryDecision};
use faultline_resilience::stack::Stack;
use faultline_telemetry::{BreakerStateValue, ClientOutcome, ServiceMetrics};

use crate::Service;

/// Why an upstream call produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with a 5xx (or 429).
    #[error("{upstream} answered {status}")]
    Status {
        /// The upstream.
        upstream: Service,
        /// Its status code.
        status: u16,
    },
    /// The transport failed.
    #[error("{upstream}: {source}")]
    Transport {
        /// The upstream.
        upstream: Service,
        /// The client error.
        source: ClientError,
    },
    /// A policy timed out the call.
    #[error("{upstream} timed out")]
    Timeout {
        /// The upstream.
        upstream: Service,
    },
    /// The breaker is open: the call was not made.
    #[error("{upstream} circuit breaker is open")]
    BreakerOpen {
        /// The upstream.
        upstream: Service,
    },
    /// Another policy rejected the call (bulkhead, deadline).
    #[error("{upstream} call rejected: {reason}")]
    Rejected {
        /// The upstream.
        upstream: Service,
        /// Which policy.
        reason: String,
    },
}

impl UpstreamError {
    /// Whether the call failed by timing out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout { .. })
            || matches!(self, UpstreamError::Transport { source, .. } if source.is_timeout())
    }
}

/// How an upstream is called.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPolicy {
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
    /// Overall deadline, retries included.
    pub deadline: Duration,
    /// Retries after the first attempt; 0 for non-idempotent calls.
    pub retries: u32,
    /// How long the breaker stays open before it probes.
    pub breaker_open: Duration,
}

/// A client for one upstream service: endpoints balanced by p2c, plus the policy stack.
pub struct Upstream {
    name: Service,
    endpoints: Balancer<String>,
    client: Client,
    stack: Option<Stack>,
    breaker: Option<CircuitBreaker>,
    metrics: ServiceMetrics,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("resilience", &self.stack.is_some())
            .finish_non_exhaustive()
    }
}

/// The response of a call that produced one (any status below 500 except 429).
pub type Reply = ClientResponse;

impl Upstream {
    /// A client for `name` at `endpoints`. With `policy == None` (`FL_RESILIENCE=off`) calls go
    /// straight through: no timeout, retry, breaker or balancing beyond round robin.
    pub fn new(
        name: Service,
        endpoints: Vec<String>,
        policy: Option<UpstreamPolicy>,
        metrics: ServiceMetrics,
    ) -> Result<Self, faultline_resilience::ConfigError> {
        let balancer =
            Balancer::try_new(endpoints, BalancerConfig::default())?.with_name(name.name());
        let (stack, breaker, client) = match policy {
            None => {
                // The naive client: it waits as long as the upstream takes.
                let client = Client::new(faultline_http::ClientConfig {
                    request_timeout: Duration::from_secs(3600),
                    connect_timeout: Duration::from_secs(3600),
                    ..Default::default()
                });
                (None, None, client)
            }
            Some(p) => {
                let sink_metrics = metrics.clone();
                let sink: Arc<dyn faultline_resilience::EventSink> =
                    Arc::new(move |e: &Event<'_>| on_event(&sink_metrics, e));
                let breaker = CircuitBreaker::builder()
                    .name(name.name())
                    .time_window(Duration::from_secs(5), 10)
                    .minimum_calls(10)
                    .failure_rate(0.5)
                    .open_wait(p.breaker_open)
                    .half_open_calls(3)
                    .half_open_max_concurrent(1)
                    .event_sink(Arc::clone(&sink))
                    .build()?;
                metrics.register_breaker(name.name());
                let mut stack = Stack::new()
                    .breaker(breaker.clone())
                    .attempt_timeout(p.attempt_timeout)?
                    .deadline(p.deadline)?;
                if p.retries > 0 {
                    let budget = Arc::new(RetryBudget::try_new(Duration::from_secs(10), 5, 0.2)?);
                    let retry = Retry::builder(Backoff::try_new(
                        BackoffKind::EqualJitter,
                        Duration::from_millis(10),
                        Duration::from_millis(100),
                    )?)
                    .name(name.name())
                    .max_attempts(p.retries + 1)
                    .budget(budget)
                    .event_sink(sink)
                    .build()?;
                    stack = stack.retry(retry);
                }
                let client = Client::new(faultline_http::ClientConfig {
                    request_timeout: p.attempt_timeout.max(p.deadline),
                    connect_timeout: p.attempt_timeout,
                    ..Default::default()
                });
                (Some(stack), Some(breaker), client)
            }
        };
        Ok(Upstream {
            name,
            endpoints: balancer,
            client,
            stack,
            breaker,
            metrics,
        })
    }

    /// The upstream this client calls.
    pub fn name(&self) -> Service {
        self.name
    }

    /// The breaker state, `None` without resilience.
    pub fn breaker_state(&self) -> Option<State> {
        self.breaker.as_ref().map(CircuitBreaker::state)
    }

    /// Whether the breaker currently refuses calls.
    pub fn is_open(&self) -> bool {
        matches!(self.breaker_state(), Some(State::Open | State::ForcedOpen))
    }

    /// `GET /healthz` on one endpoint, outside every policy, for readiness checks: any answer
    /// below 500 within a second counts as reachable.
    pub async fn probe(&self) -> Result<(), ClientError> {
        let pick = self.endpoints.pick_round_robin();
        let url = format!("http://{}/healthz", pick.value());
        drop(pick);
        let resp = self
            .client
            .get(url)
            .timeout(Duration::from_secs(1))
            .send()
            .await?;
        if resp.status() >= 500 {
            return Err(ClientError::ResponseRead(std::io::Error::other(format!(
                "status {}",
                resp.status()
            ))));
        }
        Ok(())
    }

    /// Sends `method path` with an optional JSON body and headers. A 5xx or 429 is an error
    /// (and a breaker failure); retries happen only if the policy has any, which it has only
    /// for idempotent calls.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, UpstreamError> {
        let once = || self.attempt(method, path, body.clone(), headers);
        match &self.stack {
            None => once().await,
            Some(stack) => {
                let result = stack
                    .call_with(
                        once,
                        |r: &Result<Reply, UpstreamError>| match r {
                            Ok(_) => Outcome::Success,
                            Err(_) => Outcome::Failure,
                        },
                        |r| match r {
                            Err(faultline_resilience::Error::Inner(_))
                            | Err(faultline_resilience::Error::Timeout(_)) => RetryDecision::Retry,
                            _ => RetryDecision::Done,
                        },
                    )
                    .await;
                result.map_err(|e| self.policy_error(e))
            }
        }
    }

    fn policy_error(&self, e: faultline_resilience::Error<UpstreamError>) -> UpstreamError {
        use faultline_resilience::Error as E;
        let upstream = self.name;
        match e {
            E::Inner(inner) => inner,
            // The timed-out attempt was counted by its `AttemptGuard` when it was dropped.
            E::Timeout(_) | E::DeadlineExceeded => UpstreamError::Timeout { upstream },
            E::BreakerOpen => {
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::ShortCircuit,
                    None,
                );
                UpstreamError::BreakerOpen { upstream }
            }
            other => {
                self.metrics
                    .observe_client_request(upstream.name(), ClientOutcome::Rejected, None);
                UpstreamError::Rejected {
                    upstream,
                    reason: other.to_string(),
                }
            }
        }
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, UpstreamError> {
        let pick = if self.stack.is_some() {
            self.endpoints.pick_p2c()
        } else {
            self.endpoints.pick_round_robin()
        };
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", pick.value()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let mut guard = AttemptGuard {
            metrics: &self.metrics,
            upstream: self.name,
            start: Instant::now(),
            done: false,
        };
        let result = req.send().await;
        guard.done = true;
        let elapsed = guard.start.elapsed();
        let upstream = self.name;
        match result {
            // The upstream failed fast on purpose (its own breaker is open): it is healthy and
            // answered, so this is no failure for our breaker, and retrying is pointless.
            Ok(resp) if resp.header(crate::services::SHED_HEADER).is_some() => {
                pick.success(elapsed);
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::ServerError,
                    Some(elapsed),
                );
                Ok(resp)
            }
            Ok(resp) if resp.status() >= 500 || resp.status() == 429 => {
                pick.failure(elapsed);
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::ServerError,
                    Some(elapsed),
                );
                Err(UpstreamError::Status {
                    upstream,
                    status: resp.status(),
                })
            }
            Ok(resp) => {
                pick.success(elapsed);
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::Success,
                    Some(elapsed),
                );
                Ok(resp)
            }
            Err(source) => {
                pick.failure(elapsed);
                let outcome = if source.is_timeout() {
                    ClientOutcome::Timeout
                } else if source.is_connect() {
                    ClientOutcome::ConnectError
                } else {
                    ClientOutcome::ServerError
                };
                self.metrics
                    .observe_client_request(upstream.name(), outcome, Some(elapsed));
                Err(UpstreamError::Transport { upstream, source })
            }
        }
    }
}

/// Counts an attempt that a policy timeout cancelled (its future dropped mid-flight) as a
/// `timeout` client outcome, so per-attempt timeouts show in `http_client_requests_total`.
struct AttemptGuard<'a> {
    metrics: &'a ServiceMetrics,
    upstream: Service,
    start: Instant,
    done: bool,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.observe_client_request(
                self.upstream.name(),
                ClientOutcome::Timeout,
                Some(self.start.elapsed()),
            );
        }
    }
}

/// Turns resilience events into the fleet's metrics.
fn on_event(metrics: &ServiceMetrics, event: &Event<'_>) {
    match event {
        Event::BreakerTransition { name, to, .. } => {
            let to = match to {
                State::Closed | State::Disabled => BreakerStateValue::Closed,
                State::HalfOpen => BreakerStateValue::HalfOpen,
                State::Open | State::ForcedOpen => BreakerStateValue::Open,
            };
            tracing::info!(upstream = name, to = to.as_str(), "breaker transition");
            metrics.breaker_transition(name, to);
        }
        Event::Retry { name, .. } => metrics.retry(name),
        _ => {}
    }
}
