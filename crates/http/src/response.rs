//! Responses: status, headers and body, built by handlers and adjusted by middleware.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// A header value. Short values are stored inline, so setting e.g. a request id allocates nothing.
#[derive(Clone)]
pub struct HeaderValue(Repr);

#[derive(Clone)]
enum Repr {
    /// Checked for CR, LF and NUL when made, so the server need not scan it per response.
    Static(&'static [u8]),
    Inline {
        len: u8,
        buf: [u8; INLINE],
    },
    Owned(Box<[u8]>),
}

const INLINE: usize = 46;

impl HeaderValue {
    /// A value from a static string; no copy.
    ///
    /// # Panics
    ///
    /// If `s` holds CR, LF or NUL (like `http::HeaderValue::from_static`). In a `const` item
    /// that is a compile-time error, and the value then costs nothing to check per response.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(is_clean(s.as_bytes()), "header value holds CR, LF or NUL");
        HeaderValue(Repr::Static(s.as_bytes()))
    }

    /// A value copied from bytes; inline (no allocation) up to 46 bytes.
    ///
    /// Values are not validated here: the server refuses to write a header holding CR, LF or
    /// NUL (answering 500 instead), which is where header injection is stopped.
    pub fn from_bytes(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            HeaderValue(Repr::Inline {
                len: b.len() as u8,
                buf,
            })
        } else {
            HeaderValue(Repr::Owned(b.into()))
        }
    }

    /// A decimal number; never allocates.
    pub fn from_u64(n: u64) -> Self {
        let mut f = itoa::Buffer::new();
        Self::from_bytes(f.format(n).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Owned(b) => b,
        }
    }

    /// The value as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }

    /// Whether the value is safe to put on the wire (no CR, LF or NUL).
    pub fn is_valid(&self) -> bool {
        match &self.0 {
            Repr::Static(_) => true,
            _ => is_clean(self.as_bytes()),
        }
    }
}

/// Whether `b` holds no CR, LF or NUL, the bytes that would split or end a header line.
const fn is_clean(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'\r' | b'\n' | 0) {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

impl From<&'static str> for HeaderValue {
    /// Never panics: a string holding CR, LF or NUL becomes a copied value, which the server
    /// then refuses to write (answering 500).
    fn from(s: &'static str) -> Self {
        if is_clean(s.as_bytes()) {
            HeaderValue(Repr::Static(s.as_bytes()))
        } else {
            Self::from_bytes(s.as_bytes())
        }
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        Self::from_bytes(s.as_bytes())
    }
}

impl From<&String> for HeaderValue {
    fn from(s: &String) -> Self {
        Self::from_bytes(s.as_bytes())
    }
}

/// A header name. Lower-case is conventional; the server writes it as given.
pub type HeaderName = Cow<'static, str>;

/// Whether `name` is a valid header field name (an RFC 9110 token).
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| TOKEN[usize::from(b)])
}

/// `TOKEN[b]`: whether byte `b` is a `tchar` (RFC 9110 section 5.6.2).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A response body.
#[derive(Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// Static bytes; never copied before the socket write.
    Static(&'static [u8]),
    /// Shared bytes.
    Bytes(Bytes),
    /// An owned buffer.
    Vec(Vec<u8>),
    /// A stream of chunks, sent with `Transfer-Encoding: chunked`. The body ends when every
    /// sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    /// The length, when known before sending.
    pub fn len(&self) -> Option<usize> {
        match self {
            Body::Empty => Some(0),
            Body::Static(b) => Some(b.len()),
            Body::Bytes(b) => Some(b.len()),
            Body::Vec(v) => Some(v.len()),
            Body::Stream(_) => None,
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The bytes of a fixed-length body (empty for a stream).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Body::Empty | Body::Stream(_) => &[],
            Body::Static(b) => b,
            Body::Bytes(b) => b,
            Body::Vec(v) => v,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Stream(_) => f.write_str("Body::Stream"),
            other => write!(f, "Body({} bytes)", other.as_slice().len()),
        }
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::Static(s.as_bytes())
    }
}
impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Body::Static(s)
    }
}
impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Vec(s.into_bytes())
    }
}
impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Vec(v)
    }
}
impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// An HTTP response.
///
/// Building one with a static body and no extra headers allocates nothing, which keeps the
/// plaintext fast path allocation-free.
#[derive(Debug)]
pub struct Response {
    status: u16,
    content_type: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Body,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// 200 with a `text/plain` body.
    pub fn text(body: impl Into<Body>) -> Self {
        Response::new(200)
            .with_content_type(TEXT_PLAIN)
            .with_body(body)
    }

