//! The router: a radix tree over path segments, method routing, and the middleware chain.
//!
//! Templates are `/`-separated segments; a segment is a literal, a `{name}` parameter (matches
//! one non-empty segment), or, last only, a `{*name}` catch-all (matches the rest of the path,
//! slashes included). Literals win over parameters, parameters over catch-alls, with
//! backtracking, so `/orders/new` and `/orders/{id}` coexist. Matching allocates nothing:
//! parameters are slices of the request path stored inline.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use crate::handler::{Handler, Reply};
use crate::middleware::{Ctx, Middleware};
use crate::request::{MAX_PARAMS, Method, Params, Request};
use crate::response::{HeaderValue, Response};

/// A route template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The template does not start with `/`.
    #[error("route template {0:?} must start with '/'")]
    NoLeadingSlash(String),
    /// A `{` `}` pair is not a whole segment, or the name is empty.
    #[error("route template {0:?}: parameters must be whole segments like {{id}} or {{*rest}}")]
    BadParam(String),
    /// A catch-all is not the last segment.
    #[error("route template {0:?}: a catch-all {{*name}} must be the last segment")]
    CatchAllNotLast(String),
    /// Two templates use different parameter names at the same position.
    #[error("route template {0:?}: conflicts with an existing parameter name at the same position")]
    ParamConflict(String),
    /// More than [`MAX_PARAMS`] parameters.
    #[error("route template {0:?} has more than {MAX_PARAMS} parameters")]
    TooManyParams(String),
    /// The same method and template were registered twice.
    #[error("{1} {0:?} is already routed")]
    Duplicate(String, Method),
}

struct Endpoint {
    template: Arc<str>,
    handlers: Vec<(Method, Arc<dyn Handler>)>,
    allow: HeaderValue,
}

impl Endpoint {
    fn new(template: &str) -> Self {
        Endpoint {
            template: template.into(),
            handlers: Vec::new(),
            allow: HeaderValue::from_static(""),
        }
    }

    fn handler(&self, method: Method) -> Option<&dyn Handler> {
        let find = |m| {
            self.handlers
                .iter()
                .find(|(hm, _)| *hm == m)
                .map(|(_, h)| &**h)
        };
        find(method).or_else(|| {
            if method == Method::Head {
                find(Method::Get)
            } else {
                None
            }
        })
    }
}

#[derive(Default)]
struct Node {
    statics: Vec<(Box<str>, Node)>,
    param: Option<(Box<str>, Box<Node>)>,
    catch_all: Option<(Box<str>, Endpoint)>,
    endpoint: Option<Endpoint>,
}

enum Segment<'t> {
    Static(&'t str),
    Param(&'t str),
    CatchAll(&'t str),
}

fn classify<'t>(template: &str, seg: &'t str) -> Result<Segment<'t>, RouteError> {
    if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        let (catch_all, name) = match inner.strip_prefix('*') {
            Some(n) => (true, n),
            None => (false, inner),
        };
        if name.is_empty() || name.contains(['{', '}', '*']) {
            return Err(RouteError::BadParam(template.into()));
        }
        return Ok(if catch_all {
            Segment::CatchAll(name)
        } else {
            Segment::Param(name)
        });
    }
    if seg.contains(['{', '}']) {
        return Err(RouteError::BadParam(template.into()));
    }
    Ok(Segment::Static(seg))
}

