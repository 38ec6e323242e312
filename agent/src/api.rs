//! The agent API v1 (DESIGN.md §3), independent of the transport.
//!
//! [`Api::handle`] maps one request (method, path, `Authorization` header, body) to a
//! response. `chaos agent` serves it with `faultline-http`; tests call it in-process too.
//!
//! Security model: every `/v1/*` call needs `Authorization: Bearer <token>`, compared in
//! constant time with the token from `--token-file`. A request without valid credentials
//! is answered 401 before its body is even parsed, so it changes nothing. `/healthz` and
//! `/metrics` are open: they reveal counts, never targets, and Prometheus scrapes them.

use faultline_spec::wire::{ApiError, FaultList, FaultRequest, RenewRequest, WireError};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::agent::{Agent, AgentError};

/// A bearer token read from a file.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why a token file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The token is too short to be a secret.
    #[error("token file {0}: the token must be at least 16 characters")]
    TooShort(String),
}

impl Token {
    /// Minimum token length.
    pub const MIN_LEN: usize = 16;

    /// A token from its text; surrounding whitespace (a trailing newline) is ignored.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (t.len() >= Self::MIN_LEN).then(|| Self(t.as_bytes().to_vec()))
    }

    /// Reads the token from a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&text).ok_or_else(|| TokenError::TooShort(path.display().to_string()))
    }

    /// Whether an `Authorization` header value carries this token. The comparison takes
    /// the same time wherever the first differing byte is.
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return false;
        };
        presented.trim_ascii().ct_eq(&self.0).into()
    }
}

/// One API request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The body.
    pub body: &'a [u8],
}

/// One API response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    fn json<T: Serialize>(status: u16, value: &T) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("API types always serialize"),
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>, details: Vec<String>) -> Self {
        Self::json(
            status,
            &ApiError {
                error: code.into(),
                message: message.into(),
                details,
            },
        )
    }

    fn agent_error(e: &AgentError) -> Self {
        let (status, code) = e.status();
        Self::error(status, code, e.to_string(), Vec::new())
    }

    fn wire_error(e: &WireError) -> Self {
        let details = match e {
            WireError::Invalid(d) => d.to_string().lines().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        Self::error(e.status(), e.code(), e.to_string(), details)
    }
}

/// The API over one agent.
#[derive(Debug, Clone)]
pub struct Api {
    agent: Agent,
    token: Token,
    gate: Option<crate::tls::Gate>,
}

impl Api {
    /// Serves `agent`, admitting requests that carry `token`.
    pub fn new(agent: Agent, token: Token) -> Self {
        Self {
            agent,
            token,
            gate: None,
        }
    }

    /// Admits only connections the TLS terminator opened (see [`crate::tls`]); any other
    /// peer gets 403 before its request is looked at.
    pub fn with_gate(mut self, gate: crate::tls::Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The agent behind the API.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<'_>) -> Response {
        let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
        match (req.method, segments.as_slice()) {
            ("GET", ["healthz"]) => {
                return Response {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: b"ok\n".to_vec(),
                };
            }
            ("GET", ["metrics"]) => {
                return Response {
                    status: 200,
                    content_type: faultline_telemetry::CONTENT_TYPE,
                    body: self.agent.metrics().encode().into_bytes(),
                };
            }
            _ => {}
        }
        if segments.first() != Some(&"v1") {
            return Response::error(
                404,
                "not_found",
                format!("no route {}", req.path),
                Vec::new(),
            );
        }
        if !self.token.verify(req.authorization) {
            return Response::error(
                401,
                "unauthorized",
                "missing or invalid bearer token",
                Vec::new(),
            );
        }
        match (req.method, &segments[1..]) {
            ("POST", ["faults"]) => {
                let request = match FaultRequest::from_json(req.body) {
                    Ok(r) => r,
                    Err(e) => return Response::wire_error(&e),
                };
                match dry_run(req.query) {
                    Ok(false) => {}
                    Ok(true) => {
                        return match self.agent.check(&request).await {
                            Ok(backend) => Response::json(
                                200,
                                &CheckAnswer {
                                    dry_run: true,
                                    id: &request.id,
                                    backend,
                                },
                            ),
                            Err(e) => Response::agent_error(&e),
                        };
                    }
                    Err(why) => return Response::error(400, "malformed", why, Vec::new()),
                }
                // A repeated apply replays the first answer: same status, same state.
                match self.agent.apply(request).await {
                    Ok(o) => Response::json(201, &o.state),
                    Err(e) => Response::agent_error(&e),
                }
            }
            ("GET", ["faults"]) => Response::json(
                200,
                &FaultList {
                    faults: self.agent.list(),
                },
            ),
            ("GET", ["faults", id]) => match self.agent.get(id) {
                Some(s) => Response::json(200, &s),
                None => Response::agent_error(&AgentError::NotFound((*id).into())),
            },
            ("POST", ["faults", id, "renew"]) => {
                let renew: RenewRequest = match serde_json::from_slice(req.body) {
                    Ok(r) => r,
                    Err(e) => {
                        return Response::error(
                            400,
                            "malformed",
                            format!("malformed renew body: {e}"),
                            Vec::new(),
                        );
                    }
                };
                // A renewal of a kernel-enforced lease runs `nft` (milliseconds): keep it
                // off the async workers.
                let (agent, id) = (self.agent.clone(), id.to_string());
                let renewed =
                    tokio::task::spawn_blocking(move || agent.renew(&id, renew.ttl)).await;
                match renewed {
                    Ok(Ok(s)) => Response::json(200, &s),
                    Ok(Err(e)) => Response::agent_error(&e),
                    Err(e) => Response::error(500, "renew_failed", e.to_string(), Vec::new()),
                }
            }
            ("DELETE", ["faults", id]) => match self.agent.revert(id).await {
                Ok(Some(s)) => Response::json(200, &s),
                Ok(None) => Response {
                    status: 204,
                    content_type: "application/json",
                    body: Vec::new(),
                },
                Err(e) => Response::agent_error(&e),
            },
            ("GET", ["capabilities"]) => Response::json(200, &self.agent.capabilities()),
            (_, ["faults"] | ["faults", _] | ["faults", _, "renew"] | ["capabilities"]) => {
                Response::error(
                    405,
                    "method_not_allowed",
                    format!("{} {} is not allowed", req.method, req.path),
                    Vec::new(),
                )
            }
            _ => Response::error(
                404,
                "not_found",
                format!("no route {}", req.path),
                Vec::new(),
            ),
        }
    }
}

