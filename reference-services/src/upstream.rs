//! Calls to an upstream service, wrapped in the resilience policies the configuration keeps
//! (none with `FL_RESILIENCE=off`), with client metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultline_http::{Client, ClientError, ClientResponse, Method};
use faultline_resilience::Event;
use faultline_resilience::balance::{Balancer, BalancerConfig, Pick};
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

/// How long a call without any timeout waits: as long as the upstream takes.
const NAIVE_WAIT: Duration = Duration::from_secs(3600);

/// How an upstream is called. Every policy is optional, so each can be removed on its own.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPolicy {
    /// Per-attempt timeout; `None` waits as long as the upstream takes.
    pub attempt_timeout: Option<Duration>,
    /// Overall deadline, retries included.
    pub deadline: Option<Duration>,
    /// Retries after the first attempt; 0 for non-idempotent calls.
    pub retries: u32,
    /// Whether a retry budget (20% of requests + 5/s) caps the retries.
    pub retry_budget: bool,
    /// How long the breaker stays open before it probes; `None`: no breaker.
    pub breaker_open: Option<Duration>,
    /// p2c over peak-EWMA with passive ejection, and failover past a refused connection;
    /// round robin otherwise.
    pub balancing: bool,
    /// Whether every attempt carries its own idempotency key (the `idempotency` policy
    /// removed): a retry is then a new operation to the upstream.
    pub fresh_keys: bool,
}

impl UpstreamPolicy {
    /// No policy at all: one attempt, no timeout, no breaker, round robin.
    pub const NAIVE: UpstreamPolicy = UpstreamPolicy {
        attempt_timeout: None,
        deadline: None,
        retries: 0,
        retry_budget: false,
        breaker_open: None,
        balancing: false,
        fresh_keys: false,
    };
}

/// A client for one upstream service: endpoints balanced by p2c, plus the policy stack.
pub struct Upstream {
    name: Service,
    endpoints: Balancer<String>,
    client: Client,
    stack: Stack,
    breaker: Option<CircuitBreaker>,
    balancing: bool,
    fresh_keys: Option<AtomicU64>,
    metrics: ServiceMetrics,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("breaker", &self.breaker.is_some())
            .finish_non_exhaustive()
    }
}

/// The header that makes a reservation or a charge safe to repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response of a call that produced one (any status below 500 except 429).
pub type Reply = ClientResponse;

impl Upstream {
    /// A client for `name` at `endpoints`, calling through the layers `policy` keeps. With
    /// [`UpstreamPolicy::NAIVE`] (`FL_RESILIENCE=off`) calls go straight through.
    pub fn new(
        name: Service,
        endpoints: Vec<String>,
        policy: UpstreamPolicy,
        metrics: ServiceMetrics,
    ) -> Result<Self, faultline_resilience::ConfigError> {
        let balancer =
            Balancer::try_new(endpoints, BalancerConfig::default())?.with_name(name.name());
        let sink_metrics = metrics.clone();
        let sink: Arc<dyn faultline_resilience::EventSink> =
            Arc::new(move |e: &Event<'_>| on_event(&sink_metrics, e));
        metrics.register_upstream(name.name());
        let mut stack = Stack::new();
        let breaker = match policy.breaker_open {
            None => None,
            Some(open_wait) => {
                let breaker = CircuitBreaker::builder()
                    .name(name.name())
                    .time_window(Duration::from_secs(5), 10)
                    .minimum_calls(10)
                    .failure_rate(0.5)
                    .open_wait(open_wait)
                    .half_open_calls(3)
                    .half_open_max_concurrent(1)
                    .event_sink(Arc::clone(&sink))
                    .build()?;
                metrics.register_breaker(name.name());
                stack = stack.breaker(breaker.clone());
                Some(breaker)
            }
        };
        if let Some(t) = policy.attempt_timeout {
            stack = stack.attempt_timeout(t)?;
        }
        if let Some(d) = policy.deadline {
            stack = stack.deadline(d)?;
        }
        if policy.retries > 0 {
            let mut retry = Retry::builder(Backoff::try_new(
                BackoffKind::EqualJitter,
                Duration::from_millis(10),
                Duration::from_millis(100),
            )?)
            .name(name.name())
            .max_attempts(policy.retries + 1)
            .event_sink(sink);
            if policy.retry_budget {
                retry = retry.budget(Arc::new(RetryBudget::try_new(
                    Duration::from_secs(10),
                    5,
                    0.2,
                )?));
            }
            stack = stack.retry(retry.build()?);
        }
        // The transport's own limits sit at the policy's, or wait as long as the upstream takes.
        let longest = policy
            .attempt_timeout
            .into_iter()
            .chain(policy.deadline)
            .max();
        let client = Client::new(faultline_http::ClientConfig {
            request_timeout: longest.unwrap_or(NAIVE_WAIT),
            connect_timeout: policy.attempt_timeout.or(longest).unwrap_or(NAIVE_WAIT),
            ..Default::default()
        });
        Ok(Upstream {
            name,
            endpoints: balancer,
            client,
            stack,
            breaker,
            balancing: policy.balancing,
            fresh_keys: policy.fresh_keys.then(|| AtomicU64::new(0)),
            metrics,
        })
    }

    /// The upstream this client calls.
    pub fn name(&self) -> Service {
        self.name
    }

    /// The breaker state, `None` without a breaker.
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
        self.call_until(None, method, path, body, headers).await
    }

