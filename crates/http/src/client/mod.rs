//! A pooled keep-alive HTTP/1.1 client for `http://` URLs.
//!
//! Connections are pooled per `host:port`, newest first, up to
//! [`ClientConfig::max_idle_per_host`]. Errors say whether the request could have reached the
//! server ([`ClientError::is_retry_safe`]), which is what a retry policy needs to know.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::parse::{
    BodyFraming, ChunkedDecoder, EMPTY_HEADER, ParseError, Parsed, parse_response_head,
};
use crate::request::Method;

/// Client timeouts and pool limits.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange once connected: write, then read the full response.
    pub request_timeout: Duration,
    /// Most idle connections kept per `host:port`.
    pub max_idle_per_host: usize,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
    /// Largest response body accepted.
    pub max_response_body: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(30),
            max_response_body: 16 * 1024 * 1024,
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host[:port]/path`.
    #[error("invalid URL {0:?}: expected http://host[:port]/path")]
    InvalidUrl(String),
    /// The connection could not be established (refused, unreachable...). Nothing was sent.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The `host:port` dialled.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// A request header name is not a token, or its value holds CR, LF or NUL.
    #[error("invalid request header {0:?}")]
    InvalidHeader(String),
    /// Connecting took longer than [`ClientConfig::connect_timeout`]. Nothing was sent.
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    /// Writing the request failed; the server may have received part or all of it.
    #[error("sending the request failed: {0}")]
    Send(io::Error),
    /// The exchange took longer than [`ClientConfig::request_timeout`].
    #[error("request timed out")]
    Timeout,
    /// The request was sent but reading the response failed (reset, early close...).
    #[error("reading the response failed: {0}")]
    ResponseRead(io::Error),
    /// The response is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    InvalidResponse(#[from] ParseError),
    /// The response body exceeds [`ClientConfig::max_response_body`].
    #[error("response body larger than the limit")]
    BodyTooLarge,
    /// The request body could not be serialized.
    #[error("serializing the request body failed: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl ClientError {
    /// Whether the request certainly never reached the server, so retrying cannot repeat a side
    /// effect, whatever the method (connection refused, connect timeout, invalid URL).
    pub fn is_retry_safe(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::ConnectTimeout(_)
        )
    }

    /// Whether the failure was a timeout (connect or request).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout | ClientError::ConnectTimeout(_))
    }

    /// Whether the failure happened while connecting (refused, unreachable, timed out).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::ConnectTimeout(_)
        )
    }
}

/// A received response with its whole body.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
}

impl ClientResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
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

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Deserializes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Inner {
    config: ClientConfig,
    pools: Mutex<HashMap<String, Vec<Idle>>>,
}

/// A pooled HTTP/1.1 client. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientConfig::default())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A request being built; send it with [`RequestBuilder::send`].
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder {
    client: Client,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Result<Bytes, ClientError>,
    timeout: Option<Duration>,
}

impl RequestBuilder {
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Ok(body.into());
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.body = serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(ClientError::Serialize);
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self
    }

    /// Overrides the request timeout for this request (e.g. a caller's remaining budget).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sends the request and reads the whole response.
    pub async fn send(self) -> Result<ClientResponse, ClientError> {
        let body = self.body?;
        self.client
            .execute(self.method, &self.url, &self.headers, &body, self.timeout)
            .await
    }
}

struct Target<'u> {
    authority: &'u str,
    path: &'u str,
}

fn parse_url(url: &str) -> Result<Target<'_>, ClientError> {
    let bad = || ClientError::InvalidUrl(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
    };
    if !valid(authority)
        || path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'#')
    {
        return Err(bad());
    }
    Ok(Target { authority, path })
}

fn dial_addr(authority: &str) -> String {
    // Without a port, HTTP's default applies. `[v6]` and `[v6]:port` are left to the resolver.
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    }
}

impl Client {
    /// A client with its own pool.
    pub fn new(config: ClientConfig) -> Self {
        Client {
            inner: Arc::new(Inner {
                config,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts a request.
    pub fn request(&self, method: Method, url: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Ok(Bytes::new()),
            timeout: None,
        }
    }

    /// Starts a GET.
    pub fn get(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Get, url)
    }

    /// Starts a POST.
    pub fn post(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Post, url)
    }

    /// Starts a PUT.
    pub fn put(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Put, url)
    }

    /// Starts a DELETE.
    pub fn delete(&self, url: impl Into<String>) -> RequestBuilder {
        self.request(Method::Delete, url)
    }

    /// The number of idle pooled connections to `authority` (`host:port`).
    pub fn idle_connections(&self, authority: &str) -> usize {
        self.lock_pools().get(authority).map_or(0, Vec::len)
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Idle>>> {
        // A poisoned pool only means another request panicked mid-update; its data is still
        // a valid list of connections.
        self.inner
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn checkout(&self, authority: &str) -> Option<Conn> {
        let mut pools = self.lock_pools();
        let list = pools.get_mut(authority)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() > self.inner.config.idle_timeout {
                continue;
            }
            // A readable idle connection was closed by the server (or sent garbage): skip it.
            let mut probe = [0u8; 1];
            match idle.conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(idle.conn),
                _ => continue,
            }
        }
        None
    }

    fn checkin(&self, authority: &str, conn: Conn) {
        let mut pools = self.lock_pools();
        let list = pools.entry(authority.to_owned()).or_default();
        if list.len() < self.inner.config.max_idle_per_host {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, authority: &str) -> Result<Conn, ClientError> {
        let addr = dial_addr(authority);
        let stream = match tokio::time::timeout(
            self.inner.config.connect_timeout,
            TcpStream::connect(&addr),
        )
        .await
        {
            Err(_) => return Err(ClientError::ConnectTimeout(addr)),
            Ok(Err(source)) => return Err(ClientError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8 * 1024),
        })
    }

    async fn execute(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<ClientResponse, ClientError> {
        let target = parse_url(url)?;
        for (n, v) in headers {
            if !crate::response::is_valid_header_name(n)
                || v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
            {
                return Err(ClientError::InvalidHeader(n.clone()));
            }
        }
        let mut head = Vec::with_capacity(128 + body.len());
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(target.authority.as_bytes());
        head.extend_from_slice(b"\r\n");
        for (n, v) in headers {
            head.extend_from_slice(n.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || matches!(method, Method::Post | Method::Put | Method::Patch) {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(body);

        let budget = timeout.unwrap_or(self.inner.config.request_timeout);
        let work = async {
            // A pooled connection can be closed by the server just as we reuse it. If that
            // shows up before a single response byte, the server never processed the request,
            // so an idempotent request is retried once on a fresh connection.
            if let Some(conn) = self.checkout(target.authority) {
                match self.exchange(conn, method, &head).await {
                    Ok((resp, reusable)) => {
                        if let Some(c) = reusable {
                            self.checkin(target.authority, c);
                        }
                        return Ok(resp);
                    }
                    Err(Exchange::Untouched(_)) if method.is_idempotent() => {}
                    Err(e) => return Err(e.into_error()),
                }
            }
            let conn = self.connect(target.authority).await?;
            match self.exchange(conn, method, &head).await {
                Ok((resp, reusable)) => {
                    if let Some(c) = reusable {
                        self.checkin(target.authority, c);
                    }
                    Ok(resp)
                }
                Err(e) => Err(e.into_error()),
            }
        };
        match tokio::time::timeout(budget, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    async fn exchange(
        &self,
        mut conn: Conn,
        method: Method,
        request: &[u8],
    ) -> Result<(ClientResponse, Option<Conn>), Exchange> {
        if let Err(e) = conn.stream.write_all(request).await {
            return Err(Exchange::Untouched(ClientError::Send(e)));
        }
        conn.buf.clear();
        let max_body = self.inner.config.max_response_body;
        loop {
            // Skip interim 1xx responses (e.g. 100 Continue).
            let (status, head_len, framing, keep_alive, headers) = loop {
                let mut slots = [EMPTY_HEADER; 64];
                match parse_response_head(&conn.buf, &mut slots)? {
                    Parsed::Complete(h) => {
                        let headers = h
                            .headers
                            .iter()
                            .map(|x| (x.name.to_owned(), x.value.to_vec()))
                            .collect::<Vec<_>>();
                        break (h.status, h.head_len, h.framing, h.keep_alive, headers);
                    }
                    Parsed::Partial => {
                        if conn.buf.len() > 64 * 1024 {
                            return Err(Exchange::Failed(ClientError::InvalidResponse(
                                ParseError::HeadTooLarge,
                            )));
                        }
                        let untouched = conn.buf.is_empty();
                        match read_some(&mut conn).await {
                            Ok(0) if untouched => {
                                return Err(Exchange::Untouched(ClientError::ResponseRead(
                                    io::ErrorKind::UnexpectedEof.into(),
                                )));
                            }
                            Ok(0) => {
                                return Err(Exchange::Failed(ClientError::ResponseRead(
                                    io::ErrorKind::UnexpectedEof.into(),
                                )));
                            }
                            Ok(_) => {}
                            Err(e) if untouched && e.kind() == io::ErrorKind::ConnectionReset => {
                                return Err(Exchange::Untouched(ClientError::ResponseRead(e)));
                            }
                            Err(e) => return Err(Exchange::Failed(ClientError::ResponseRead(e))),
                        }
                    }
                }
            };
            if (100..200).contains(&status) {
                conn.buf.drain(..head_len);
                continue;
            }
            let framing = if method == Method::Head {
                BodyFraming::None
            } else {
                framing
            };
            let body = read_body(&mut conn, head_len, framing, max_body)
                .await
                .map_err(Exchange::Failed)?;
            let reusable = keep_alive && framing != BodyFraming::UntilClose;
            let resp = ClientResponse {
                status,
                headers,
                body,
            };
            return Ok((resp, reusable.then_some(conn)));
        }
    }
}

enum Exchange {
    /// Failed before any response byte arrived on a connection that may have been stale.
    Untouched(ClientError),
    /// Failed after the server started answering.
    Failed(ClientError),
}

impl Exchange {
    fn into_error(self) -> ClientError {
        match self {
            Exchange::Untouched(e) | Exchange::Failed(e) => e,
        }
    }
}

impl From<ParseError> for Exchange {
    fn from(e: ParseError) -> Self {
        Exchange::Failed(ClientError::InvalidResponse(e))
    }
}

async fn read_some(conn: &mut Conn) -> io::Result<usize> {
    if conn.buf.capacity() - conn.buf.len() < 4096 {
        conn.buf.reserve(8192);
    }
    conn.stream.read_buf(&mut conn.buf).await
}

async fn read_body(
    conn: &mut Conn,
    head_len: usize,
    framing: BodyFraming,
    max_body: usize,
) -> Result<Bytes, ClientError> {
    match framing {
        BodyFraming::None => {
            conn.buf.drain(..head_len);
            Ok(Bytes::new())
        }
        BodyFraming::ContentLength(n) => {
            if n > max_body as u64 {
                return Err(ClientError::BodyTooLarge);
            }
            let need = head_len + n as usize;
            while conn.buf.len() < need {
                conn.buf.reserve(need - conn.buf.len());
                if read_some(conn).await.map_err(ClientError::ResponseRead)? == 0 {
                    return Err(ClientError::ResponseRead(
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
            }
            let body = Bytes::copy_from_slice(&conn.buf[head_len..need]);
            conn.buf.drain(..need);
            Ok(body)
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut pos = head_len;
            loop {
                let p = decoder.decode(&conn.buf[pos..], &mut out, max_body)?;
                pos += p.consumed;
                if out.len() > max_body {
                    return Err(ClientError::BodyTooLarge);
                }
                if p.done {
                    conn.buf.drain(..pos);
                    return Ok(Bytes::from(out));
                }
                if read_some(conn).await.map_err(ClientError::ResponseRead)? == 0 {
                    return Err(ClientError::ResponseRead(
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
            }
        }
        BodyFraming::UntilClose => {
            loop {
                if conn.buf.len() - head_len > max_body {
                    return Err(ClientError::BodyTooLarge);
                }
                if read_some(conn).await.map_err(ClientError::ResponseRead)? == 0 {
                    break;
                }
            }
            Ok(Bytes::copy_from_slice(&conn.buf[head_len..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let t = parse_url("http://127.0.0.1:8080/a/b?c=1").unwrap();
        assert_eq!((t.authority, t.path), ("127.0.0.1:8080", "/a/b?c=1"));
        let t = parse_url("http://svc").unwrap();
        assert_eq!((t.authority, t.path), ("svc", "/"));
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://x/a b").is_err());
        assert!(parse_url("http://x/a\r\nInjected: 1").is_err());
        assert_eq!(dial_addr("svc"), "svc:80");
        assert_eq!(dial_addr("[::1]:9"), "[::1]:9");
    }
}