    /// 200 with `value` serialized as the JSON body. Serialization failure gives a 500.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        Self::json_with_status(200, value)
    }

    /// `status` with `value` serialized as the JSON body. Serialization failure gives a 500.
    pub fn json_with_status<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(v) => Response::new(status)
                .with_content_type(APPLICATION_JSON)
                .with_body(v),
            Err(e) => {
                tracing::error!(error = %e, "response serialization failed");
                Response::error(500, "response serialization failed")
            }
        }
    }

    /// `status` with the JSON body `{"error": message}`, the error shape of every Faultline API.
    pub fn error(status: u16, message: &str) -> Self {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
        }
        match serde_json::to_vec(&ErrorBody { error: message }) {
            Ok(v) => Response::new(status)
                .with_content_type(APPLICATION_JSON)
                .with_body(v),
            Err(_) => Response::new(status),
        }
    }

    /// A static JSON error body; used by the server itself so that its rejections never
    /// allocate.
    pub(crate) fn static_json(status: u16, body: &'static str) -> Self {
        Response::new(status)
            .with_content_type(APPLICATION_JSON)
            .with_body(body)
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets `Content-Type`.
    pub fn with_content_type(mut self, v: HeaderValue) -> Self {
        self.content_type = Some(v);
        self
    }

    /// Appends a header.
    pub fn with_header(
        mut self,
        name: impl Into<HeaderName>,
        value: impl Into<HeaderValue>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Changes the status code.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Appends a header.
    pub fn append_header(&mut self, name: impl Into<HeaderName>, value: impl Into<HeaderValue>) {
        self.headers.push((name.into(), value.into()));
    }

    /// The first header with this name (case-insensitive); `content-type` included.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        if name.eq_ignore_ascii_case("content-type") {
            if let Some(ct) = &self.content_type {
                return Some(ct);
            }
        }
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The extra headers (not `Content-Type`).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The `Content-Type`, if set.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    /// The body.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// Takes the body out, leaving it empty.
    pub fn take_body(&mut self) -> Body {
        std::mem::take(&mut self.body)
    }
}

/// The reason phrase for a status code (empty for unknown codes, which is allowed).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_with_line_breaks_are_invalid() {
        assert!(HeaderValue::from_static("abc").is_valid());
        assert!(!HeaderValue::from("a\r\nSet-Cookie: x").is_valid());
        assert!(!HeaderValue::from("a\0b").is_valid());
        assert!(!HeaderValue::from(String::from("a\nb")).is_valid());
        assert!(!is_valid_header_name("x\r\ny"));
        assert!(is_valid_header_name("x-request-id"));
    }

    #[test]
    #[should_panic(expected = "CR, LF or NUL")]
    fn static_values_with_line_breaks_panic() {
        let _ = HeaderValue::from_static(std::hint::black_box("a\nb"));
    }

    #[test]
    fn short_values_are_inline_and_long_values_owned() {
        assert_eq!(HeaderValue::from_u64(1234).as_bytes(), b"1234");
        let long = "x".repeat(100);
        assert_eq!(HeaderValue::from(long.clone()).as_bytes(), long.as_bytes());
    }
}
