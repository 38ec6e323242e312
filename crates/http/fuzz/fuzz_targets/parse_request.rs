//! Feeds arbitrary bytes to the request and response head parsers and the chunked decoder.
//! Invariants: no panic; a complete head's length lies within the input and ends with CRLFCRLF;
//! a partial verdict never becomes an error merely because more bytes could follow (prefix
//! consistency); the decoder never consumes more than it was given.
#![no_main]

use faultline_http::parse::{
    BodyFraming, ChunkedDecoder, EMPTY_HEADER, Header, Parsed, parse_request_head,
    parse_request_head_uninit, parse_response_head,
};
use std::mem::MaybeUninit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server's uninitialised-slot variant must agree with the plain one.
    let mut slots = [EMPTY_HEADER; 64];
    let mut uninit = [const { MaybeUninit::<Header<'_>>::uninit() }; 64];
    match (
        parse_request_head(data, &mut slots),
        parse_request_head_uninit(data, &mut uninit),
    ) {
        (Ok(Parsed::Complete(a)), Ok(Parsed::Complete(b))) => {
            assert_eq!((a.head_len, a.framing, a.target), (b.head_len, b.framing, b.target));
            assert_eq!(a.headers.len(), b.headers.len());
        }
        (Ok(Parsed::Partial), Ok(Parsed::Partial)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("variants disagree: {a:?} vs {b:?}"),
    }
    let mut slots = [EMPTY_HEADER; 64];
    if let Ok(Parsed::Complete(h)) = parse_request_head(data, &mut slots) {
        assert!(h.head_len <= data.len());
        assert!(data[..h.head_len].ends_with(b"\r\n\r\n"));
        assert!(!(h.framing == BodyFraming::UntilClose));
        // Any prefix of a valid head is a partial head, never an error.
        for cut in [0, h.head_len / 2, h.head_len.saturating_sub(1)] {
            let mut slots = [EMPTY_HEADER; 64];
            assert!(matches!(
                parse_request_head(&data[..cut], &mut slots),
                Ok(Parsed::Partial)
            ));
        }
        if h.framing == BodyFraming::Chunked {
            let body = &data[h.head_len..];
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            if let Ok(p) = d.decode(body, &mut out, 1 << 20) {
                assert!(p.consumed <= body.len());
                assert!(out.len() <= body.len());
            }
        }
    }
    let mut slots = [EMPTY_HEADER; 64];
    if let Ok(Parsed::Complete(h)) = parse_response_head(data, &mut slots) {
        assert!(h.head_len <= data.len());
    }
    // The chunked decoder on raw input, fed in two pieces, must agree with one piece.
    let mut whole = ChunkedDecoder::new();
    let mut out_whole = Vec::new();
    let r_whole = whole.decode(data, &mut out_whole, 1 << 20);
    let split = data.len() / 3;
    let mut parts = ChunkedDecoder::new();
    let mut out_parts = Vec::new();
    let r1 = parts.decode(&data[..split], &mut out_parts, 1 << 20);
    if let (Ok(w), Ok(p1)) = (&r_whole, &r1) {
        if p1.consumed == split && !p1.done {
            if let Ok(p2) = parts.decode(&data[split..], &mut out_parts, 1 << 20) {
                assert_eq!(w.done, p2.done);
                assert_eq!(out_whole, out_parts);
            }
        }
    }
});
