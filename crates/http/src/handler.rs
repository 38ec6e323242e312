//! The handler trait, with an immediate-response fast path and an async path.

use std::future::Future;
use std::pin::Pin;

use crate::request::{OwnedRequest, Request};
use crate::response::Response;

/// A boxed response future, returned by async handlers.
pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// What a handler produced.
///
/// `Ready` is the fast path: the server writes it without boxing, spawning or allocating.
/// `Later` is for handlers that await (calls to other services, timers); only they pay for a
/// boxed future and an owned copy of the request.
pub enum Reply {
    /// The response is ready now.
    Ready(Response),
    /// The response will be ready when the future completes.
    Later(BoxFuture),
}

/// Something that answers requests.
///
/// Plain closures `Fn(&Request) -> Response` are handlers (the synchronous fast path); wrap an
/// async closure with [`handler_fn`] to get one that awaits.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: &Request<'_>) -> Reply;
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    fn call(&self, req: &Request<'_>) -> Reply {
        Reply::Ready(self(req))
    }
}

/// An async handler made by [`handler_fn`].
pub struct AsyncFn<F>(F);

/// Makes a handler from an async closure taking an [`OwnedRequest`].
///
/// ```
/// use faultline_http::{handler_fn, OwnedRequest, Response};
/// let h = handler_fn(|req: OwnedRequest| async move {
///     Response::text(format!("hello {}", req.param("name").unwrap_or("?")))
/// });
/// # let _ = h;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> AsyncFn<F>
where
    F: Fn(OwnedRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    AsyncFn(f)
}

impl<F, Fut> Handler for AsyncFn<F>
where
    F: Fn(OwnedRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, req: &Request<'_>) -> Reply {
        Reply::Later(Box::pin((self.0)(req.to_owned_request())))
    }
}
