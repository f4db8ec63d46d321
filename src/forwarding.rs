//! The headers the gateway adds to a request it forwards: `Host` (the
//! upstream's authority), `X-Forwarded-Host` (the client's `Host`),
//! `X-Forwarded-For` (each hop appends the address its connection came
//! from), `X-Forwarded-Proto` and `X-Request-Id`. They run on every
//! request, so they are written with as little work as Pingora's header
//! maps allow (`benches/micro.rs`, `forward_headers`).

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::Result;
use std::net::IpAddr;

/// What one hop knows about the request it forwards.
pub struct Hop<'a> {
    /// The `Host` header the client sent.
    pub host: Option<&'a HeaderValue>,
    /// The TCP peer the request came from.
    pub peer: Option<IpAddr>,
    /// The client connection is TLS.
    pub tls: bool,
    /// The upstream's `host[:port]` (made once per upstream).
    pub authority: &'a HeaderValue,
    /// The request's id (the client's, when sane, or one made for it).
    pub request_id: &'a HeaderValue,
}

const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Set the forwarding headers on the request to the upstream. Values are
/// shared, not copied (the client's `Host`, the upstream's authority, the
/// request id, the protocol); `X-Forwarded-For` is the one value made here,
/// in one allocation.
pub fn forward(upstream: &mut RequestHeader, hop: &Hop) -> Result<()> {
    if let Some(host) = hop.host {
        upstream.insert_header("x-forwarded-host", host.clone())?;
    }
    upstream.insert_header(http::header::HOST, hop.authority.clone())?;
    if let Some(ip) = hop.peer {
        let prev = upstream.headers.get_all("x-forwarded-for");
        upstream.insert_header("x-forwarded-for", forwarded_for(prev, ip))?;
    }
    let proto = if hop.tls { HTTPS } else { HTTP };
    upstream.insert_header("x-forwarded-proto", proto)?;
    upstream.insert_header("x-request-id", hop.request_id.clone())?;
    Ok(())
}

/// The list so far (every `X-Forwarded-For` line, in order), then `ip`.
fn forwarded_for(prev: http::header::GetAll<HeaderValue>, ip: IpAddr) -> HeaderValue {
    use std::fmt::Write;
    let lines = || {
        prev.iter()
            .map(HeaderValue::as_bytes)
            .filter(|p| !p.is_empty())
    };
    // the longest IPv6 text is 45 bytes
    let room: usize = lines().map(|p| p.len() + 2).sum::<usize>() + 45;
    let mut out = bytes::BytesMut::with_capacity(room);
    for p in lines() {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{ip}");
    // valid header values joined by ", ", and an address: valid
    HeaderValue::from_maybe_shared(out.freeze()).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(headers: &[(&str, &str)], peer: &str, tls: bool) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        let original = req.clone();
        let hop = Hop {
            host: original.headers.get(http::header::HOST),
            peer: Some(peer.parse().unwrap()),
            tls,
            authority: &HeaderValue::from_static("backend:8080"),
            request_id: &HeaderValue::from_static("abc"),
        };
        forward(&mut req, &hop).unwrap();
        req
    }

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        let values = req.headers.get_all(name).iter();
        values.map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn first_hop() {
        let req = forwarded(&[("Host", "api.example.com")], "192.0.2.1", false);
        assert_eq!(header(&req, "host"), ["backend:8080"]);
        assert_eq!(header(&req, "x-forwarded-host"), ["api.example.com"]);
        assert_eq!(header(&req, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(header(&req, "x-forwarded-proto"), ["http"]);
        assert_eq!(header(&req, "x-request-id"), ["abc"]);
    }

    #[test]
    fn behind_proxies_over_tls() {
        let headers = [
            ("Host", "api.example.com"),
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
            ("X-Forwarded-Proto", "http"),
            ("X-Request-Id", "client-made"),
        ];
        let req = forwarded(&headers, "2001:db8::1", true);
        assert_eq!(
            header(&req, "x-forwarded-for"),
            ["203.0.113.7, 198.51.100.2, 2001:db8::1"]
        );
        // the gateway's word replaces what the client said
        assert_eq!(header(&req, "x-forwarded-proto"), ["https"]);
        assert_eq!(header(&req, "x-request-id"), ["abc"]);
    }

    #[test]
    fn every_forwarded_for_line_is_kept() {
        let headers = [
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-For", "10.0.0.2"),
        ];
        let req = forwarded(&headers, "192.0.2.1", false);
        assert_eq!(
            header(&req, "x-forwarded-for"),
            ["203.0.113.7, 10.0.0.2, 192.0.2.1"]
        );
    }

    #[test]
    fn an_empty_forwarded_for_is_not_a_hop() {
        let req = forwarded(&[("X-Forwarded-For", "")], "192.0.2.1", false);
        assert_eq!(header(&req, "x-forwarded-for"), ["192.0.2.1"]);
        assert!(header(&req, "x-forwarded-host").is_empty());
    }
}
