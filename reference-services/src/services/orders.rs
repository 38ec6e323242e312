//! orders: the order workflow. Reserves stock (critical, retried with the order's idempotency
//! key), charges payments (critical, retried with the same key) and notifies (non-critical:
//! a failure is logged and counted, never fails the order, and is shed at degradation L2 and
//! above). `FL_DISABLE` removes each of these policies on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultline_http::{Method, OwnedRequest, Response, Router};
use faultline_resilience::degradation::{
    CallResult, DegradationConfig, DegradationController, Level,
};
use faultline_telemetry::ClientOutcome;
use serde::{Deserialize, Serialize};

use super::{BuildError, Built, degradation_ticker, parse_body, upstream_failure, with_state};
use crate::Service;
use crate::config::{Disabled, Policy, ServiceConfig};
use crate::deadline::{DEADLINE_HEADER, Deadline};
use crate::observe::Observability;
use crate::upstream::{Upstream, UpstreamError, UpstreamPolicy};

/// Price of one unit, in cents.
pub const UNIT_PRICE_CENTS: u64 = 1299;

/// `POST /orders` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub qty: u64,
}

/// A placed order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// The SKU.
    pub sku: String,
    /// Units.
    pub qty: u64,
    /// Amount charged, in cents.
    pub amount_cents: u64,
    /// The payment's id.
    pub payment_id: String,
    /// Whether the notification was accepted (false when it failed or was shed).
    pub notified: bool,
}

struct Orders {
    disabled: Disabled,
    next_id: AtomicU64,
    orders: Mutex<HashMap<u64, Order>>,
    inventory: Upstream,
    payments: Upstream,
    notifications: Upstream,
    degradation: Option<DegradationController>,
    obs: Observability,
}

/// Builds the orders service.
pub fn build(config: &ServiceConfig, obs: &Observability) -> Result<Built, BuildError> {
    let off = &config.disabled;
    let critical = |to: Service| UpstreamPolicy {
        attempt_timeout: off
            .keeps(Policy::AttemptTimeout)
            .then_some(config.attempt_timeout),
        deadline: off
            .keeps(Policy::Deadline)
            .then_some(config.attempt_timeout * 3),
        retries: if off.keeps(Policy::Retries) { 2 } else { 0 },
        retry_budget: off.keeps(Policy::RetryBudget),
        breaker_open: config.breaker_on(to),
        balancing: off.keeps(Policy::Balancing),
        fresh_keys: off.has(Policy::Idempotency),
    };
    let notify_timeout = off
        .keeps(Policy::NotifyTimeout)
        .then_some(config.notify_timeout);
    let non_critical = UpstreamPolicy {
        attempt_timeout: notify_timeout,
        deadline: notify_timeout,
        breaker_open: config.breaker_on(Service::Notifications),
        balancing: off.keeps(Policy::Balancing),
        ..UpstreamPolicy::NAIVE
    };
    let endpoints = |s: Service| config.upstreams.get(&s).cloned().unwrap_or_default();
    // orders' level only drives notification shedding: without it there is no controller and
    // the level stays 0.
    let degradation = if off.keeps(Policy::Shedding) {
        Some(
            DegradationController::try_new(DegradationConfig {
                window: Duration::from_secs(5),
                hold: Duration::from_secs(3),
                ..DegradationConfig::default()
            })?
            .with_name("orders"),
        )
    } else {
        None
    };
    let state = Arc::new(Orders {
        disabled: off.clone(),
        next_id: AtomicU64::new(1),
        orders: Mutex::new(HashMap::new()),
        inventory: Upstream::new(
            Service::Inventory,
            endpoints(Service::Inventory),
            critical(Service::Inventory),
            obs.metrics.clone(),
        )?,
        payments: Upstream::new(
            Service::Payments,
            endpoints(Service::Payments),
            critical(Service::Payments),
            obs.metrics.clone(),
        )?,
        notifications: Upstream::new(
            Service::Notifications,
            endpoints(Service::Notifications),
            non_critical,
            obs.metrics.clone(),
        )?,
        degradation,
        obs: obs.clone(),
    });
    let router = Router::new()
        .post(
            "/orders",
            with_state(&state, |s, req| async move { s.place(req).await }),
        )
        .get(
            "/orders/{id}",
            with_state(&state, |s, req| async move { s.get(&req) }),
        )
        .get(
            "/readyz",
            with_state(&state, |s, _| async move { s.ready().await }),
        );
    let background = if state.degradation.is_some() {
        vec![degradation_ticker(state, Orders::evaluate_level)]
    } else {
        Vec::new()
    };
    Ok(Built { router, background })
}

impl Orders {
    fn evaluate_level(&self) {
        let Some(ctrl) = &self.degradation else {
            return;
        };
        let mut level = ctrl.evaluate();
        // A non-critical upstream behind an open breaker is being shed: that is L2 by
        // definition, even while the overall error rate has not crossed its threshold.
        if !matches!(
            self.notifications.breaker_state(),
            None | Some(faultline_resilience::breaker::State::Closed)
        ) {
            level = level.max(Level::L2);
        }
        self.obs.set_level(level.as_gauge() as u8);
    }

    fn record(
        &self,
        started: Instant,
        result: &Result<faultline_http::ClientResponse, UpstreamError>,
    ) {
        if let Some(ctrl) = &self.degradation {
            let r = match result {
                Ok(_) => CallResult::Ok,
                Err(e) if e.is_timeout() => CallResult::Timeout,
                Err(UpstreamError::BreakerOpen { .. }) => return,
                Err(_) => CallResult::Error,
            };
            ctrl.record(started.elapsed(), r);
        }
    }

