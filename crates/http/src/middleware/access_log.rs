//! Access log through `tracing`.

use super::{Ctx, Middleware};
use crate::request::Request;
use crate::response::Response;

/// Logs one `tracing` event per request at INFO, with method, route, path, status and duration.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLog;

impl Middleware for AccessLog {
    fn after(&self, req: &Request<'_>, ctx: &Ctx, resp: &mut Response) {
        tracing::info!(
            method = req.method().as_str(),
            route = req.route().unwrap_or(""),
            path = req.path(),
            status = resp.status(),
            micros = ctx.start().elapsed().as_micros() as u64,
            request_id = req.request_id().and_then(|v| v.to_str()).unwrap_or(""),
            "request"
        );
    }
}
