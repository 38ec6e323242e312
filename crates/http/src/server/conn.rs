//! One connection: read, parse in place, dispatch, batch responses, repeat.
//!
//! Every buffer lives in `Conn` for the connection's lifetime, so a warm keep-alive connection
//! serving a synchronous handler with a static body allocates nothing per request: the head is
//! parsed into a stack array of header slots that borrow the read buffer, the router fills
//! inline parameters, and the response is serialized into a reused write buffer. All responses
//! to the requests found in one read are written with a single `write` (pipelining batches).

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::{ConnState, Drain, ServerConfig};
use crate::date::{self, DATE_LEN};
use crate::parse::{
    BodyFraming, ChunkedDecoder, Header, MAX_HEADERS, Parsed, parse_request_head_uninit,
};
use crate::request::{Method, Params, Request, split_target};
use crate::response::{Body, Response, is_valid_header_name, reason};
use crate::router::Router;

/// Bodies at least this large are written straight from the response instead of being copied
/// into the batch buffer.
const DIRECT_WRITE: usize = 64 * 1024;
/// Flush the batch buffer once it holds this much, even mid-batch.
const FLUSH_AT: usize = 256 * 1024;

pub(super) async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: &Router,
    cfg: &ServerConfig,
    drain: &Drain,
    state: &ConnState,
) {
    let mut conn = Conn {
        buf: vec![0; cfg.read_buffer_size.max(512)],
        start: 0,
        end: 0,
        out: Vec::with_capacity(cfg.read_buffer_size.max(512)),
        chunk_body: Vec::new(),
        chunk_state: None,
        continue_sent: false,
    };
    if let Err(e) = conn.run(&mut stream, peer, app, cfg, drain, state).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

struct Conn {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    chunk_body: Vec<u8>,
    /// Decoder state of a chunked body that spans reads.
    chunk_state: Option<ChunkedDecoder>,
    continue_sent: bool,
}

/// What processing the buffered bytes led to.
enum Step {
    /// One request was answered; `consumed` bytes of the buffer belong to it.
    Done { consumed: usize, close: bool },
    /// The head is incomplete.
    NeedHead,
    /// The head is complete, the body is not.
    NeedBody { expect_continue: bool },
    /// A response was queued and the connection must close.
    Close,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Body,
}

enum ReadOutcome {
    Data,
    Eof,
    Timeout,
}

/// A lazily re-armed deadline: the timer is reset only when it fires early or must fire
/// sooner, so the common read path does not touch the timer wheel.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

impl Conn {
    async fn run(
        &mut self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        app: &Router,
        cfg: &ServerConfig,
        drain: &Drain,
        state: &ConnState,
    ) -> std::io::Result<()> {
        let now = Instant::now();
        let first = now + cfg.keep_alive_timeout;
        let mut timer = Timer {
            sleep: Box::pin(tokio::time::sleep_until(first)),
            armed: first,
        };
        let mut last_activity = now;
        let mut head_started = now;
        let mut phase = Phase::Idle;
        loop {
            // One clock read per batch: `last_activity` is when its bytes arrived.
            let date = date::at(last_activity);
            let mut close = false;
            // Answer every complete request already buffered (pipelining), batching the output.
            while self.start < self.end {
                match self
                    .process_one(stream, peer, app, cfg, drain, &date)
                    .await?
                {
                    Step::Done { consumed, close: c } => {
                        self.start += consumed;
                        self.continue_sent = false;
                        phase = Phase::Idle;
                        if c {
                            close = true;
                            break;
                        }
                        if self.out.len() >= FLUSH_AT {
                            stream.write_all(&self.out).await?;
                            self.out.clear();
                        }
                    }
                    Step::NeedHead => {
                        if phase != Phase::Head {
                            phase = Phase::Head;
                            head_started = last_activity;
                        }
                        break;
                    }
                    Step::NeedBody { expect_continue } => {
                        phase = Phase::Body;
                        if expect_continue && !self.continue_sent {
                            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            self.continue_sent = true;
                        }
                        break;
                    }
                    Step::Close => {
                        close = true;
                        break;
                    }
                }
            }
            if !self.out.is_empty() {
                write_out(stream, &self.out).await?;
                self.out.clear();
            }
            if close {
                return linger_close(stream).await;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                if phase == Phase::Idle && !state.enter_idle(drain) {
                    return Ok(());
                }
            }
            self.make_room(cfg);
            let deadline = match phase {
                Phase::Idle => last_activity + cfg.keep_alive_timeout,
                Phase::Head => head_started + cfg.header_read_timeout,
                Phase::Body => last_activity + cfg.body_read_timeout,
            };
            match self.read_more(stream, &mut timer, deadline).await? {
                ReadOutcome::Data => {
                    if !state.enter_busy() {
                        return Ok(());
                    }
                    last_activity = Instant::now();
                }
                ReadOutcome::Eof => return Ok(()),
                ReadOutcome::Timeout => {
                    if phase == Phase::Idle {
                        return Ok(());
                    }
                    tracing::debug!(%peer, "request read timed out; answering 408");
                    write_simple(&mut self.out, 408, &date, r#"{"error":"request timeout"}"#);
                    stream.write_all(&self.out).await?;
                    self.out.clear();
                    return linger_close(stream).await;
                }
            }
        }
    }

    /// Ensures free space after `end`: compacts, then grows up to the head plus body limits.
    fn make_room(&mut self, cfg: &ServerConfig) {
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return;
        }
        let limit = cfg.max_head_size + cfg.max_body_size + 64 * 1024;
        let new_len = (self.buf.len() * 2).min(limit).max(self.buf.len() + 1);
        self.buf.resize(new_len, 0);
    }

    async fn read_more(
        &mut self,
        stream: &mut TcpStream,
        timer: &mut Timer,
        deadline: Instant,
    ) -> std::io::Result<ReadOutcome> {
        if deadline < timer.armed {
            timer.sleep.as_mut().reset(deadline);
            timer.armed = deadline;
        }
        loop {
            tokio::select! {
                biased;
                r = stream.read(&mut self.buf[self.end..]) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(ReadOutcome::Eof);
                    }
                    self.end += n;
                    return Ok(ReadOutcome::Data);
                }
                () = &mut timer.sleep => {
                    if Instant::now() >= deadline {
                        return Ok(ReadOutcome::Timeout);
                    }
                    timer.sleep.as_mut().reset(deadline);
                    timer.armed = deadline;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn process_one(
        &mut self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        app: &Router,
        cfg: &ServerConfig,
        drain: &Drain,
        date: &[u8; DATE_LEN],
    ) -> std::io::Result<Step> {
        let max_headers = cfg.max_headers.clamp(1, MAX_HEADERS);
        let mut slots = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
        let Conn {
            buf,
            start,
            end,
            out,
            chunk_body,
            chunk_state,
            ..
        } = self;
        let input = &buf[*start..*end];
        let head = match parse_request_head_uninit(input, &mut slots[..max_headers]) {
            Ok(Parsed::Complete(h)) if h.head_len > cfg.max_head_size => {
                write_simple(out, 431, date, r#"{"error":"request head too large"}"#);
                return Ok(Step::Close);
            }
            Ok(Parsed::Complete(h)) => h,
            Ok(Parsed::Partial) => {
                if input.len() > cfg.max_head_size {
                    write_simple(out, 431, date, r#"{"error":"request head too large"}"#);
                    return Ok(Step::Close);
                }
                return Ok(Step::NeedHead);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "rejecting malformed request");
                let status = e.status();
                let body = if status == 431 {
                    r#"{"error":"request head too large"}"#
                } else {
                    r#"{"error":"bad request"}"#
                };
                write_simple(out, status, date, body);
                return Ok(Step::Close);
            }
        };
        let Some(method) = Method::from_bytes(head.method.as_bytes()) else {
            // A method this stack does not implement is the client's mistake like any other
            // method the path does not take: 405 with the path's `Allow` (404 without a
            // route), never a 5xx. RFC 9110 suggests 501; see docs/deviations.md.
            match app.allowed(split_target(head.target).0) {
                Some(allow) => {
                    push_status_line(out, 405);
                    out.extend_from_slice(b"allow: ");
                    out.extend_from_slice(allow.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    write_simple_tail(out, date, r#"{"error":"method not allowed"}"#);
                }
                None => write_simple(out, 404, date, r#"{"error":"not found"}"#),
            }
            return Ok(Step::Close);
        };
        let after_head = &input[head.head_len..];
        let (body, raw_body_len): (&[u8], usize) = match head.framing {
            BodyFraming::None | BodyFraming::UntilClose => (&[], 0),
            BodyFraming::ContentLength(n) => {
                if n > cfg.max_body_size as u64 {
                    write_simple(out, 413, date, r#"{"error":"request body too large"}"#);
                    return Ok(Step::Close);
                }
                let n = n as usize;
                if after_head.len() < n {
                    return Ok(Step::NeedBody {
                        expect_continue: head.expect_continue,
                    });
                }
                (&after_head[..n], n)
            }
            BodyFraming::Chunked => {
                let decoder = chunk_state.get_or_insert_with(|| {
                    chunk_body.clear();
                    ChunkedDecoder::new()
                });
                match decoder.decode(after_head, chunk_body, cfg.max_body_size) {
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "rejecting bad chunked body");
                        *chunk_state = None;
                        write_simple(out, 400, date, r#"{"error":"bad request"}"#);
                        return Ok(Step::Close);
                    }
                    Ok(_) if chunk_body.len() > cfg.max_body_size => {
                        *chunk_state = None;
                        write_simple(out, 413, date, r#"{"error":"request body too large"}"#);
                        return Ok(Step::Close);
                    }
                    Ok(p) if p.done => {
                        *chunk_state = None;
                        (&chunk_body[..], p.consumed)
                    }
                    Ok(p) => {
                        // Drop the raw bytes already decoded so the buffer holds at most the
                        // head and one partial chunk line, whatever the chunk sizes.
                        let expect_continue = head.expect_continue;
                        let from = *start + head.head_len;
                        buf.copy_within(from + p.consumed..*end, from);
                        *end -= p.consumed;
                        return Ok(Step::NeedBody { expect_continue });
                    }
                }
            }
        };
        let (path, query) = split_target(head.target);
        let mut req = Request {
            method,
            path,
            query,
            minor_version: head.minor_version,
            headers: head.headers,
            body,
            params: Params::new(),
            route: None,
            peer,
            request_id: None,
        };
        let mut resp = app.handle(&mut req).await;
        let keep_alive = head.keep_alive && !drain.is_draining();
        write_response(
            stream,
            out,
            &mut resp,
            date,
            method == Method::Head,
            !keep_alive,
        )
        .await?;
        Ok(Step::Done {
            consumed: head.head_len + raw_body_len,
            close: !keep_alive,
        })
    }
}

fn push_status_line(out: &mut Vec<u8>, status: u16) {
    if status == 200 {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Queues a small server-generated response that closes the connection.
fn write_simple(out: &mut Vec<u8>, status: u16, date: &[u8; DATE_LEN], body: &'static str) {
    push_status_line(out, status);
    write_simple_tail(out, date, body);
}

/// The headers after the status line (and any extra headers) and the body of
/// [`write_simple`].
fn write_simple_tail(out: &mut Vec<u8>, date: &[u8; DATE_LEN], body: &'static str) {
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
}

fn headers_are_safe(resp: &Response) -> bool {
    resp.content_type().is_none_or(|v| v.is_valid())
        && resp
            .headers()
            .iter()
            .all(|(n, v)| is_valid_header_name(n) && v.is_valid())
}

/// Serializes `resp` into `out` (streamed bodies are written to the socket directly).
async fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    resp: &mut Response,
    date: &[u8; DATE_LEN],
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    if !headers_are_safe(resp) {
        // CR/LF in a header would let a caller-controlled value inject headers or split the
        // response; refuse to send it at all.
        tracing::error!(
            status = resp.status(),
            "response header contains CR, LF or NUL or an invalid name; answering 500"
        );
        *resp = Response::static_json(500, r#"{"error":"internal server error"}"#);
    }
    let status = resp.status();
    push_status_line(out, status);
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = resp.content_type() {
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let bodyless_status = (100..200).contains(&status) || status == 204 || status == 304;
    match resp.body().len() {
        Some(len) => {
            if !bodyless_status {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            if head_only || bodyless_status {
                return Ok(());
            }
            let body = resp.body().as_slice();
            if body.len() >= DIRECT_WRITE {
                stream.write_all(out).await?;
                out.clear();
                stream.write_all(body).await?;
            } else {
                out.extend_from_slice(body);
            }
        }
        None => {
            if head_only || bodyless_status {
                out.extend_from_slice(b"\r\n");
                return Ok(());
            }
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            stream.write_all(out).await?;
            out.clear();
            if let Body::Stream(mut rx) = resp.take_body() {
                while let Some(chunk) = rx.recv().await {
                    if chunk.is_empty() {
                        continue;
                    }
                    let mut size = [0u8; 18];
                    let n = hex(chunk.len(), &mut size);
                    stream.write_all(&size[..n]).await?;
                    stream.write_all(&chunk).await?;
                    stream.write_all(b"\r\n").await?;
                }
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(())
}

/// Writes a batch of responses. The socket almost always has room, so one direct `send`
/// usually finishes the job without building a write future (measurably cheaper per request).
async fn write_out(stream: &mut TcpStream, out: &[u8]) -> std::io::Result<()> {
    let written = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if written < out.len() {
        stream.write_all(&out[written..]).await?;
    }
    Ok(())
}

/// Writes `n` in hex followed by CRLF into `buf`, returning the length.
fn hex(mut n: usize, buf: &mut [u8; 18]) -> usize {
    let mut digits = [0u8; 16];
    let mut i = 0;
    loop {
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        i += 1;
        if n == 0 {
            break;
        }
    }
    for (j, d) in digits[..i].iter().rev().enumerate() {
        buf[j] = *d;
    }
    buf[i] = b'\r';
    buf[i + 1] = b'\n';
    i + 2
}

/// Closes after a final response without losing it: send FIN, then discard what the client is
/// still sending for a moment. Closing with unread input would make the kernel send RST, which
/// can destroy the response before the client reads it (e.g. a 413 during an upload).
async fn linger_close(stream: &mut TcpStream) -> std::io::Result<()> {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < 1 << 20 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_chunk_sizes_end_with_crlf() {
        let mut b = [0u8; 18];
        let n = super::hex(0x1a2b, &mut b);
        assert_eq!(&b[..n], b"1a2b\r\n");
        let n = super::hex(0, &mut b);
        assert_eq!(&b[..n], b"0\r\n");
    }
}
