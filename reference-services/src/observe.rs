//! RED metrics, `/metrics`, `/healthz` and the degradation header shared by every service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use faultline_http::middleware::{Completed, Ctx, Middleware, Timing};
use faultline_http::{HeaderValue, Request, Response, Router};
use faultline_telemetry::ServiceMetrics;

use crate::deadline::DeadlineGuard;
use prometheus_client::registry::Registry;

/// Response header carrying the service's current degradation level (`0`..`3`).
pub const DEGRADATION_HEADER: &str = "x-degradation-level";

/// Route label for requests no route matched (404/405), so raw paths never become labels.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A service's metrics and the registry they are exposed from.
#[derive(Clone)]
pub struct Observability {
    /// The RED and resilience metric families.
    pub metrics: ServiceMetrics,
    registry: Arc<Registry>,
    level: Arc<AtomicU8>,
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("service", &self.metrics.service().as_str())
            .finish_non_exhaustive()
    }
}

impl Observability {
    /// Registers the fleet metric families for `service`.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::default();
        let metrics = ServiceMetrics::register(service, &mut registry);
        Observability {
            metrics,
            registry: Arc::new(registry),
            level: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Sets the degradation level shown in the gauge and the response header.
    pub fn set_level(&self, level: u8) {
        if self.level.swap(level, Ordering::Relaxed) != level {
            tracing::info!(level, "degradation level changed");
        }
        self.metrics.set_degradation_level(level);
    }

    /// The current degradation level.
    pub fn level(&self) -> u8 {
        self.level.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn exposition(&self) -> Response {
        match faultline_telemetry::encode(&self.registry) {
            Ok(text) => Response::text(text)
                .with_content_type(HeaderValue::from_static(faultline_telemetry::CONTENT_TYPE)),
            Err(e) => Response::error(500, &e.to_string()),
        }
    }

    /// Adds `/metrics` and `/healthz`, the RED and degradation-header middleware, and the
    /// deadline check ([`DeadlineGuard`]: late requests refused when `enforce_deadlines`,
    /// counted either way) to `router`.
    pub fn instrument(&self, router: Router, enforce_deadlines: bool) -> Router {
        let metrics_obs = self.clone();
        let red = self.metrics.clone();
        router
            .get("/metrics", move |_: &Request<'_>| metrics_obs.exposition())
            .get("/healthz", |_: &Request<'_>| {
                Response::text("ok").with_content_type(HeaderValue::from_static("text/plain"))
            })
            .layer(Timing::new(move |c: &Completed<'_>| {
                red.observe_server_request(
                    c.route.unwrap_or(UNMATCHED_ROUTE),
                    c.method.as_str(),
                    c.status,
                    c.elapsed,
                );
            }))
            .layer(LevelHeader {
                level: Arc::clone(&self.level),
            })
            // Last, so the RED metrics and the level header see the 504 of a late request.
            .layer(DeadlineGuard {
                enforce: enforce_deadlines,
                metrics: self.metrics.clone(),
            })
    }
}

/// Adds [`DEGRADATION_HEADER`] to every response.
struct LevelHeader {
    level: Arc<AtomicU8>,
}

impl Middleware for LevelHeader {
    fn after(&self, _req: &Request<'_>, _ctx: &Ctx, resp: &mut Response) {
        resp.append_header(
            DEGRADATION_HEADER,
            HeaderValue::from_u64(u64::from(self.level.load(Ordering::Relaxed))),
        );
    }
}
