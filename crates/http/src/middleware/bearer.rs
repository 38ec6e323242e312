//! Bearer-token authentication with a constant-time comparison.

use super::{Ctx, Middleware};
use crate::request::Request;
use crate::response::Response;

/// Answers 401 (JSON error, `WWW-Authenticate: Bearer`) unless the request carries
/// `Authorization: Bearer <token>` with the configured token. Paths listed with
/// [`BearerAuth::allow_path`] (e.g. `/healthz`) pass without a token.
pub struct BearerAuth {
    token: Vec<u8>,
    open_paths: Vec<String>,
}

impl BearerAuth {
    /// Requires `token` on every request.
    pub fn new(token: impl Into<Vec<u8>>) -> Self {
        BearerAuth {
            token: token.into(),
            open_paths: Vec::new(),
        }
    }

    /// Lets requests for exactly this path through without a token.
    pub fn allow_path(mut self, path: impl Into<String>) -> Self {
        self.open_paths.push(path.into());
        self
    }
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("BearerAuth")
            .field("open_paths", &self.open_paths)
            .finish_non_exhaustive()
    }
}

/// Compares without an early exit, so the time taken does not reveal how many leading bytes
/// of a guess were right. The length is not secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Middleware for BearerAuth {
    fn before(&self, req: &mut Request<'_>, _ctx: &mut Ctx) -> Option<Response> {
        if self.open_paths.iter().any(|p| p == req.path()) {
            return None;
        }
        let presented = req.header("authorization").and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
        match presented {
            Some(t) if !self.token.is_empty() && constant_time_eq(t, &self.token) => None,
            _ => Some(
                Response::error(401, "missing or invalid bearer token")
                    .with_header("www-authenticate", "Bearer"),
            ),
        }
    }
}
