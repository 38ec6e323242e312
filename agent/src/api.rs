//! The agent API v1 (DESIGN.md §3), independent of the transport.
//!
//! [`Api::handle`] maps one request (method, path, `Authorization` header, body) to a
//! response. `chaos agent` serves it with `faultline-http`; tests call it in-process too.
//!
//! Security model: every `/v1/*` call needs `Authorization: Bearer <token>`, compared in
//! constant time with the token from `--token-file`. A request without valid credentials
//! is answered 401 before its body is even parsed, so it changes nothing. `/healthz` and
//! `/metrics` are open: they reveal counts, never targets, and Prometheus scrapes them.

use faultline_spec::wire::{ApiError, ApplyCall, FaultList, RenewRequest, Route, WireError};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::agent::{Agent, AgentError};
use crate::openapi::CheckAnswer;

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
    /// `Content-Type`; empty for a response without a body.
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
        let route = match Route::of(req.method, req.path) {
            Ok(r) => r,
            Err(e) => return Response::error(e.status(), e.code(), e.to_string(), Vec::new()),
        };
        if !route.is_open() && !self.token.verify(req.authorization) {
            return Response::error(
                401,
                "unauthorized",
                "missing or invalid bearer token",
                Vec::new(),
            );
        }
        match route {
            Route::Health => Response {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                body: b"ok\n".to_vec(),
            },
            Route::Metrics => Response {
                status: 200,
                content_type: faultline_telemetry::CONTENT_TYPE,
                body: self.agent.metrics().encode().into_bytes(),
            },
            Route::OpenApi => Response {
                status: 200,
                content_type: "application/json",
                body: crate::openapi::document_bytes().to_vec(),
            },
            Route::Apply => {
                let call = match ApplyCall::decode(req.query, req.body) {
                    Ok(c) => c,
                    Err(e) => return Response::wire_error(&e),
                };
                if call.dry_run {
                    return match self.agent.check(&call.request).await {
                        Ok(backend) => Response::json(
                            200,
                            &CheckAnswer {
                                dry_run: true,
                                id: &call.request.id,
                                backend,
                            },
                        ),
                        Err(e) => Response::agent_error(&e),
                    };
                }
                // A repeated apply replays the first answer: same status, same state.
                match self.agent.apply(call.request).await {
                    Ok(o) => Response::json(201, &o.state),
                    Err(e) => Response::agent_error(&e),
                }
            }
            Route::List => Response::json(
                200,
                &FaultList {
                    faults: self.agent.list(),
                },
            ),
            Route::Get(id) => match self.agent.get(id) {
                Some(s) => Response::json(200, &s),
                None => Response::agent_error(&AgentError::NotFound(id.into())),
            },
            Route::Renew(id) => {
                let renew = match RenewRequest::from_json(req.body) {
                    Ok(r) => r,
                    Err(e) => return Response::wire_error(&e),
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
            Route::Revert(id) => match self.agent.revert(id).await {
                Ok(Some(s)) => Response::json(200, &s),
                Ok(None) => Response {
                    status: 204,
                    content_type: "",
                    body: Vec::new(),
                },
                Err(e) => Response::agent_error(&e),
            },
            Route::Capabilities => Response::json(200, &self.agent.capabilities()),
        }
    }
}

fn to_http(r: Response) -> faultline_http::Response {
    let mut resp = faultline_http::Response::new(r.status);
    if !r.content_type.is_empty() {
        resp = resp.with_content_type(faultline_http::HeaderValue::from(r.content_type));
    }
    resp.with_body(r.body)
}

/// The API as a `faultline-http` router: every route of DESIGN.md §3. A known path with
/// another method gets the router's 405 with `Allow`; an unknown path reaches
/// [`Api::handle`] for a 404 with an `ApiError` body.
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
    // The routes the API serves, so the HTTP layer answers a method a path does not take
    // with 405 and that path's `Allow`; every other path reaches [`Api::handle`], whose
    // 404 carries an `ApiError` body like every other error.
    let mut router = Router::new()
        .get("/healthz", route(api.clone()))
        .get("/metrics", route(api.clone()))
        .get("/v1/openapi.json", route(api.clone()))
        .route(Method::Post, "/v1/faults", route(api.clone()))
        .get("/v1/faults", route(api.clone()))
        .get("/v1/faults/{id}", route(api.clone()))
        .delete("/v1/faults/{id}", route(api.clone()))
        .post("/v1/faults/{id}/renew", route(api.clone()))
        .get("/v1/capabilities", route(api.clone()));
    for method in [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
        Method::Trace,
        Method::Connect,
    ] {
        router = router.route(method, "/{*path}", route(api.clone()));
    }
    router
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