/// The answer to a dry run: the request would be applied by `backend`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckAnswer<'a> {
    dry_run: bool,
    id: &'a str,
    backend: &'static str,
}

/// Whether `POST /v1/faults` is a dry run: `?dryRun=true` (or `false`); any other
/// query is refused rather than ignored, so a typo never applies a fault.
fn dry_run(query: Option<&str>) -> Result<bool, String> {
    let mut dry = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("dryRun", "true")) => dry = true,
            Some(("dryRun", "false")) => dry = false,
            _ => {
                return Err(format!(
                    "unknown query `{pair}`: POST /v1/faults takes only dryRun=true|false"
                ));
            }
        }
    }
    Ok(dry)
}

fn to_http(r: Response) -> faultline_http::Response {
    faultline_http::Response::new(r.status)
        .with_content_type(faultline_http::HeaderValue::from(r.content_type))
        .with_body(r.body)
}

/// The API as a `faultline-http` router: every route of DESIGN.md §3. Unknown paths get
/// the router's 404, a known path with another method its 405.
pub fn router(api: Api) -> faultline_http::Router {
    use faultline_http::{Method, OwnedRequest, Router, handler_fn};
    let route = |api: Api| {
        handler_fn(move |req: OwnedRequest| {
            let api = api.clone();
            async move {
                if let Some(gate) = &api.gate
                    && !gate.admits(req.peer_addr())
                {
                    return to_http(Response::error(
                        403,
                        "tls_required",
                        "this agent accepts API calls over TLS only",
                        Vec::new(),
                    ));
                }
                let method = req.method().as_str();
                let response = api
                    .handle(Request {
                        method,
                        path: req.path(),
                        query: req.query(),
                        authorization: req.header("authorization"),
                        body: req.body(),
                    })
                    .await;
                to_http(response)
            }
        })
    };
    Router::new()
        .get("/healthz", route(api.clone()))
        .get("/metrics", route(api.clone()))
        .route(Method::Post, "/v1/faults", route(api.clone()))
        .get("/v1/faults", route(api.clone()))
        .get("/v1/faults/{id}", route(api.clone()))
        .delete("/v1/faults/{id}", route(api.clone()))
        .post("/v1/faults/{id}/renew", route(api.clone()))
        .get("/v1/capabilities", route(api))
}

/// Serves the API on `listener` until `shutdown` completes, then reverts every fault.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let agent = api.agent().clone();
    let served = faultline_http::Server::from_listener(listener)
        .serve_with_shutdown(router(api), shutdown)
        .await;
    for s in agent.revert_all().await {
        tracing::info!(id = %s.id, "reverted at shutdown");
    }
    served
}