impl Node {
    fn endpoint_for(&mut self, template: &str) -> Result<&mut Endpoint, RouteError> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(RouteError::NoLeadingSlash(template.into()));
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let params = segs.iter().filter(|s| s.starts_with('{')).count();
        if params > MAX_PARAMS {
            return Err(RouteError::TooManyParams(template.into()));
        }
        let mut node = self;
        for (i, seg) in segs.iter().enumerate() {
            match classify(template, seg)? {
                Segment::Static(s) => {
                    let idx = match node.statics.iter().position(|(l, _)| &**l == s) {
                        Some(idx) => idx,
                        None => {
                            node.statics.push((s.into(), Node::default()));
                            node.statics.len() - 1
                        }
                    };
                    node = &mut node.statics[idx].1;
                }
                Segment::Param(name) => {
                    let (existing, child) = node
                        .param
                        .get_or_insert_with(|| (name.into(), Box::default()));
                    if &**existing != name {
                        return Err(RouteError::ParamConflict(template.into()));
                    }
                    node = child;
                }
                Segment::CatchAll(name) => {
                    if i + 1 != segs.len() {
                        return Err(RouteError::CatchAllNotLast(template.into()));
                    }
                    let (existing, ep) = node
                        .catch_all
                        .get_or_insert_with(|| (name.into(), Endpoint::new(template)));
                    if &**existing != name {
                        return Err(RouteError::ParamConflict(template.into()));
                    }
                    return Ok(ep);
                }
            }
        }
        Ok(node.endpoint.get_or_insert_with(|| Endpoint::new(template)))
    }

    fn find<'a>(&'a self, rest: Option<&'a str>, params: &mut Params<'a>) -> Option<&'a Endpoint> {
        let Some(rest) = rest else {
            return self.endpoint.as_ref();
        };
        // A plain scan: segments are short, and memchr's setup cost more than it saved here.
        let (seg, next) = match rest.bytes().position(|b| b == b'/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        for (label, child) in &self.statics {
            if &**label == seg {
                if let Some(ep) = child.find(next, params) {
                    return Some(ep);
                }
                break;
            }
        }
        if let Some((name, child)) = &self.param {
            if !seg.is_empty() {
                let mark = params.len();
                params.push(name, seg);
                if let Some(ep) = child.find(next, params) {
                    return Some(ep);
                }
                params.truncate(mark);
            }
        }
        if let Some((name, ep)) = &self.catch_all {
            params.push(name, rest);
            return Some(ep);
        }
        None
    }
}

/// The result of matching a method and path.
// `Found` carries the inline parameters; boxing them would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Match<'a> {
    /// A handler matched.
    Found {
        /// The handler.
        handler: &'a dyn Handler,
        /// The matched template.
        route: &'a Arc<str>,
        /// The captured parameters.
        params: Params<'a>,
    },
    /// The path matched, not the method; `allow` lists the methods that would.
    MethodNotAllowed {
        /// The matched template.
        route: &'a Arc<str>,
        /// The value for the `Allow` header.
        allow: &'a HeaderValue,
    },
    /// No template matched the path.
    NotFound,
}

/// [`Match`] without the parameters, which `Router::route_into` writes in place.
#[derive(Clone, Copy)]
enum Routed<'a> {
    Found {
        handler: &'a dyn Handler,
        route: &'a Arc<str>,
    },
    MethodNotAllowed {
        route: &'a Arc<str>,
        allow: &'a HeaderValue,
    },
    NotFound,
}

/// Routes requests to handlers and runs the middleware chain around them.
#[derive(Default)]
pub struct Router {
    root: Node,
    middleware: Vec<Box<dyn Middleware>>,
}

impl Router {
    /// An empty router: every request gets 404.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route, or explains why the template is invalid.
    pub fn try_route(
        mut self,
        method: Method,
        template: &str,
        handler: impl Handler,
    ) -> Result<Self, RouteError> {
        let ep = self.root.endpoint_for(template)?;
        if ep.handlers.iter().any(|(m, _)| *m == method) {
            return Err(RouteError::Duplicate(template.into(), method));
        }
        ep.handlers.push((method, Arc::new(handler)));
        let mut methods: Vec<Method> = ep.handlers.iter().map(|(m, _)| *m).collect();
        if methods.contains(&Method::Get) && !methods.contains(&Method::Head) {
            methods.push(Method::Head);
        }
        methods.sort();
        let allow = methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        ep.allow = HeaderValue::from(allow);
        Ok(self)
    }

