//! Request-head handling on arbitrary bytes, parsed as Pingora parses them
//! (httparse, then a `RequestHeader` with the raw values): the framing check
//! never panics, and a head it lets through has framing only one reading of:
//! at most one all-digit `Content-Length`, never with `Transfer-Encoding`, a
//! `Transfer-Encoding` ending in a single `chunked`, one `Host` on HTTP/1.1,
//! no control characters, and heads within the limits.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_head(data));
