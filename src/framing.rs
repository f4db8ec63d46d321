//! HTTP/1 message checks the gateway makes before it trusts a request or a
//! response head (RFC 9112 §6-7, RFC 9110 §7.2): anything two parsers could
//! frame differently is refused, so the upstream only ever receives framing
//! the gateway produced itself. Pure functions over Pingora's parsed head
//! (its header map keeps duplicates and raw values).
//!
//! Requests: `Content-Length` with `Transfer-Encoding`; several
//! `Content-Length` values or a list (even of equal values); a
//! `Transfer-Encoding` whose final coding is not exactly `chunked`, or with
//! `chunked` more than once; an HTTP/1.1 request without `Host`, with
//! several, or whose absolute-form target names another authority; control
//! characters in header values; a case variant of a standard method
//! (`get`); more than one `Authorization`. Limits: header count and size
//! (431), target length (414).

use http::{HeaderMap, Version};
use pingora::http::{RequestHeader, ResponseHeader};

/// The limits on a request head are a listener's [`ClientLimits`]
/// (`max_header_bytes`, `max_headers`, `max_uri_bytes`).
pub use crate::config::ClientLimits as Limits;

/// Why a request is refused: the status, and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

fn refuse(status: u16, message: &'static str) -> Result<(), Refusal> {
    Err(Refusal { status, message })
}

/// Framing shared by requests and responses; `Ok(true)` when the message
/// has a `Transfer-Encoding`.
fn check_body_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    // no allocation on the common paths: this runs for every request and
    // every response
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let codings = headers.get_all(http::header::TRANSFER_ENCODING);
    let chunked_body = codings.iter().next().is_some();
    if let Some(one) = lengths.next() {
        if chunked_body {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if lengths.next().is_some() {
            return Err("more than one Content-Length");
        }
        let one = one.as_bytes();
        if one.is_empty() || !one.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length is not a single number");
        }
    }
    if chunked_body {
        let codings: Vec<&[u8]> = codings.iter().map(|v| v.as_bytes()).collect();
        let all: Vec<String> = codings
            .iter()
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .collect();
        let chunked = all.iter().filter(|c| *c == "chunked").count();
        if all.last().map(String::as_str) != Some("chunked") {
            return Err("Transfer-Encoding does not end in chunked");
        }
        if chunked > 1 {
            return Err("chunked applied more than once");
        }
        if all.iter().any(|c| c.is_empty()) {
            return Err("an empty transfer coding");
        }
    }
    Ok(())
}

/// Control characters other than HTAB in a header value.
fn has_control(headers: &HeaderMap) -> bool {
    headers.values().any(|v| {
        v.as_bytes()
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    })
}

/// The authority of an absolute-form target (`http://host:port/path`).
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let i = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..i];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = &target[i + 3..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Check a request head as it arrived from a client. `raw` is the head as
/// sent (Pingora's HTTP/1 session keeps it): Pingora drops `Content-Length`
/// from the parsed map when `Transfer-Encoding` is present, so that pair is
/// only visible there.
pub fn check_request(
    req: &RequestHeader,
    raw: Option<&[u8]>,
    limits: &Limits,
) -> Result<(), Refusal> {
    let target = req.raw_path();
    if target.len() > limits.max_uri_bytes {
        return refuse(414, "request target too long");
    }
    if req.headers.len() > limits.max_headers {
        return refuse(431, "too many request headers");
    }
    let size: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limits.max_header_bytes {
        return refuse(431, "request header section too large");
    }
    if let Err(why) = check_body_framing(&req.headers) {
        return Err(Refusal {
            status: 400,
            message: why,
        });
    }
    if req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && raw.is_some_and(|raw| raw_has_header(raw, "content-length"))
    {
        return refuse(400, "both Content-Length and Transfer-Encoding");
    }
    if has_control(&req.headers) {
        return refuse(400, "control character in a header value");
    }
    if req.version == Version::HTTP_10 && req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return refuse(400, "Transfer-Encoding in an HTTP/1.0 request");
    }
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let host = hosts.next().map(|v| v.as_bytes());
    if hosts.next().is_some() {
        return refuse(400, "more than one Host header");
    }
    if req.version == Version::HTTP_11 && host.is_none() {
        return refuse(400, "an HTTP/1.1 request needs a Host header");
    }
    if let (Some(authority), Some(host)) = (absolute_authority(target), host) {
        if !authority.eq_ignore_ascii_case(host) {
            return refuse(400, "the request target's authority differs from Host");
        }
    }
    if is_case_variant(req.method.as_str()) {
        // methods are case-sensitive (RFC 9110 §9.1), but backends that
        // upper-case them would run `post` as POST past a rule for POST
        return refuse(400, "a method is case-sensitive: write it in upper case");
    }
    let mut credentials = req.headers.get_all(http::header::AUTHORIZATION).iter();
    if credentials.next().is_some() && credentials.next().is_some() {
        // which one would a policy check, which one would the upstream read?
        return refuse(400, "more than one Authorization header");
    }
    Ok(())
}

/// A case variant of a standard method (`get`, `Post`), not the method.
fn is_case_variant(method: &str) -> bool {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    method.bytes().any(|b| b.is_ascii_lowercase())
        && STANDARD.iter().any(|m| m.eq_ignore_ascii_case(method))
}

/// Header names with an underscore: to CGI, WSGI, PHP and Rack,
/// `X_User` and `X-User` are one variable.
pub fn has_underscored(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| k.as_str().contains('_'))
}