    /// Adds a route.
    ///
    /// # Panics
    /// If the template is invalid (see [`RouteError`]); templates are program constants, so this
    /// is a programming error caught by the first test that builds the router. Use
    /// [`Router::try_route`] for templates from configuration.
    pub fn route(self, method: Method, template: &str, handler: impl Handler) -> Self {
        match self.try_route(method, template, handler) {
            Ok(r) => r,
            Err(e) => panic!("invalid route: {e}"),
        }
    }

    /// Adds a GET route (HEAD is answered by it too, without the body).
    pub fn get(self, template: &str, handler: impl Handler) -> Self {
        self.route(Method::Get, template, handler)
    }

    /// Adds a POST route.
    pub fn post(self, template: &str, handler: impl Handler) -> Self {
        self.route(Method::Post, template, handler)
    }

    /// Adds a PUT route.
    pub fn put(self, template: &str, handler: impl Handler) -> Self {
        self.route(Method::Put, template, handler)
    }

    /// Adds a DELETE route.
    pub fn delete(self, template: &str, handler: impl Handler) -> Self {
        self.route(Method::Delete, template, handler)
    }

    /// Appends a middleware; the first added runs its `before` first and its `after` last.
    pub fn layer(mut self, m: impl Middleware) -> Self {
        self.middleware.push(Box::new(m));
        self
    }

    /// The `Allow` value of the route matching `path` (without query): the methods it
    /// takes, `None` when no route matches. The server answers a method it does not
    /// implement with it (405), as the router does a method a route does not take.
    pub fn allowed<'a>(&'a self, path: &'a str) -> Option<&'a HeaderValue> {
        let mut params = Params::new();
        let rest = path.strip_prefix('/')?;
        self.root.find(Some(rest), &mut params).map(|ep| &ep.allow)
    }

    /// Matches a method and path (without query).
    pub fn lookup<'a>(&'a self, method: Method, path: &'a str) -> Match<'a> {
        let mut params = Params::new();
        match self.route_into(method, path, &mut params) {
            Routed::Found { handler, route } => Match::Found {
                handler,
                route,
                params,
            },
            Routed::MethodNotAllowed { route, allow } => Match::MethodNotAllowed { route, allow },
            Routed::NotFound => Match::NotFound,
        }
    }

    /// [`Router::lookup`] writing the parameters into `params` (left empty unless `Found`), so
    /// the server's request holds them without copying the inline array around.
    fn route_into<'a>(
        &'a self,
        method: Method,
        path: &'a str,
        params: &mut Params<'a>,
    ) -> Routed<'a> {
        params.truncate(0);
        let Some(rest) = path.strip_prefix('/') else {
            return Routed::NotFound;
        };
        match self.root.find(Some(rest), params) {
            None => Routed::NotFound,
            Some(ep) => match ep.handler(method) {
                Some(handler) => Routed::Found {
                    handler,
                    route: &ep.template,
                },
                None => {
                    params.truncate(0);
                    Routed::MethodNotAllowed {
                        route: &ep.template,
                        allow: &ep.allow,
                    }
                }
            },
        }
    }

    /// Routes `req`, runs the middleware chain and the handler, and returns the response.
    ///
    /// The server calls this for every request; tests may call it directly with
    /// [`Request::from_parts`]. A handler panic becomes a 500 (`ctx.panicked()` is then true in
    /// `after` hooks).
    pub async fn handle<'a>(&'a self, req: &mut Request<'a>) -> Response {
        // One async fn (no nested chain future): the response is moved as few times as
        // possible on the synchronous fast path.
        let mut ctx = Ctx::new(if self.middleware.is_empty() {
            // No hook can observe it; skip the clock read on the fast path.
            START.with(|s| *s)
        } else {
            Instant::now()
        });
        let path = req.path;
        let routed = self.route_into(req.method, path, &mut req.params);
        if let Routed::Found { route, .. } | Routed::MethodNotAllowed { route, .. } = routed {
            req.route = Some(route);
        }
        let mut ran = 0;
        let mut short = None;
        for m in &self.middleware {
            ran += 1;
            if let Some(resp) = m.before(req, &mut ctx) {
                short = Some(resp);
                break;
            }
        }
        let mut resp = match (short, routed) {
            (Some(resp), _) => resp,
            (None, Routed::MethodNotAllowed { allow, .. }) => {
                Response::static_json(405, r#"{"error":"method not allowed"}"#)
                    .with_header("allow", allow.clone())
            }
            (None, Routed::NotFound) => Response::static_json(404, r#"{"error":"not found"}"#),
            (None, Routed::Found { handler, .. }) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(req))) {
                    Ok(Reply::Ready(resp)) => resp,
                    Ok(Reply::Later(fut)) => match AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(resp) => resp,
                        Err(_) => {
                            ctx.set_panicked();
                            panic_response(req)
                        }
                    },
                    Err(_) => {
                        ctx.set_panicked();
                        panic_response(req)
                    }
                }
            }
        };
        for m in self.middleware[..ran].iter().rev() {
            m.after(req, &ctx, &mut resp);
        }
        resp
    }
}

