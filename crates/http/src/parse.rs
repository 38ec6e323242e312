//! Zero-copy HTTP/1.1 head parsing and chunked-body decoding.
//!
//! These functions are the server's own parser, exposed for anyone who must read HTTP from a raw
//! byte stream (the agent's HTTP-fault proxy does). They borrow every string from the input buffer
//! and write header slots into a caller-provided array, so they never allocate.
//!
//! The tokenizer is `httparse` (as in hyper, actix and may_minihttp); this module adds the
//! framing and anti-smuggling rules on top of it:
//!
//! - a bare LF where CRLF is required is rejected ([`ParseError::BareLf`]): see the crate docs;
//! - obs-fold (a header line starting with whitespace) is rejected;
//! - `Content-Length` together with `Transfer-Encoding` is rejected;
//! - several differing `Content-Length` values, or one that is not plain digits, are rejected;
//! - any `Transfer-Encoding` other than a single, final `chunked` is rejected;
//! - an HTTP/1.1 request without exactly one `Host` header is rejected.

use std::mem::MaybeUninit;

pub use httparse::{EMPTY_HEADER, Header};

/// The largest number of header slots the server ever passes to the parser.
pub const MAX_HEADERS: usize = 128;

/// How the body following a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body follows (e.g. a GET without `Content-Length`, a 204 or a 304 response).
    None,
    /// Exactly this many bytes follow.
    ContentLength(u64),
    /// A `chunked` body follows; decode it with [`ChunkedDecoder`].
    Chunked,
    /// Responses only: the body runs until the peer closes the connection.
    UntilClose,
}

/// Why a head (or a chunked body) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not a valid HTTP/1.x head (bad token, obs-fold, bad version...).
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    /// A line ended with a bare LF instead of CRLF.
    #[error("bare LF line ending where CRLF is required")]
    BareLf,
    /// More header lines than the caller's header array can hold.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The head is larger than the configured limit.
    #[error("message head larger than the limit")]
    HeadTooLarge,
    /// Both `Content-Length` and `Transfer-Encoding` are present (request smuggling).
    #[error("both Content-Length and Transfer-Encoding are present")]
    ContentLengthWithTransferEncoding,
    /// Several `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A `Content-Length` that is not a plain decimal number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// A `Transfer-Encoding` other than a single final `chunked`.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// An HTTP/1.1 request without exactly one `Host` header.
    #[error("missing or repeated Host header")]
    BadHost,
    /// A chunk-size line or chunk delimiter is invalid.
    #[error("invalid chunked encoding: {0}")]
    InvalidChunk(&'static str),
}

impl ParseError {
    /// The status a server answers this error with: 431 for size and count limits, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::TooManyHeaders | ParseError::HeadTooLarge => 431,
            _ => 400,
        }
    }
}

/// The outcome of parsing a possibly incomplete buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is complete.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
}

/// A parsed request head. Every slice borrows the input buffer.
#[derive(Debug)]
pub struct RequestHead<'b, 'h> {
    /// The method token as sent (e.g. `GET`).
    pub method: &'b str,
    /// The request target as sent (path and query).
    pub target: &'b str,
    /// The minor HTTP version: 0 or 1.
    pub minor_version: u8,
    /// The header fields, in order.
    pub headers: &'h [Header<'b>],
    /// The length of the head in bytes, including the final empty line.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may be reused after this exchange.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// A parsed response head. Every slice borrows the input buffer.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    /// The status code.
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: &'b str,
    /// The minor HTTP version: 0 or 1.
    pub minor_version: u8,
    /// The header fields, in order.
    pub headers: &'h [Header<'b>],
    /// The length of the head in bytes, including the final empty line.
    pub head_len: usize,
    /// How the body is delimited. The caller must treat a response to HEAD as having no body.
    pub framing: BodyFraming,
    /// Whether the connection may be reused after this exchange.
    pub keep_alive: bool,
}

fn map_httparse(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::HeaderName => ParseError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => ParseError::Malformed("invalid header value"),
        httparse::Error::NewLine => ParseError::Malformed("invalid line ending"),
        httparse::Error::Status => ParseError::Malformed("invalid status"),
        httparse::Error::Token => ParseError::Malformed("invalid token"),
        httparse::Error::Version => ParseError::Malformed("invalid HTTP version"),
    }
}