    /// [`Upstream::call`] that also ends at `until`, the caller's deadline, through the
    /// stack's deadline (no backoff past it, each attempt cut at it, the breaker told);
    /// one already passed makes no call and is a timeout.
    pub async fn call_until(
        &self,
        until: Option<tokio::time::Instant>,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, UpstreamError> {
        let once = || self.attempt(method, path, body.clone(), headers);
        self.stack
            .call_until(
                until,
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
            .await
            .map_err(|e| self.policy_error(e))
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

    /// One attempt of a call. With balancing, an endpoint that refuses the connection (a
    /// replica draining or restarting) is passed over for another one within the attempt:
    /// nothing was sent, so this is safe for any method, placements included. Each endpoint
    /// is tried at most once per attempt.
    async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, UpstreamError> {
        let tries = if self.balancing {
            self.endpoints.len()
        } else {
            1
        };
        let mut tried = Vec::new();
        loop {
            let result = self
                .attempt_once(method, path, body.clone(), headers, &tried)
                .await;
            match result {
                Err((UpstreamError::Transport { source, upstream }, index))
                    if source.is_retry_safe() && tried.len() + 1 < tries =>
                {
                    tried.push(index);
                    tracing::debug!(%upstream, error = %source, "endpoint refused; trying another");
                }
                other => return other.map_err(|(e, _)| e),
            }
        }
    }

    /// Sends one request to one endpoint, not one of `tried` where another is left. The
    /// error comes with the endpoint's index.
    async fn attempt_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
        tried: &[usize],
    ) -> Result<Reply, (UpstreamError, usize)> {
        let pick = if self.balancing {
            self.endpoints.pick_p2c_except(tried)
        } else {
            self.endpoints.pick_round_robin()
        };
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", pick.value()));
        for (k, v) in headers {
            match &self.fresh_keys {
                Some(n) if k.eq_ignore_ascii_case(IDEMPOTENCY_KEY) => {
                    let n = n.fetch_add(1, Ordering::Relaxed);
                    req = req.header(*k, format!("{v}-attempt-{n}"));
                }
                _ => req = req.header(*k, *v),
            }
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
        let index = pick.index();
        let elapsed = guard.start.elapsed();
        let upstream = self.name;
        match result {
            // The upstream failed fast on purpose (its own breaker is open): it is healthy and
            // answered, so this is no failure for our breaker, and retrying is pointless.
            Ok(resp) if resp.header(crate::services::SHED_HEADER).is_some() => {
                self.settle(pick, elapsed, true);
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::ServerError,
                    Some(elapsed),
                );
                Ok(resp)
            }
            Ok(resp) if resp.status() >= 500 || resp.status() == 429 => {
                self.settle(pick, elapsed, false);
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::ServerError,
                    Some(elapsed),
                );
                Err((
                    UpstreamError::Status {
                        upstream,
                        status: resp.status(),
                    },
                    index,
                ))
            }
            Ok(resp) => {
                self.settle(pick, elapsed, true);
                self.metrics.observe_client_request(
                    upstream.name(),
                    ClientOutcome::Success,
                    Some(elapsed),
                );
                Ok(resp)
            }
            Err(source) => {
                self.settle(pick, elapsed, false);
                let outcome = if source.is_timeout() {
                    ClientOutcome::Timeout
                } else if source.is_connect() {
                    ClientOutcome::ConnectError
                } else {
                    ClientOutcome::ServerError
                };
                self.metrics
                    .observe_client_request(upstream.name(), outcome, Some(elapsed));
                Err((UpstreamError::Transport { upstream, source }, index))
            }
        }
    }

    /// Tells the balancer how a call went: its latency estimate and its ejection. Round
    /// robin (the `balancing` policy removed) learns nothing and ejects nothing.
    fn settle(&self, pick: Pick<'_, String>, elapsed: Duration, ok: bool) {
        match (self.balancing, ok) {
            (false, _) => drop(pick),
            (true, true) => pick.success(elapsed),
            (true, false) => pick.failure(elapsed),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use faultline_http::{Request, Response, Router, Server};

    use super::*;

    /// A loopback server answering every `POST /charge` with 500, recording the idempotency
    /// key of each attempt it saw.
    async fn failing_server() -> (String, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = Router::new().post("/charge", move |req: &Request<'_>| {
            let key = req.header_str(IDEMPOTENCY_KEY).unwrap_or("").to_string();
            log.lock().unwrap().push(key);
            Response::error(500, "down")
        });
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(server.serve(app));
        (addr, seen)
    }

    async fn keys_sent(policy: UpstreamPolicy) -> (Vec<String>, Option<State>) {
        let (addr, seen) = failing_server().await;
        let metrics = crate::observe::Observability::new("orders").metrics;
        let up = Upstream::new(Service::Payments, vec![addr], policy, metrics).unwrap();
        let r = up
            .call(
                Method::Post,
                "/charge",
                None,
                &[(IDEMPOTENCY_KEY, "order-7")],
            )
            .await;
        assert!(matches!(r, Err(UpstreamError::Status { status: 500, .. })));
        let keys = seen.lock().unwrap().clone();
        (keys, up.breaker_state())
    }

    fn resilient() -> UpstreamPolicy {
        UpstreamPolicy {
            attempt_timeout: Some(Duration::from_millis(500)),
            deadline: Some(Duration::from_millis(1500)),
            retries: 2,
            retry_budget: true,
            breaker_open: Some(Duration::from_secs(2)),
            balancing: true,
            fresh_keys: false,
        }
    }

    #[tokio::test]
    async fn retries_repeat_the_same_key_and_fresh_keys_make_each_attempt_new() {
        let (keys, breaker) = keys_sent(resilient()).await;
        assert_eq!(keys, ["order-7"; 3]);
        assert_eq!(breaker, Some(State::Closed));
        let (keys, _) = keys_sent(UpstreamPolicy {
            fresh_keys: true,
            ..resilient()
        })
        .await;
        assert_eq!(keys.len(), 3);
        assert!(
            keys.iter().all(|k| k.starts_with("order-7-attempt-")),
            "{keys:?}"
        );
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), 3, "{keys:?}");
    }

