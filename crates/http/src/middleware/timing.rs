//! Metrics timing: hand every completed request to a callback.

use std::time::Duration;

use super::{Ctx, Middleware};
use crate::request::{Method, Request};
use crate::response::Response;

/// What [`Timing`] reports for each request. `route` is the matched template (bounded
/// cardinality, safe as a metric label); `None` for 404 and 405.
#[derive(Debug, Clone, Copy)]
pub struct Completed<'a> {
    /// The request method.
    pub method: Method,
    /// The matched route template.
    pub route: Option<&'a str>,
    /// The response status.
    pub status: u16,
    /// Time from head parsed to response ready.
    pub elapsed: Duration,
}

/// Calls `f` after every request with its method, route template, status and duration; the
/// fleet records RED metrics with it.
pub struct Timing<F> {
    f: F,
}

impl<F> Timing<F>
where
    F: Fn(&Completed<'_>) + Send + Sync + 'static,
{
    /// A timing middleware that reports to `f`.
    pub fn new(f: F) -> Self {
        Timing { f }
    }
}

impl<F> Middleware for Timing<F>
where
    F: Fn(&Completed<'_>) + Send + Sync + 'static,
{
    fn after(&self, req: &Request<'_>, ctx: &Ctx, resp: &mut Response) {
        (self.f)(&Completed {
            method: req.method(),
            route: req.route(),
            status: resp.status(),
            elapsed: ctx.start().elapsed(),
        });
    }
}