/// Rejects any LF not preceded by CR inside the head.
///
/// One branch-free pass over byte pairs. Heads are short: a `memchr` call per LF cost ~160
/// instructions on a typical request head (callgrind), this pass about a third of that.
fn check_crlf(head: &[u8]) -> Result<(), ParseError> {
    let Some((&first, rest)) = head.split_first() else {
        return Ok(());
    };
    // `rest[i]` is preceded by `head[i]`.
    let bare = rest
        .iter()
        .zip(head)
        .fold(first == b'\n', |bad, (&b, &prev)| {
            bad | ((b == b'\n') & (prev != b'\r'))
        });
    if bare {
        Err(ParseError::BareLf)
    } else {
        Ok(())
    }
}

/// The head's length once httparse's `status` says it is complete, with bare LFs rejected;
/// `None` while the head is partial.
fn complete_head_len(
    buf: &[u8],
    status: httparse::Result<usize>,
) -> Result<Option<usize>, ParseError> {
    match status {
        Ok(httparse::Status::Complete(n)) => {
            check_crlf(&buf[..n])?;
            Ok(Some(n))
        }
        Ok(httparse::Status::Partial) => {
            // A bare LF in a partial head is already fatal; finding it early stops a peer from
            // holding the connection with a head that can never be accepted.
            check_crlf(buf)?;
            Ok(None)
        }
        Err(e) => Err(map_httparse(e)),
    }
}

/// Framing facts gathered from the header fields.
struct Fields {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    hosts: u32,
}

impl Fields {
    /// Whether the header fields let the connection persist: HTTP/1.1 unless `close`,
    /// HTTP/1.0 only with `keep-alive` (and no `close`).
    fn persistent(&self, minor_version: u8) -> bool {
        if minor_version == 1 {
            !self.close
        } else {
            self.keep_alive && !self.close
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidContentLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn scan_fields(headers: &[Header<'_>]) -> Result<Fields, ParseError> {
    let mut f = Fields {
        content_length: None,
        chunked: false,
        close: false,
        keep_alive: false,
        expect_continue: false,
        hosts: 0,
    };
    let mut te_seen = false;
    for h in headers {
        let name = h.name.as_bytes();
        // Dispatch on length first: most headers are rejected by one integer compare.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_content_length(h.value)?;
                match f.content_length {
                    Some(prev) if prev != n => return Err(ParseError::ConflictingContentLength),
                    _ => f.content_length = Some(n),
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // Only one field holding exactly `chunked` is accepted: a list ("gzip, chunked"),
                // a repeat, or any other coding is a classic smuggling vector.
                if te_seen || !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                    return Err(ParseError::UnsupportedTransferEncoding);
                }
                te_seen = true;
                f.chunked = true;
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in h.value.split(|b| *b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    }
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                f.expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
            4 if name.eq_ignore_ascii_case(b"host") => f.hosts += 1,
            _ => {}
        }
    }
    if f.chunked && f.content_length.is_some() {
        return Err(ParseError::ContentLengthWithTransferEncoding);
    }
    Ok(f)
}

/// Parses a request head from the start of `buf`, writing header slots into `headers`.
///
/// Returns [`Parsed::Partial`] when `buf` holds only part of a head; a caller that has already
/// buffered more than its limit should then answer 431 ([`ParseError::HeadTooLarge`]).
pub fn parse_request_head<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
) -> Result<Parsed<RequestHead<'b, 'h>>, ParseError> {
    let mut req = httparse::Request::new(headers);
    let status = req.parse(buf);
    finish_request(buf, req, status)
}

/// Like [`parse_request_head`], with uninitialised header slots, so a caller with a large slot
/// array on the stack does not pay for zeroing it on every request (the server's hot path).
pub fn parse_request_head_uninit<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Parsed<RequestHead<'b, 'h>>, ParseError> {
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, headers);
    finish_request(buf, req, status)
}

fn finish_request<'b, 'h>(
    buf: &'b [u8],
    req: httparse::Request<'h, 'b>,
    status: httparse::Result<usize>,
) -> Result<Parsed<RequestHead<'b, 'h>>, ParseError> {
    let Some(head_len) = complete_head_len(buf, status)? else {
        return Ok(Parsed::Partial);
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(ParseError::Malformed("incomplete request line"));
    };
    let headers: &'h [Header<'b>] = req.headers;
    let f = scan_fields(headers)?;
    if minor_version == 1 && f.hosts != 1 {
        return Err(ParseError::BadHost);
    }
    if minor_version == 0 && f.chunked {
        // HTTP/1.0 has no chunked coding; accepting it would let a 1.0 hop disagree with us.
        return Err(ParseError::UnsupportedTransferEncoding);
    }
    let framing = if f.chunked {
        BodyFraming::Chunked
    } else {
        match f.content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::ContentLength(n),
        }
    };
    let keep_alive = f.persistent(minor_version);
    Ok(Parsed::Complete(RequestHead {
        method,
        target,
        minor_version,
        headers,
        head_len,
        framing,
        keep_alive,
        expect_continue: f.expect_continue && minor_version == 1,
    }))
}