    /// Calls `upstream` with the order's idempotency key, passing the caller's deadline on.
    /// With the `deadline` policy the call ends at that deadline (through the upstream's
    /// policy stack), and is not made at all once it has passed.
    async fn call(
        &self,
        upstream: &Upstream,
        path: &str,
        body: Bytes,
        key: &str,
        deadline: Option<Deadline>,
    ) -> Result<faultline_http::ClientResponse, UpstreamError> {
        let until = deadline
            .filter(|_| self.disabled.keeps(Policy::Deadline))
            .map(|d| tokio::time::Instant::now() + d.remaining().unwrap_or_default());
        let value = deadline.map(Deadline::header_value);
        let mut headers = vec![(crate::upstream::IDEMPOTENCY_KEY, key)];
        headers.extend(value.as_deref().map(|v| (DEADLINE_HEADER, v)));
        let started = Instant::now();
        let r = upstream
            .call_until(until, Method::Post, path, Some(body), &headers)
            .await;
        self.record(started, &r);
        r
    }

    async fn place(&self, req: OwnedRequest) -> Response {
        let body: OrderRequest = match parse_body(req.body()) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if body.qty == 0 || body.qty > 1000 {
            return Response::error(422, "qty must be between 1 and 1000");
        }
        if body.sku.is_empty() || body.sku.len() > 64 {
            return Response::error(422, "sku must be 1 to 64 characters");
        }
        let deadline = Deadline::from_header(req.header_str(DEADLINE_HEADER));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = format!("order-{id}");
        let reserve = serde_json::json!({"sku": body.sku, "qty": body.qty}).to_string();
        match self
            .call(
                &self.inventory,
                "/reserve",
                Bytes::from(reserve),
                &key,
                deadline,
            )
            .await
        {
            Ok(r) if r.status() == 404 => {
                return Response::error(422, &format!("unknown SKU {:?}", body.sku));
            }
            Ok(r) if r.status() == 409 => {
                return Response::error(409, &format!("insufficient stock for {:?}", body.sku));
            }
            Ok(r) if !r.is_success() => {
                return Response::error(502, &format!("inventory answered {}", r.status()));
            }
            Ok(_) => {}
            Err(e) => return upstream_failure(&e),
        }
        let amount = body.qty * UNIT_PRICE_CENTS;
        let charge = serde_json::json!({"order_id": id, "amount_cents": amount}).to_string();
        let payment_id = match self
            .call(
                &self.payments,
                "/charge",
                Bytes::from(charge),
                &key,
                deadline,
            )
            .await
        {
            Ok(r) if r.is_success() => match r.json::<serde_json::Value>() {
                Ok(v) => v["id"].as_str().unwrap_or_default().to_string(),
                Err(_) => return Response::error(502, "payments answered an invalid body"),
            },
            Ok(r) => return Response::error(502, &format!("payments answered {}", r.status())),
            Err(e) => return upstream_failure(&e),
        };
        let notified = match self.notify(id, &key, deadline).await {
            Ok(n) => n,
            Err(resp) => return resp,
        };
        let order = Order {
            id,
            sku: body.sku,
            qty: body.qty,
            amount_cents: amount,
            payment_id,
            notified,
        };
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, order.clone());
        Response::json_with_status(201, &order)
    }

    /// Notifies about order `id`. While notifications are non-critical this never fails the
    /// order; without that policy a failure propagates, as naive `?` error handling would.
    async fn notify(
        &self,
        id: u64,
        key: &str,
        deadline: Option<Deadline>,
    ) -> Result<bool, Response> {
        let non_critical = self.disabled.keeps(Policy::NotifyNonCritical);
        // Shedding skips notifications at L2, except while their breaker has tripped: the
        // breaker then rejects at once by itself, and only a call reaching it lets it
        // probe after its wait and close. Shedding those calls too would keep the breaker
        // open, and so the level at L2, for good after one outage.
        let breaker_tripped = !matches!(
            self.notifications.breaker_state(),
            None | Some(faultline_resilience::breaker::State::Closed)
        );
        if self.obs.level() >= 2 && self.disabled.keeps(Policy::Shedding) && !breaker_tripped {
            self.obs.metrics.observe_client_request(
                Service::Notifications.name(),
                ClientOutcome::Rejected,
                None,
            );
            return Ok(false);
        }
        let msg = serde_json::json!({"order_id": id, "message": "order placed"}).to_string();
        match self
            .call(
                &self.notifications,
                "/notify",
                Bytes::from(msg),
                key,
                deadline,
            )
            .await
        {
            Ok(r) if r.is_success() => Ok(true),
            Ok(r) if non_critical => {
                tracing::warn!(
                    order = id,
                    status = r.status(),
                    "notification rejected; order kept"
                );
                Ok(false)
            }
            Ok(r) => Err(Response::error(
                502,
                &format!("notifications answered {}", r.status()),
            )),
            Err(e) if non_critical => {
                tracing::warn!(order = id, error = %e, "notification failed; order kept");
                Ok(false)
            }
            Err(e) => Err(upstream_failure(&e)),
        }
    }

    fn get(&self, req: &OwnedRequest) -> Response {
        let Some(id) = req.param("id").and_then(|s| s.parse::<u64>().ok()) else {
            return Response::error(400, "order id must be a positive integer");
        };
        match self
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
        {
            Some(o) => Response::json(o),
            None => Response::error(404, &format!("order {id} not found")),
        }
    }

    /// Ready when both critical upstreams answer `/healthz` and neither breaker is open.
    async fn ready(&self) -> Response {
        for up in [&self.inventory, &self.payments] {
            if up.is_open() {
                return Response::error(503, &format!("{} circuit breaker is open", up.name()));
            }
            if let Err(e) = up.probe().await {
                return Response::error(503, &format!("{} not reachable: {e}", up.name()));
            }
        }
        Response::json(&serde_json::json!({"ready": true}))
    }
}
