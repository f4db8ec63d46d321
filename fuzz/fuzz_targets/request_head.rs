//! Request-head handling on arbitrary bytes, parsed as Pingora parses them
//! (httparse, then a `RequestHeader` with the raw values): the framing check
//! never panics, and a head it lets through has framing only one reading of:
//! at most one all-digit `Content-Length`, never with `Transfer-Encoding`, a
//! `Transfer-Encoding` ending in a single `chunked`, one `Host` on HTTP/1.1,
//! no control characters, and heads within the limits.
#![no_main]

use flex_gateway::config::ClientLimits;
use flex_gateway::framing::check_request;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let Ok(mut head) = RequestHeader::build(method, path.as_bytes(), Some(req.headers.len()))
    else {
        return;
    };
    head.set_version(match req.version {
        Some(1) => http::Version::HTTP_11,
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_09,
    });
    for h in req.headers.iter() {
        let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
            return;
        };
        // as Pingora does: the parsed bytes, unchecked
        let value = unsafe {
            http::HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(h.value))
        };
        if head.append_header(name, value).is_err() {
            return;
        }
    }
    let limits = ClientLimits::default();
    if check_request(&head, Some(&data[..len]), &limits).is_err() {
        return;
    }
    // accepted: one reading only
    let lengths: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
    let codings: Vec<_> = head.headers.get_all(TRANSFER_ENCODING).iter().collect();
    assert!(lengths.len() <= 1, "several Content-Length");
    assert!(lengths.is_empty() || codings.is_empty(), "CL with TE");
    if let Some(cl) = lengths.first() {
        let b = cl.as_bytes();
        assert!(!b.is_empty() && b.iter().all(u8::is_ascii_digit), "CL {cl:?}");
    }
    if !codings.is_empty() {
        let all: Vec<String> = codings
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .collect();
        assert_eq!(all.last().map(String::as_str), Some("chunked"), "TE {all:?}");
        assert_eq!(all.iter().filter(|c| *c == "chunked").count(), 1, "TE {all:?}");
    }
    if head.version == http::Version::HTTP_11 {
        assert_eq!(head.headers.get_all(HOST).iter().count(), 1, "Host");
    }
    for (name, value) in head.headers.iter() {
        assert!(
            !value.as_bytes().iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f),
            "control character in {name}"
        );
    }
    assert!(len <= limits.max_header_bytes, "head over the limit");
    assert!(head.headers.len() <= limits.max_headers, "too many headers");
    assert!(path.len() <= limits.max_uri_bytes, "target over the limit");
});
