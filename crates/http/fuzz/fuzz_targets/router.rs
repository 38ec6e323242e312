//! Registers templates derived from the input and looks up paths from the input.
//! Invariants: no panic; an invalid template is an error, not a crash; every match returns
//! parameters whose values are substrings of the path.
#![no_main]

use faultline_http::router::Match;
use faultline_http::{Method, Request, Response, Router};
use libfuzzer_sys::fuzz_target;

fn ok(_: &Request<'_>) -> Response {
    Response::new(200)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let mut router = Router::new()
        .get("/", ok)
        .get("/orders/{id}", ok)
        .get("/orders/new", ok)
        .post("/orders/{id}/items/{item}", ok)
        .get("/static/{*rest}", ok);
    // The first few lines are extra templates; the rest are paths.
    for template in lines.by_ref().take(4) {
        router = match router.try_route(Method::Put, template, ok) {
            Ok(r) => r,
            Err(_) => Router::new().get("/{a}/{b}", ok).get("/{*all}", ok),
        };
    }
    for path in lines {
        for method in [Method::Get, Method::Post, Method::Put, Method::Delete] {
            if let Match::Found { params, route, .. } = router.lookup(method, path) {
                assert!(route.starts_with('/'));
                for (_, v) in params.iter() {
                    assert!(path.contains(v));
                }
            }
        }
    }
});
