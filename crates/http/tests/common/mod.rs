//! Helpers shared by the behaviour tests: port-0 servers and a raw-socket client that reads
//! responses with the crate's own response parser.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use faultline_http::parse::{
    BodyFraming, ChunkedDecoder, EMPTY_HEADER, Parsed, parse_response_head,
};
use faultline_http::{Router, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server on 127.0.0.1:0, stopped (gracefully) by `stop`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(app: Router) -> TestServer {
        Self::start_with(app, ServerConfig::default()).await
    }

    pub async fn start_with(app: Router, config: ServerConfig) -> TestServer {
        let server = Server::bind("127.0.0.1:0")
            .await
            .expect("bind port 0")
            .with_config(config);
        let addr = server.local_addr().expect("local addr");
        let token = CancellationToken::new();
        let task = tokio::spawn(server.serve_with_shutdown(app, token.clone().cancelled_owned()));
        TestServer { addr, token, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.task
            .await
            .expect("server task")
            .expect("server result");
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection: writes arbitrary bytes, reads responses one by one.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response (for a request that was not HEAD). Panics on EOF.
    pub async fn response(&mut self) -> RawResponse {
        self.try_response(false)
            .await
            .expect("connection closed before a response")
    }

    /// Reads one response to a HEAD request.
    pub async fn head_response(&mut self) -> RawResponse {
        self.try_response(true)
            .await
            .expect("connection closed before a response")
    }

    /// Reads one response, or `None` if the server closed the connection first.
    pub async fn try_response(&mut self, head_request: bool) -> Option<RawResponse> {
        loop {
            let mut slots = [EMPTY_HEADER; 64];
            match parse_response_head(&self.buf, &mut slots).expect("valid response head") {
                Parsed::Complete(h) => {
                    let status = h.status;
                    let headers: Vec<(String, String)> = h
                        .headers
                        .iter()
                        .map(|x| {
                            (
                                x.name.to_owned(),
                                String::from_utf8_lossy(x.value).into_owned(),
                            )
                        })
                        .collect();
                    let head_len = h.head_len;
                    let framing = if head_request {
                        BodyFraming::None
                    } else {
                        h.framing
                    };
                    let body = self.body(head_len, framing).await;
                    return Some(RawResponse {
                        status,
                        headers,
                        body,
                    });
                }
                Parsed::Partial => {
                    if self.fill().await == 0 {
                        assert!(self.buf.is_empty(), "EOF inside a response head");
                        return None;
                    }
                }
            }
        }
    }

    async fn body(&mut self, head_len: usize, framing: BodyFraming) -> Vec<u8> {
        match framing {
            BodyFraming::None => {
                self.buf.drain(..head_len);
                Vec::new()
            }
            BodyFraming::ContentLength(n) => {
                let need = head_len + n as usize;
                while self.buf.len() < need {
                    assert!(self.fill().await > 0, "EOF inside a body");
                }
                let body = self.buf[head_len..need].to_vec();
                self.buf.drain(..need);
                body
            }
            BodyFraming::Chunked => {
                let mut d = ChunkedDecoder::new();
                let mut out = Vec::new();
                let mut pos = head_len;
                loop {
                    let p = d
                        .decode(&self.buf[pos..], &mut out, usize::MAX)
                        .expect("valid chunks");
                    pos += p.consumed;
                    if p.done {
                        self.buf.drain(..pos);
                        return out;
                    }
                    assert!(self.fill().await > 0, "EOF inside a chunked body");
                }
            }
            BodyFraming::UntilClose => {
                while self.fill().await > 0 {}
                let body = self.buf[head_len..].to_vec();
                self.buf.clear();
                body
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) with no further bytes.
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Sends one raw request on a fresh connection and reads the response.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut c = Raw::connect(addr).await;
    c.send(raw).await;
    c.response().await
}
