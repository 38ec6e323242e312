//! Request ids: reuse the caller's `x-request-id` or assign one, and echo it in the response.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Ctx, Middleware};
use crate::request::Request;
use crate::response::{HeaderValue, Response};

/// The header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Assigns every request an id (the incoming `x-request-id` if it is short and printable, else a
/// per-process counter), makes it available as [`Request::request_id`] for propagation, and
/// echoes it in the response.
#[derive(Debug, Default)]
pub struct RequestId {
    next: AtomicU64,
}

impl RequestId {
    /// A request-id middleware whose generated ids start at 1.
    pub fn new() -> Self {
        RequestId {
            next: AtomicU64::new(1),
        }
    }
}

impl Middleware for RequestId {
    fn before(&self, req: &mut Request<'_>, _ctx: &mut Ctx) -> Option<Response> {
        let id = match req.header(REQUEST_ID_HEADER) {
            Some(v) if !v.is_empty() && v.len() <= 64 && v.iter().all(|b| b.is_ascii_graphic()) => {
                HeaderValue::from_bytes(v)
            }
            _ => HeaderValue::from_u64(self.next.fetch_add(1, Ordering::Relaxed)),
        };
        req.set_request_id(id);
        None
    }

    fn after(&self, req: &Request<'_>, _ctx: &Ctx, resp: &mut Response) {
        if let Some(id) = req.request_id() {
            resp.append_header(REQUEST_ID_HEADER, id.clone());
        }
    }
}
