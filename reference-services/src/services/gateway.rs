//! gateway: the public API. Rate limit (429) and a timeout budget in front of orders; at
//! degradation L1 and above `GET /api/orders/{id}` falls back to its response cache, which
//! holds the orders it created and the lookups it answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultline_http::{HeaderValue, Method, OwnedRequest, Response, Router};
use faultline_resilience::degradation::{CallResult, DegradationConfig, DegradationController};
use faultline_resilience::ratelimit::{Quota, RateLimiter};

use super::{BuildError, Built, SHED_HEADER, degradation_ticker, upstream_failure, with_state};
use crate::Service;
use crate::config::{Policy, ServiceConfig};
use crate::deadline::{DEADLINE_HEADER, Deadline};
use crate::observe::Observability;
use crate::upstream::{Upstream, UpstreamError, UpstreamPolicy};

/// Most cached order responses kept for the L1 fallback.
const CACHE_CAPACITY: usize = 10_000;

struct Gateway {
    orders: Upstream,
    /// The budget for each call to orders, sent on as its deadline.
    budget: Option<Duration>,
    limiter: Option<RateLimiter>,
    degradation: Option<DegradationController>,
    cache: Mutex<HashMap<String, Bytes>>,
    obs: Observability,
}

/// Builds the gateway.
pub fn build(config: &ServiceConfig, obs: &Observability) -> Result<Built, BuildError> {
    let off = &config.disabled;
    let budget = off
        .keeps(Policy::GatewayBudget)
        .then_some(config.gateway_budget);
    let policy = UpstreamPolicy {
        attempt_timeout: budget,
        deadline: budget,
        breaker_open: config.breaker_on(Service::Orders),
        balancing: off.keeps(Policy::Balancing),
        ..UpstreamPolicy::NAIVE
    };
    let endpoints = config
        .upstreams
        .get(&Service::Orders)
        .cloned()
        .unwrap_or_default();
    let limiter = if off.keeps(Policy::RateLimit) {
        // Bursts of at most 100 ms' worth: a burst of a whole second's worth would let a
        // surge in at twice the limit for its first second, which is what the limit is for.
        let burst = (config.rate_limit / 10).max(1);
        let quota = Quota::try_new(config.rate_limit, Duration::from_secs(1), burst)?;
        Some(RateLimiter::new(quota).with_name("gateway"))
    } else {
        None
    };
    // The gateway's level only drives its cache fallback: without it there is no controller
    // and the level stays 0.
    let degradation = if off.keeps(Policy::CacheFallback) {
        Some(
            DegradationController::try_new(DegradationConfig {
                window: Duration::from_secs(5),
                hold: Duration::from_secs(3),
                p99_threshold: Duration::from_millis(800),
                ..DegradationConfig::default()
            })?
            .with_name("gateway"),
        )
    } else {
        None
    };
    let state = Arc::new(Gateway {
        orders: Upstream::new(Service::Orders, endpoints, policy, obs.metrics.clone())?,
        budget,
        limiter,
        degradation,
        cache: Mutex::new(HashMap::new()),
        obs: obs.clone(),
    });
    let router = Router::new()
        .post(
            "/api/orders",
            with_state(&state, |s, req| async move { s.create(req).await }),
        )
        .get(
            "/api/orders/{id}",
            with_state(&state, |s, req| async move { s.fetch(req).await }),
        )
        .get(
            "/readyz",
            with_state(&state, |s, _| async move { s.ready().await }),
        );
    let background = if state.degradation.is_some() {
        vec![degradation_ticker(state, Gateway::evaluate_level)]
    } else {
        Vec::new()
    };
    Ok(Built { router, background })
}

/// Turns an upstream reply into the gateway's response, passing status, body and the
/// shed-by-breaker marker through.
fn relay(resp: &faultline_http::ClientResponse) -> Response {
    let mut out = Response::new(resp.status())
        .with_content_type(HeaderValue::from_static("application/json"))
        .with_body(resp.body().clone());
    if let Some(shed) = resp.header(SHED_HEADER) {
        out.append_header(SHED_HEADER, HeaderValue::from_bytes(shed));
    }
    out
}