/// Headers that say how a message is framed or carried hop by hop: the
/// gateway sets them itself on the responses it writes.
pub fn is_framing_header(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Does the raw head carry a header called `name`? (RFC 9112 §6.3 lets a
/// server drop `Content-Length` next to `Transfer-Encoding`, as Pingora
/// does; the gateway refuses such a request instead.)
pub fn raw_has_header(raw: &[u8], name: &str) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && matches!(line[name.len()], b':' | b' ' | b'\t')
    })
}

/// Check a response head from an upstream: ambiguous framing or a header
/// section over `max_bytes` (`maxResponseHeaderSize`) is a 502.
pub fn check_response(resp: &ResponseHeader, max_bytes: usize) -> Result<(), &'static str> {
    let size: usize = resp
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > max_bytes {
        return Err("header section over maxResponseHeaderSize");
    }
    check_body_framing(&resp.headers)?;
    if has_control(&resp.headers) {
        return Err("control character in a header value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &[u8])]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), http::HeaderValue::from_bytes(v).unwrap())
                .unwrap();
        }
        r
    }

    fn status(headers: &[(&str, &[u8])]) -> u16 {
        match check_request(&req(headers), None, &Limits::default()) {
            Ok(()) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn framing() {
        let h: (&str, &[u8]) = ("host", b"a");
        assert_eq!(status(&[h, ("content-length", b"5")]), 200);
        assert_eq!(status(&[h, ("transfer-encoding", b"chunked")]), 200);
        assert_eq!(status(&[h, ("transfer-encoding", b"gzip, chunked")]), 200);
        assert_eq!(
            status(&[
                h,
                ("content-length", b"5"),
                ("transfer-encoding", b"chunked")
            ]),
            400
        );
        assert_eq!(
            status(&[h, ("content-length", b"5"), ("content-length", b"5")]),
            400
        );
        assert_eq!(status(&[h, ("content-length", b"5, 5")]), 400);
        assert_eq!(status(&[h, ("content-length", b"+5")]), 400);
        assert_eq!(status(&[h, ("transfer-encoding", b"chunked, gzip")]), 400);
        assert_eq!(
            status(&[h, ("transfer-encoding", b"chunked, chunked")]),
            400
        );
        assert_eq!(
            status(&[
                h,
                ("transfer-encoding", b"chunked"),
                ("transfer-encoding", b"chunked")
            ]),
            400
        );
        assert_eq!(status(&[h, ("transfer-encoding", b"xchunked")]), 400);
        assert_eq!(status(&[]), 400, "HTTP/1.1 without Host");
        assert_eq!(status(&[h, h]), 400, "two Host headers");
    }

    #[test]
    fn methods_and_credentials() {
        for (m, want) in [
            ("GET", true),
            ("PATCH", true),
            ("PROPFIND", true),
            ("get", false),
            ("Get", false),
            ("pOST", false),
            ("delete", false),
            ("options", false),
            ("patch", false),
            ("propfind", true),
            ("M-SEARCH", true),
        ] {
            let mut r = req(&[("host", b"a")]);
            r.set_method(http::Method::from_bytes(m.as_bytes()).unwrap());
            let ok = check_request(&r, None, &Limits::default()).is_ok();
            assert_eq!(ok, want, "{m}");
        }
        let h: (&str, &[u8]) = ("host", b"a");
        assert_eq!(status(&[h, ("authorization", b"Bearer a")]), 200);
        assert_eq!(
            status(&[
                h,
                ("authorization", b"Bearer a"),
                ("Authorization", b"Bearer b")
            ]),
            400
        );
        assert_eq!(
            status(&[h, ("authorization", b"Bearer a"), ("authorization", b"")]),
            400
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-user", http::HeaderValue::from_static("a"));
        assert!(!has_underscored(&headers));
        headers.insert("x_user", http::HeaderValue::from_static("a"));
        assert!(has_underscored(&headers));
    }

    #[test]
    fn responses() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-length", "2").unwrap();
        let max = Limits::default().max_response_header_bytes;
        assert!(check_response(&r, max).is_ok());
        r.insert_header("x-big", "b".repeat(61 * 1024)).unwrap();
        assert_eq!(
            check_response(&r, max),
            Err("header section over maxResponseHeaderSize")
        );
        assert!(check_response(&r, 100 * 1024).is_ok());
        let mut two = ResponseHeader::build(200, None).unwrap();
        two.append_header("content-length", "2").unwrap();
        two.append_header("content-length", "3").unwrap();
        assert!(check_response(&two, max).is_err());
    }

    #[test]
    fn raw_headers() {
        let raw = b"POST /content-length: HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 5\r\n\r\n";
        assert!(raw_has_header(raw, "content-length"));
        assert!(!raw_has_header(
            b"POST /content-length: HTTP/1.1\r\nX-Content-Length: 1\r\n\r\n",
            "content-length"
        ));
    }

    #[test]
    fn limits_and_authority() {
        let h: (&str, &[u8]) = ("host", b"a");
        let big = vec![b'x'; 61 * 1024];
        assert_eq!(status(&[h, ("x-big", &big)]), 431);
        let many: Vec<(String, Vec<u8>)> = (0..101)
            .map(|i| (format!("x-{i}"), b"v".to_vec()))
            .collect();
        let many: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(status(&many), 431);
        let long = format!("/{}", "a".repeat(9000));
        let r = RequestHeader::build("GET", long.as_bytes(), None).unwrap();
        assert_eq!(
            check_request(&r, None, &Limits::default())
                .unwrap_err()
                .status,
            414
        );
        let mut abs = RequestHeader::build("GET", b"http://other.example/x", None).unwrap();
        abs.insert_header("host", "a.example").unwrap();
        assert_eq!(
            check_request(&abs, None, &Limits::default())
                .unwrap_err()
                .status,
            400
        );
        abs.insert_header("host", "other.example").unwrap();
        assert!(check_request(&abs, None, &Limits::default()).is_ok());
    }
}
