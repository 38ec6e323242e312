//! HTTP request framing inside the proxy, for HTTP faults.
//!
//! While an HTTP rule is active on a proxy, the ingress direction of each connection is
//! read as a stream of HTTP/1.1 requests with `faultline-http`'s zero-copy head parser:
//! a request head is held until it is complete, then a decision is taken (abort with a
//! status, delay, or forward), and the body is forwarded by its framing
//! (`Content-Length` or chunked) until the next head. A stream that does not parse as
//! HTTP is forwarded untouched from then on ("opaque"), never broken.
//!
//! A rule added while a connection is in the middle of a body is detected at the next
//! parse: the bytes will not parse as a head and the connection turns opaque. Clients
//! that send one request at a time on a keep-alive connection (as the fleet's pooled
//! client does) are always at a request boundary when idle.

use bytes::{Bytes, BytesMut};

/// Heads larger than this are not inspected; the connection turns opaque.
pub const MAX_HEAD: usize = 64 * 1024;

/// One request head, reduced to what HTTP rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Method token.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Length of the head in bytes.
    pub head_len: usize,
    /// How the body is framed.
    pub body: Body,
}

/// Request body framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Result of trying to parse a head from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadParse {
    /// A complete head.
    Complete(Head),
    /// More bytes are needed.
    Partial,
    /// Not HTTP (or not acceptable HTTP): stop inspecting.
    Invalid,
}

/// Parses a request head with `faultline-http`'s parser.
pub fn parse_head(buf: &[u8]) -> HeadParse {
    use faultline_http::parse::{
        BodyFraming, EMPTY_HEADER, MAX_HEADERS, Parsed, parse_request_head,
    };
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match parse_request_head(buf, &mut headers) {
        Ok(Parsed::Complete(h)) => HeadParse::Complete(Head {
            method: h.method.to_string(),
            target: h.target.to_string(),
            head_len: h.head_len,
            body: match h.framing {
                BodyFraming::None | BodyFraming::UntilClose => Body::None,
                BodyFraming::ContentLength(n) => Body::Length(n),
                BodyFraming::Chunked => Body::Chunked,
            },
        }),
        Ok(Parsed::Partial) => HeadParse::Partial,
        Err(_) => HeadParse::Invalid,
    }
}

/// Where the ingress stream is, between requests.
#[derive(Debug)]
enum Phase {
    /// Collecting a head.
    Head(BytesMut),
    /// Forwarding `n` more body bytes.
    Length(u64),
    /// Forwarding a chunked body.
    Chunked(faultline_http::parse::ChunkedDecoder),
    /// Not HTTP: forward everything.
    Opaque,
}

/// A piece of the ingress stream and what to do with it.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment {
    /// Bytes that are not a request head (body, or opaque).
    Data(Bytes),
    /// A complete request head.
    Head(Head, Bytes),
}

/// Splits an ingress byte stream into heads and the rest.
#[derive(Debug)]
pub struct Framer {
    phase: Phase,
    scratch: Vec<u8>,
}

impl Default for Framer {
    fn default() -> Self {
        Self {
            phase: Phase::Head(BytesMut::new()),
            scratch: Vec::new(),
        }
    }
}

impl Framer {
    /// Whether a partial head is being held back.
    pub fn holds_partial_head(&self) -> bool {
        matches!(&self.phase, Phase::Head(b) if !b.is_empty())
    }

