//! Requests as handlers see them: a borrowed view into the connection buffer, and an owned copy
//! for handlers that must keep the request across `.await`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::parse::Header;
use crate::response::HeaderValue;

/// An HTTP method the router can route on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// CONNECT
    Connect,
}

impl Method {
    /// Parses a method token; `None` for methods this stack does not implement.
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"PATCH" => Method::Patch,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => return None,
        })
    }

    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
        }
    }

    /// Whether repeating the request has the same effect as sending it once (RFC 9110 9.2.2);
    /// the client's retry classification relies on it.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch | Method::Connect)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The largest number of `{param}` segments in one route template.
pub const MAX_PARAMS: usize = 8;

/// Path parameters captured by the router, stored inline (no allocation).
#[derive(Clone, Copy)]
pub struct Params<'a> {
    items: [(&'a str, &'a str); MAX_PARAMS],
    len: usize,
}

impl<'a> Params<'a> {
    pub(crate) const fn new() -> Self {
        Params {
            items: [("", ""); MAX_PARAMS],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, name: &'a str, value: &'a str) {
        if self.len < MAX_PARAMS {
            self.items[self.len] = (name, value);
            self.len += 1;
        }
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
    }

    /// The number of captured parameters.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw (not percent-decoded) value of a parameter.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.items[..self.len]
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// All parameters in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.items[..self.len].iter().copied()
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A request as handlers and middleware see it. Every slice borrows the connection's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) minor_version: u8,
    pub(crate) headers: &'a [Header<'a>],
    pub(crate) body: &'a [u8],
    pub(crate) params: Params<'a>,
    pub(crate) route: Option<&'a Arc<str>>,
    pub(crate) peer: SocketAddr,
    pub(crate) request_id: Option<HeaderValue>,
}

impl<'a> Request<'a> {
    /// Builds a request from parts; for calling a [`Router`](crate::Router) in-process in tests.
    pub fn from_parts(
        method: Method,
        target: &'a str,
        headers: &'a [Header<'a>],
        body: &'a [u8],
        peer: SocketAddr,
    ) -> Self {
        let (path, query) = split_target(target);
        Request {
            method,
            path,
            query,
            minor_version: 1,
            headers,
            body,
            params: Params::new(),
            route: None,
            peer,
            request_id: None,
        }
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The path, without the query (raw, not percent-decoded).
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The minor HTTP version (0 or 1).
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// All header fields in order.
    pub fn headers(&self) -> &'a [Header<'a>] {
        self.headers
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first header with this name, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The whole request body (de-chunked if it was sent chunked).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Deserializes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.body)
    }

    /// A path parameter captured by the route template (`{name}` or `{*name}`).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.get(name)
    }

    /// All captured path parameters.
    pub fn params(&self) -> &Params<'a> {
        &self.params
    }

    /// The matched route template, e.g. `/orders/{id}`: a bounded metric label. `None` when no
    /// route matched (404 or 405).
    pub fn route(&self) -> Option<&'a str> {
        self.route.map(|r| &**r)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The request id set by middleware (see [`crate::middleware::RequestId`]).
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }

    /// Sets the request id; middleware calls this in its `before` hook.
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// Copies the request into an owned value for an async handler.
    pub fn to_owned_request(&self) -> OwnedRequest {
        OwnedRequest {
            method: self.method,
            path: self.path.to_owned(),
            query: self.query.map(str::to_owned),
            headers: self
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: Bytes::copy_from_slice(self.body),
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            route: self.route.cloned(),
            peer: self.peer,
            request_id: self.request_id.clone(),
        }
    }
}

pub(crate) fn split_target(target: &str) -> (&str, Option<&str>) {
    // A plain scan: targets are short, and memchr's setup cost more than it saved here.
    match target.bytes().position(|b| b == b'?') {
        // `?` is ASCII, so both sides of it are char boundaries.
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// An owned copy of a request, handed to async handlers so their futures can be `'static`.
#[derive(Debug, Clone)]
pub struct OwnedRequest {
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
    params: Vec<(String, String)>,
    route: Option<Arc<str>>,
    peer: SocketAddr,
    request_id: Option<HeaderValue>,
}

impl OwnedRequest {
    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first header with this name, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Deserializes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// A path parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The matched route template.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The request id set by middleware, for propagating to upstream calls.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }
}