/// Parses a response head from the start of `buf`, writing header slots into `headers`.
pub fn parse_response_head<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
) -> Result<Parsed<ResponseHead<'b, 'h>>, ParseError> {
    let mut resp = httparse::Response::new(headers);
    let parsed = resp.parse(buf);
    let Some(head_len) = complete_head_len(buf, parsed)? else {
        return Ok(Parsed::Partial);
    };
    let (Some(status), Some(minor_version)) = (resp.code, resp.version) else {
        return Err(ParseError::Malformed("incomplete status line"));
    };
    let reason = resp.reason.unwrap_or("");
    let headers: &'h [Header<'b>] = resp.headers;
    let f = scan_fields(headers)?;
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyFraming::None
    } else if f.chunked {
        BodyFraming::Chunked
    } else {
        match f.content_length {
            Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::ContentLength(n),
            None => BodyFraming::UntilClose,
        }
    };
    let keep_alive = framing != BodyFraming::UntilClose && f.persistent(minor_version);
    Ok(Parsed::Complete(ResponseHead {
        status,
        reason,
        minor_version,
        headers,
        head_len,
        framing,
        keep_alive,
    }))
}

/// Incremental decoder for a `chunked` body.
///
/// Feed it the bytes after the head as they arrive; it appends the payload to `out` and reports
/// how many input bytes it consumed. Chunk extensions are skipped, trailers are read and dropped
/// (up to [`ChunkedDecoder::MAX_TRAILER_BYTES`]). Bare LFs, non-hex or overflowing sizes and
/// missing CRLF after chunk data are errors.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    size_digits: u8,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// Progress reported by [`ChunkedDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Input bytes consumed by this call.
    pub consumed: usize,
    /// Whether the terminating chunk and trailers have been read.
    pub done: bool,
}

impl ChunkedDecoder {
    /// Upper bound on the trailer section, against a client streaming trailers forever.
    pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