impl Gateway {
    fn evaluate_level(&self) {
        if let Some(ctrl) = &self.degradation {
            self.obs.set_level(ctrl.evaluate().as_gauge() as u8);
        }
    }

    /// Ready when orders answers `/healthz` and its breaker is not open.
    async fn ready(&self) -> Response {
        if self.orders.is_open() {
            return Response::error(503, "orders circuit breaker is open");
        }
        match self.orders.probe().await {
            Ok(()) => Response::json(&serde_json::json!({"ready": true})),
            Err(e) => Response::error(503, &format!("orders not reachable: {e}")),
        }
    }

    fn admit(&self) -> Option<Response> {
        let limiter = self.limiter.as_ref()?;
        match limiter.check() {
            Ok(()) => None,
            Err(e) => Some(Response::error(429, "rate limit exceeded").with_header(
                "retry-after",
                HeaderValue::from_u64(e.retry_after.as_secs().max(1)),
            )),
        }
    }

    /// Calls orders within the budget, which travels with the call as its deadline.
    async fn call_orders(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<faultline_http::ClientResponse, UpstreamError> {
        let deadline = self.budget.map(|b| Deadline::after(b).header_value());
        let headers: Vec<(&str, &str)> = deadline
            .iter()
            .map(|d| (DEADLINE_HEADER, d.as_str()))
            .collect();
        self.orders.call(method, path, body, &headers).await
    }

    fn record(&self, started: Instant, r: &Result<faultline_http::ClientResponse, UpstreamError>) {
        if let Some(ctrl) = &self.degradation {
            let result = match r {
                Ok(resp) if resp.status() >= 500 => CallResult::Error,
                Ok(_) => CallResult::Ok,
                Err(e) if e.is_timeout() => CallResult::Timeout,
                Err(_) => CallResult::Error,
            };
            ctrl.record(started.elapsed(), result);
        }
    }

    async fn create(&self, req: OwnedRequest) -> Response {
        if let Some(rejected) = self.admit() {
            return rejected;
        }
        let started = Instant::now();
        let r = self
            .call_orders(Method::Post, "/orders", Some(req.body().clone()))
            .await;
        self.record(started, &r);
        match r {
            Ok(resp) => {
                if resp.status() == 201 {
                    if let Ok(v) = resp.json::<serde_json::Value>() {
                        if let Some(id) = v["id"].as_u64() {
                            self.remember(id.to_string(), resp.body().clone());
                        }
                    }
                }
                relay(&resp)
            }
            Err(e) => upstream_failure(&e),
        }
    }

    async fn fetch(&self, req: OwnedRequest) -> Response {
        if let Some(rejected) = self.admit() {
            return rejected;
        }
        let id = req.param("id").unwrap_or_default().to_string();
        if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Response::error(400, "order id must be a positive integer");
        }
        let started = Instant::now();
        let r = self
            .call_orders(Method::Get, &format!("/orders/{id}"), None)
            .await;
        self.record(started, &r);
        match r {
            Ok(resp) => {
                // Read-through: a lookup answered is remembered too, so an order read
                // often stays in the cache however long ago it was created (the cache
                // is emptied when full).
                if resp.status() == 200 {
                    self.remember(id, resp.body().clone());
                }
                relay(&resp)
            }
            Err(e) => match self.cached(&id) {
                // L1: a slow or failing orders service is answered from the cache.
                Some(body) if self.obs.level() >= 1 => Response::new(200)
                    .with_content_type(HeaderValue::from_static("application/json"))
                    .with_header("x-fallback", HeaderValue::from_static("cache"))
                    .with_body(body),
                _ => upstream_failure(&e),
            },
        }
    }

    fn remember(&self, id: String, body: Bytes) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(id, body);
    }

    fn cached(&self, id: &str) -> Option<Bytes> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}