    /// An address nothing listens on: connections to it are refused.
    async fn refusing_address() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn with_balancing_a_refused_connect_is_tried_on_another_endpoint_without_retries() {
        let app = Router::new().post("/orders", |_: &Request<'_>| Response::json(&"placed"));
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let live = server.local_addr().unwrap().to_string();
        tokio::spawn(server.serve(app));
        let dead = refusing_address().await;
        let placed = |policy: UpstreamPolicy| {
            let (live, dead) = (live.clone(), dead.clone());
            async move {
                let metrics = crate::observe::Observability::new("gateway").metrics;
                let up = Upstream::new(Service::Orders, vec![dead, live], policy, metrics).unwrap();
                let mut ok = 0;
                for _ in 0..20 {
                    ok += usize::from(up.call(Method::Post, "/orders", None, &[]).await.is_ok());
                }
                ok
            }
        };
        // The gateway's placement policy: no retries (a placement is not idempotent), so only
        // the failover can save the calls that pick the refusing replica.
        let balanced = UpstreamPolicy {
            balancing: true,
            ..UpstreamPolicy::NAIVE
        };
        assert_eq!(placed(balanced).await, 20);
        // Round robin without failover loses every other placement.
        assert_eq!(placed(UpstreamPolicy::NAIVE).await, 10);
    }

    #[tokio::test]
    async fn removing_retries_or_the_breaker_removes_only_that_layer() {
        let (keys, breaker) = keys_sent(UpstreamPolicy {
            retries: 0,
            ..resilient()
        })
        .await;
        assert_eq!(keys, ["order-7"]);
        assert_eq!(breaker, Some(State::Closed));
        let (keys, breaker) = keys_sent(UpstreamPolicy {
            breaker_open: None,
            ..resilient()
        })
        .await;
        assert_eq!(keys.len(), 3);
        assert_eq!(breaker, None);
        let (keys, breaker) = keys_sent(UpstreamPolicy::NAIVE).await;
        assert_eq!(keys, ["order-7"]);
        assert_eq!(breaker, None);
    }
}