    /// Feeds one chunk and returns the segments it completes, in order.
    pub fn push(&mut self, mut data: Bytes, out: &mut Vec<Segment>) {
        while !data.is_empty() {
            match &mut self.phase {
                Phase::Opaque => {
                    out.push(Segment::Data(data));
                    return;
                }
                Phase::Length(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    out.push(Segment::Data(data.split_to(take)));
                    *n -= take as u64;
                    if *n == 0 {
                        self.phase = Phase::Head(BytesMut::new());
                    }
                }
                Phase::Chunked(decoder) => {
                    self.scratch.clear();
                    match decoder.decode(&data, &mut self.scratch, usize::MAX) {
                        Ok(progress) => {
                            out.push(Segment::Data(data.split_to(progress.consumed)));
                            if progress.done {
                                self.phase = Phase::Head(BytesMut::new());
                            }
                        }
                        Err(_) => {
                            self.phase = Phase::Opaque;
                        }
                    }
                }
                Phase::Head(acc) => {
                    acc.extend_from_slice(&data);
                    data = Bytes::new();
                    match parse_head(acc) {
                        HeadParse::Partial if acc.len() <= MAX_HEAD => {}
                        HeadParse::Partial | HeadParse::Invalid => {
                            out.push(Segment::Data(acc.split().freeze()));
                            self.phase = Phase::Opaque;
                        }
                        HeadParse::Complete(head) => {
                            let head_bytes = acc.split_to(head.head_len).freeze();
                            data = acc.split().freeze();
                            self.phase = match head.body {
                                Body::None => Phase::Head(BytesMut::new()),
                                Body::Length(n) => Phase::Length(n),
                                Body::Chunked => {
                                    Phase::Chunked(faultline_http::parse::ChunkedDecoder::new())
                                }
                            };
                            out.push(Segment::Head(head, head_bytes));
                        }
                    }
                }
            }
        }
    }

    /// Takes a partial head that will never complete (the stream ended or inspection stops).
    pub fn take_partial(&mut self) -> Option<Bytes> {
        match &mut self.phase {
            Phase::Head(acc) if !acc.is_empty() => Some(acc.split().freeze()),
            _ => None,
        }
    }

    /// Forgets the framing state: inspection stopped (no HTTP rule any more).
    pub fn reset(&mut self) {
        self.phase = Phase::Head(BytesMut::new());
    }
}

/// The reason phrase for common statuses.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

/// The response written for an aborted request. The connection is closed after it, so
/// responses still owed on that connection can never be mismatched.
pub fn abort_response(status: u16) -> Bytes {
    let body = format!("{{\"error\":\"injected by faultline\",\"status\":{status}}}");
    Bytes::from(format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-faultline-fault: abort\r\n\r\n{body}",
        reason(status),
        body.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(out: &[Segment]) -> Vec<String> {
        out.iter()
            .filter_map(|s| match s {
                Segment::Head(h, _) => Some(format!("{} {}", h.method, h.target)),
                Segment::Data(_) => None,
            })
            .collect()
    }

    fn bytes(out: &[Segment]) -> Vec<u8> {
        out.iter()
            .flat_map(|s| match s {
                Segment::Head(_, b) | Segment::Data(b) => b.to_vec(),
            })
            .collect()
    }

    #[test]
    fn framer_finds_every_head_across_bodies_and_split_reads() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in [1, 7, 13, 64, stream.len()] {
            let mut f = Framer::default();
            let mut out = Vec::new();
            for piece in stream.chunks(split) {
                f.push(Bytes::copy_from_slice(piece), &mut out);
            }
            assert_eq!(
                heads(&out),
                ["POST /a", "GET /b?q=1", "POST /c", "GET /d"],
                "split {split}"
            );
            assert_eq!(bytes(&out), stream.to_vec(), "split {split}");
            assert!(!f.holds_partial_head());
        }
    }

    #[test]
    fn non_http_turns_opaque_and_passes_through() {
        let mut f = Framer::default();
        let mut out = Vec::new();
        f.push(
            Bytes::from_static(b"\x16\x03\x01 not http\r\n\r\n"),
            &mut out,
        );
        f.push(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), &mut out);
        assert!(heads(&out).is_empty());
        assert_eq!(bytes(&out).len(), 34);
    }

    #[test]
    fn abort_response_is_a_complete_http_message() {
        let r = abort_response(503);
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
