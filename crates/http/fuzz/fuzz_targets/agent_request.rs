//! The agent API's request decoding, from the raw bytes on the wire to a validated request:
//! the HTTP head parser, then `Route::of`, then the body decoders of `POST /v1/faults`
//! (with its `dryRun` query) and `POST /v1/faults/{id}/renew`.
//!
//! The first input byte picks the entry point: an HTTP request (head and body), a bare
//! `POST /v1/faults` body, or a bare renew body, so the JSON decoders are fuzzed directly
//! too (random bytes rarely form a request head).
//! Invariants: no panic; a refusal is a 4xx; a request the agent accepts serializes to a
//! body the agent accepts again, naming the same fault id, experiment, target and kind.
#![no_main]

use faultline_http::parse::{BodyFraming, EMPTY_HEADER, Parsed, parse_request_head};
use faultline_spec::wire::{ApplyCall, FaultRequest, RenewRequest, Route};
use libfuzzer_sys::fuzz_target;

fn apply(query: Option<&str>, body: &[u8]) {
    match ApplyCall::decode(query, body) {
        Ok(call) => {
            let again = serde_json::to_vec(&call.request).expect("a request serializes");
            let back = FaultRequest::from_json(&again).unwrap_or_else(|e| {
                panic!(
                    "an accepted request's own serialization is refused: {e}\n{}",
                    String::from_utf8_lossy(&again)
                )
            });
            assert_eq!(back.id, call.request.id);
            assert_eq!(back.experiment, call.request.experiment);
            assert_eq!(back.target, call.request.target);
            assert_eq!(back.fault.name(), call.request.fault.name());
        }
        Err(e) => assert!((400..500).contains(&e.status()), "{e}"),
    }
}

fn renew(body: &[u8]) {
    match RenewRequest::from_json(body) {
        Ok(r) => {
            let again = serde_json::to_vec(&r).expect("a renewal serializes");
            assert_eq!(RenewRequest::from_json(&again).expect("round trip"), r);
        }
        Err(e) => assert!((400..500).contains(&e.status()), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => apply(None, rest),
        1 => renew(rest),
        _ => {
            let mut slots = [EMPTY_HEADER; 64];
            let Ok(Parsed::Complete(head)) = parse_request_head(rest, &mut slots) else {
                return;
            };
            let after = &rest[head.head_len..];
            let body = match head.framing {
                BodyFraming::ContentLength(n) => &after[..after.len().min(n as usize)],
                _ => after,
            };
            let (path, query) = match head.target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (head.target, None),
            };
            match Route::of(head.method, path) {
                Ok(Route::Apply) => apply(query, body),
                Ok(Route::Renew(id)) => {
                    assert!(!id.is_empty() && !id.contains('/'));
                    renew(body)
                }
                Ok(Route::Get(id) | Route::Revert(id)) => {
                    assert!(!id.is_empty() && !id.contains('/'))
                }
                Ok(_) => {}
                Err(e) => assert!(matches!(e.status(), 404 | 405), "{e}"),
            }
        }
    }
});
