//! Middleware: synchronous hooks around every request.
//!
//! Lifecycle for each request, after routing:
//! 1. `before` runs for each middleware in the order they were added. Returning `Some(response)`
//!    short-circuits: the handler and later middleware do not run.
//! 2. The handler runs (panics become a 500; see the crate docs).
//! 3. `after` runs in reverse order for every middleware whose `before` ran, and may edit the
//!    response (add headers, replace it).
//!
//! Hooks are synchronous so that they cost no future or allocation; they cover timing, ids,
//! logging and authentication. Work that must await belongs in the handler.

mod access_log;
mod bearer;
mod request_id;
mod timing;

pub use access_log::AccessLog;
pub use bearer::{BearerAuth, constant_time_eq};
pub use request_id::RequestId;
pub use timing::{Completed, Timing};

use std::time::Instant;

use crate::request::Request;
use crate::response::Response;

/// Per-request context shared by the hooks of one request.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    start: Instant,
    panicked: bool,
}

impl Ctx {
    pub(crate) fn new(start: Instant) -> Self {
        Ctx {
            start,
            panicked: false,
        }
    }

    pub(crate) fn set_panicked(&mut self) {
        self.panicked = true;
    }

    /// When the server started handling the request (after the head was parsed).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Whether the handler panicked (the response is then the server's 500).
    pub fn panicked(&self) -> bool {
        self.panicked
    }
}

/// A middleware: hooks that run before and after the handler.
pub trait Middleware: Send + Sync + 'static {
    /// Runs before the handler; `Some(response)` answers without calling the handler.
    fn before(&self, req: &mut Request<'_>, ctx: &mut Ctx) -> Option<Response> {
        let _ = (req, ctx);
        None
    }

    /// Runs after the handler (or after a short-circuit), and may change the response.
    fn after(&self, req: &Request<'_>, ctx: &Ctx, resp: &mut Response) {
        let _ = (req, ctx, resp);
    }
}