fn panic_response(req: &Request<'_>) -> Response {
    tracing::error!(
        method = req.method().as_str(),
        route = req.route().unwrap_or(""),
        "handler panicked; answering 500"
    );
    Response::static_json(500, r#"{"error":"internal server error"}"#)
}

thread_local! {
    static START: Instant = Instant::now();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &Request<'_>) -> Response {
        Response::new(200)
    }

    fn route_of(r: &Router, m: Method, p: &str) -> Option<(String, Vec<(String, String)>)> {
        match r.lookup(m, p) {
            Match::Found { route, params, .. } => Some((
                route.to_string(),
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
            _ => None,
        }
    }

    #[test]
    fn literals_beat_params_and_params_beat_catch_all() {
        let r = Router::new()
            .get("/orders/new", ok)
            .get("/orders/{id}", ok)
            .get("/orders/{id}/items/{item}", ok)
            .get("/files/{*rest}", ok)
            .get("/", ok);
        assert_eq!(
            route_of(&r, Method::Get, "/orders/new").unwrap().0,
            "/orders/new"
        );
        let (t, p) = route_of(&r, Method::Get, "/orders/7").unwrap();
        assert_eq!((t.as_str(), p[0].1.as_str()), ("/orders/{id}", "7"));
        let (_, p) = route_of(&r, Method::Get, "/orders/7/items/x").unwrap();
        assert_eq!(p.len(), 2);
        let (_, p) = route_of(&r, Method::Get, "/files/a/b/c").unwrap();
        assert_eq!(p[0].1, "a/b/c");
        assert!(route_of(&r, Method::Get, "/").is_some());
        assert!(route_of(&r, Method::Get, "/orders/").is_none());
        assert!(route_of(&r, Method::Get, "/nope").is_none());
    }

    #[test]
    fn wrong_method_reports_allow_list() {
        let r = Router::new().get("/a", ok).post("/a", ok);
        match r.lookup(Method::Delete, "/a") {
            Match::MethodNotAllowed { allow, .. } => {
                assert_eq!(allow.as_bytes(), b"GET, HEAD, POST")
            }
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn invalid_templates_are_errors() {
        assert!(Router::new().try_route(Method::Get, "a", ok).is_err());
        assert!(Router::new().try_route(Method::Get, "/a{b}", ok).is_err());
        assert!(Router::new().try_route(Method::Get, "/{*a}/b", ok).is_err());
        assert!(Router::new().try_route(Method::Get, "/{}", ok).is_err());
        let r = Router::new().get("/{a}", ok);
        assert!(r.try_route(Method::Get, "/{b}/x", ok).is_err());
    }
}
