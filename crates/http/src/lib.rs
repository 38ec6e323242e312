//! `faultline-http`: Faultline's own HTTP/1.1 stack on tokio.
//!
//! - [`Server`]: keep-alive, pipelining with batched writes, chunked bodies in and out,
//!   `Expect: 100-continue`, `Connection: close`, a cached `Date`, `TCP_NODELAY`, limits and
//!   timeouts, graceful drain. Runs on the caller's runtime (multi-thread or not), or one
//!   current-thread runtime per core with `SO_REUSEPORT` via [`serve_per_core`].
//! - [`Router`]: a radix tree over path segments with `{param}` and trailing `{*rest}`,
//!   405 with `Allow`, 404, and the matched route template for metric labels.
//! - [`middleware`]: synchronous before/after hooks with short-circuit (request id, access log,
//!   timing); handler panics always become a 500.
//! - [`Client`]: a pooled keep-alive client with per-host pools and retry-safe error
//!   classification.
//! - [`parse`]: the zero-copy request/response head parser and chunked decoder, public for
//!   proxies.
//!
//! # Handlers and the allocation-free fast path
//!
//! A handler returns a [`Reply`]: `Ready` for a response computed synchronously from the
//! borrowed [`Request`], or `Later` with a boxed future. A plain closure
//! `Fn(&Request) -> Response` is a synchronous handler; [`handler_fn`] wraps an async closure
//! taking an [`OwnedRequest`]. Only async handlers pay for the owned copy and the box; a
//! synchronous handler with a static body on a warm keep-alive connection allocates nothing
//! (a test with a counting allocator checks it).
//!
//! ```no_run
//! use std::sync::Arc;
//! use faultline_http::{handler_fn, OwnedRequest, Request, Response, Router, Server};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let greeting = Arc::new(String::from("hello"));
//! let app = Router::new()
//!     .get("/plaintext", |_: &Request<'_>| Response::text("Hello, World!"))
//!     .get("/greet/{name}", handler_fn(move |req: OwnedRequest| {
//!         let greeting = Arc::clone(&greeting);
//!         async move { Response::text(format!("{greeting} {}", req.param("name").unwrap_or(""))) }
//!     }))
//!     .layer(faultline_http::middleware::RequestId::new());
//! let server = Server::bind("127.0.0.1:0").await?;
//! let addr = server.local_addr()?;
//! # let _ = addr;
//! server.serve_with_shutdown(app, faultline_http::shutdown_signal()).await
//! # }
//! ```
//!
//! # Request smuggling and the bare-LF policy
//!
//! The server rejects with 400 and closes the connection on: `Content-Length` together with
//! `Transfer-Encoding`; several differing `Content-Length` values (identical repeats are
//! accepted) or a non-decimal one; any `Transfer-Encoding` other than exactly one `chunked`
//! (so `gzip, chunked`, a repeated header and `chunked` on HTTP/1.0 are all rejected); bad
//! chunk sizes (empty, non-hex, signs, `0x`, whitespace, more than 15 hex digits) and chunk
//! data not followed by CRLF; obs-fold; and a missing or repeated `Host` on HTTP/1.1.
//!
//! **Bare LF:** RFC 9112 lets a recipient accept a lone LF as a line terminator, but a proxy
//! and an origin that disagree on it can be made to split one message into two. Faultline
//! therefore never accepts one: an LF not preceded by CR anywhere in a request head, a
//! chunk-size line, a chunk delimiter or a trailer is a 400. The response parser applies the
//! same rule. Bare CR is likewise rejected (by the tokenizer).
//!
//! Response headers are checked before writing: a name that is not a token or a value holding
//! CR, LF or NUL replaces the response with a 500, so no caller-controlled value can inject
//! headers or split the response. Static values are checked once, where
//! [`HeaderValue::from_static`] makes them (it panics on such a value, at compile time in a
//! `const`).
//!
//! Limits: a head over [`ServerConfig::max_head_size`] or with more than
//! [`ServerConfig::max_headers`] fields gets 431; a body over [`ServerConfig::max_body_size`]
//! gets 413 (before `100 Continue` is sent); a head not complete within
//! [`ServerConfig::header_read_timeout`] gets 408; an idle keep-alive connection is closed after
//! [`ServerConfig::keep_alive_timeout`]; connections over [`ServerConfig::max_connections`]
//! get 503. A method the stack does not implement gets 405 with the path's `Allow` (404 without a
//! route), like a method the route does not take. Path parameters are raw (not percent-decoded).

pub mod client;
mod date;
pub mod handler;
pub mod middleware;
pub mod parse;
pub mod request;
pub mod response;
pub mod router;
pub mod server;

pub use client::{Client, ClientConfig, ClientError, ClientResponse};
pub use handler::{Handler, Reply, handler_fn};
pub use request::{Method, OwnedRequest, Request};
pub use response::{Body, HeaderValue, Response};
pub use router::{RouteError, Router};
pub use server::{PerCoreServer, Server, ServerConfig, serve_per_core, shutdown_signal};