    /// A decoder positioned at the first chunk-size line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes as much of `input` as possible, appending payload bytes to `out`.
    ///
    /// `max_out` bounds `out.len()`: exceeding it returns `Ok` with `consumed` stopped early and
    /// `out.len() > max_out`, so the caller can answer 413 without decoding the rest.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<ChunkProgress, ParseError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => {
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        b';' | b'\r' if self.size_digits > 0 => {
                            self.state = if b == b';' {
                                ChunkState::Ext
                            } else {
                                ChunkState::SizeLf
                            };
                            i += 1;
                            continue;
                        }
                        b'\n' => return Err(ParseError::BareLf),
                        _ => return Err(ParseError::InvalidChunk("invalid chunk size")),
                    };
                    // 15 hex digits keep the size below 2^60: no overflow, and far above any limit.
                    if self.size_digits >= 15 {
                        return Err(ParseError::InvalidChunk("chunk size too large"));
                    }
                    self.size = self.size * 16 + u64::from(digit);
                    self.size_digits += 1;
                    i += 1;
                }
                ChunkState::Ext => {
                    match b {
                        b'\r' => self.state = ChunkState::SizeLf,
                        b'\n' => return Err(ParseError::BareLf),
                        0..=8 | 10..=31 | 127 => {
                            return Err(ParseError::InvalidChunk("control byte in extension"));
                        }
                        _ => {}
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ParseError::InvalidChunk("expected LF after chunk size"));
                    }
                    i += 1;
                    self.size_digits = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.size) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    if out.len() > max_out {
                        return Ok(ChunkProgress {
                            consumed: i,
                            done: false,
                        });
                    }
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(ParseError::InvalidChunk("expected CRLF after chunk data"));
                    }
                    self.state = ChunkState::DataLf;
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ParseError::InvalidChunk("expected CRLF after chunk data"));
                    }
                    self.state = ChunkState::Size;
                    i += 1;
                }
                ChunkState::TrailerStart => {
                    match b {
                        b'\r' => self.state = ChunkState::FinalLf,
                        b'\n' => return Err(ParseError::BareLf),
                        b' ' | b'\t' => {
                            return Err(ParseError::InvalidChunk("obs-fold in trailer"));
                        }
                        _ => self.state = ChunkState::Trailer,
                    }
                    self.bump_trailer()?;
                    i += 1;
                }
                ChunkState::Trailer => {
                    match b {
                        b'\r' => self.state = ChunkState::TrailerLf,
                        b'\n' => return Err(ParseError::BareLf),
                        _ => {}
                    }
                    self.bump_trailer()?;
                    i += 1;
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(ParseError::InvalidChunk("expected LF in trailer"));
                    }
                    self.bump_trailer()?;
                    self.state = ChunkState::TrailerStart;
                    i += 1;
                }
                ChunkState::FinalLf => {
                    if b != b'\n' {
                        return Err(ParseError::InvalidChunk("expected final LF"));
                    }
                    self.state = ChunkState::Done;
                    i += 1;
                    return Ok(ChunkProgress {
                        consumed: i,
                        done: true,
                    });
                }
                ChunkState::Done => break,
            }
        }
        Ok(ChunkProgress {
            consumed: i,
            done: self.state == ChunkState::Done,
        })
    }

    fn bump_trailer(&mut self) -> Result<(), ParseError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > Self::MAX_TRAILER_BYTES {
            return Err(ParseError::InvalidChunk("trailers too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Result<Parsed<(BodyFraming, bool)>, ParseError> {
        let mut h = [EMPTY_HEADER; 16];
        Ok(match parse_request_head(raw, &mut h)? {
            Parsed::Complete(r) => Parsed::Complete((r.framing, r.keep_alive)),
            Parsed::Partial => Parsed::Partial,
        })
    }

    #[test]
    fn simple_get_parses_with_no_body_and_keep_alive() {
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Parsed::Complete((BodyFraming::None, true)))
        );
    }

    #[test]
    fn smuggling_variants_are_rejected() {
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                ParseError::ConflictingContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
                ParseError::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                ParseError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::UnsupportedTransferEncoding,
            ),
            (
                b"GET / HTTP/1.1\nHost: a\r\n\r\n",
                ParseError::BareLf,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", ParseError::BadHost),
        ];
        for (raw, want) in cases {
            assert_eq!(req(raw), Err(*want), "{}", String::from_utf8_lossy(raw));
        }
        assert!(req(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n").is_err());
    }

    #[test]
    fn identical_repeated_content_length_is_accepted() {
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
            Ok(Parsed::Complete((BodyFraming::ContentLength(3), true)))
        );
    }

    #[test]
    fn chunked_decoder_reassembles_split_input() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 0..body.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let p1 = d.decode(&body[..split], &mut out, 1 << 20).unwrap();
            assert_eq!(p1.consumed, split);
            let p2 = d.decode(&body[split..], &mut out, 1 << 20).unwrap();
            assert!(p2.done);
            assert_eq!(out, b"Wikipedia");
        }
    }

    #[test]
    fn chunked_decoder_rejects_bad_sizes() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"0x1\r\n",
            b"1 \r\n",
            b"1\n",
            b"ffffffffffffffff\r\n",
            b"1\r\nab\r\n",
        ] {
            let mut d = ChunkedDecoder::new();
            assert!(
                d.decode(bad, &mut Vec::new(), 1 << 20).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_head_framing_follows_status_and_headers() {
        let mut h = [EMPTY_HEADER; 8];
        let Ok(Parsed::Complete(r)) =
            parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n", &mut h)
        else {
            panic!("204 should parse");
        };
        assert_eq!(r.framing, BodyFraming::None);
        let mut h = [EMPTY_HEADER; 8];
        let Ok(Parsed::Complete(r)) = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n", &mut h)
        else {
            panic!("200 should parse");
        };
        assert_eq!(r.framing, BodyFraming::UntilClose);
        assert!(!r.keep_alive);
    }
}
