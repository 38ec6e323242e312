//! How the generator sends one request: the [`Transport`] trait and its
//! `faultline-http` implementation.
//!
//! The trait exists so the scheduling and measurement logic can be tested on paused
//! tokio time with a simulated server: real sockets make the runtime look busy to the
//! clock, so paused-time tests need a transport that only sleeps.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use faultline_http::{Client, ClientConfig, ClientError, Method};

use super::LoadError;
use super::stats::Outcome;

/// Sends request `entry` of the mix and reports how it ended.
pub trait Transport: Send + Sync + 'static {
    /// Sends mix entry `entry`; gives up with [`Outcome::Timeout`] after `timeout`.
    fn send(&self, entry: usize, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

/// One request of the mix, checked and ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// Absolute `http://` URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Bytes,
}

impl HttpRequest {
    /// A request to `base` (e.g. `http://127.0.0.1:8080`) + `path`, with the method
    /// parsed from its name.
    pub fn new(
        method: &str,
        base: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Option<String>,
    ) -> Result<Self, LoadError> {
        let method = parse_method(method)?;
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(LoadError::InvalidConfig(format!(
                "target {base:?} is not an http:// URL"
            )));
        }
        if !path.is_empty() && !path.starts_with('/') {
            return Err(LoadError::InvalidConfig(format!(
                "path {path:?} must start with `/`"
            )));
        }
        for (name, value) in &headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(LoadError::InvalidConfig(format!(
                    "invalid header {name:?}: the name must be a token and the value free of CR, LF and NUL"
                )));
            }
        }
        Ok(HttpRequest {
            method,
            url: format!("{base}{path}"),
            headers,
            body: body.map(Bytes::from).unwrap_or_default(),
        })
    }
}

fn parse_method(m: &str) -> Result<Method, LoadError> {
    // CONNECT and TRACE make no sense as load; everything else the client speaks does.
    match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
        Some(Method::Connect | Method::Trace) | None => Err(LoadError::InvalidConfig(format!(
            "unsupported method {m:?}; expected GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS"
        ))),
        Some(method) => Ok(method),
    }
}

/// Sends the mix over `faultline-http`'s pooled keep-alive client.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: Client,
    requests: Vec<HttpRequest>,
}

impl HttpTransport {
    /// A transport with its own pool sized for `connections` concurrent requests.
    pub fn new(requests: Vec<HttpRequest>, connections: usize) -> Self {
        let client = Client::new(ClientConfig {
            // Keep every connection the generator may use, so the steady state
            // never reconnects.
            max_idle_per_host: connections.max(1),
            ..ClientConfig::default()
        });
        HttpTransport { client, requests }
    }

    /// The mix entries.
    pub fn requests(&self) -> &[HttpRequest] {
        &self.requests
    }
}

impl Transport for HttpTransport {
    async fn send(&self, entry: usize, timeout: Duration) -> Outcome {
        let r = &self.requests[entry];
        let mut b = self
            .client
            .request(r.method, r.url.as_str())
            .timeout(timeout)
            .body(r.body.clone());
        for (n, v) in &r.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        match b.send().await {
            Ok(resp) => Outcome::Status(resp.status()),
            Err(e) => classify(&e),
        }
    }
}

fn classify(e: &ClientError) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Transport
    }
}
