//! The gRPC mode's messages, `envoy.service.auth.v3`, written and read
//! field by field ([`crate::proto`]); the test suite's service reads and
//! answers them with Envoy's published definitions (the `xds-protos`
//! package: tests/ext_authz_server.py).
//!
//! ```text
//! CheckRequest { AttributeContext attributes = 1 }
//! AttributeContext { Peer source = 1; Peer destination = 2; Request request = 4 }
//! Peer { Address address = 1; string certificate = 5 }
//! Address { SocketAddress socket_address = 1 }
//! SocketAddress { string address = 2; uint32 port_value = 3 }
//! Request { Timestamp time = 1; HttpRequest http = 2 }
//! HttpRequest { string id = 1; string method = 2; map<string,string> headers = 3;
//!   string path = 4; string host = 5; string scheme = 6; string query = 7;
//!   int64 size = 9; string protocol = 10; HeaderMap header_map = 13 }
//! HeaderMap { repeated HeaderValue headers = 1 }
//!
//! CheckResponse { google.rpc.Status status = 1; DeniedHttpResponse denied_response = 2;
//!   OkHttpResponse ok_response = 3 }
//! Status { int32 code = 1; string message = 2 }
//! DeniedHttpResponse { HttpStatus status = 1 { code = 1 }; repeated HeaderValueOption headers = 2;
//!   string body = 3 }
//! OkHttpResponse { repeated HeaderValueOption headers = 2; repeated string headers_to_remove = 5;
//!   repeated HeaderValueOption response_headers_to_add = 6 }
//! HeaderValueOption { HeaderValue header = 1; BoolValue append = 2; HeaderAppendAction append_action = 3 }
//! HeaderValue { string key = 1; string value = 2; bytes raw_value = 3 }
//! ```

use super::{Allowed, Config, Verdict};
use crate::exchange::Exchange;
use crate::policy::LocalResponse;
use crate::proto::{text, Field, Reader, Writer};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::net::SocketAddr;

pub const PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

fn peer(w: &mut Writer, field: u32, addr: Option<SocketAddr>, certificate: Option<&str>) {
    w.message(field, |p| {
        if let Some(a) = addr {
            p.message(1, |address| {
                address.message(1, |s| {
                    s.string(2, &a.ip().to_string());
                    s.uint(3, u64::from(a.port()));
                });
            });
        }
        if let Some(c) = certificate {
            p.string(5, c);
        }
    });
}

/// The request's headers as Envoy gives them to the service: its
/// pseudo-headers (`:authority`, `:method`, `:path`, `:scheme`), then the
/// header lines, all of them or those `allowedHeaders` names. Raw
/// (Envoy's `encode_raw_headers`, Flex's default): `header_map`, each line
/// an entry with its bytes as they came (`raw_value`). Text: the `headers`
/// map, repeated names joined by `,`, bytes that are not UTF-8 replaced.
fn headers(h: &mut Writer, c: &Config, req: &RequestHeader, x: &Exchange) {
    let all = c.allowed_headers.is_empty();
    let authority = req
        .headers
        .get(http::header::HOST)
        .map(|v| v.as_bytes())
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let pseudo: [(&str, &[u8]); 4] = [
        (":authority", authority),
        (":method", req.method.as_str().as_bytes()),
        (":path", target.as_bytes()),
        (":scheme", if x.tls { b"https" } else { b"http" }),
    ];
    let pseudo = pseudo.into_iter().filter(|_| all);
    let lines = req
        .headers
        .iter()
        .filter(|(n, _)| all || c.allowed_headers.contains(n))
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    if c.raw_headers {
        h.message(13, |map| {
            for (name, value) in pseudo.chain(lines) {
                map.message(1, |hv| {
                    hv.string(1, name);
                    hv.bytes(3, value);
                });
            }
        });
        return;
    }
    for (name, value) in pseudo {
        h.map_entry(3, name, &String::from_utf8_lossy(value));
    }
    // keys() gives each name once; get_all() its every line
    for name in req.headers.keys() {
        if !(all || c.allowed_headers.contains(name)) {
            continue;
        }
        let value = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
            .join(",");
        h.map_entry(3, name.as_str(), &value);
    }
}

/// The `CheckRequest` for this request.
pub fn request(c: &Config, req: &RequestHeader, x: &Exchange) -> Vec<u8> {
    let mut w = Writer::with_capacity(512);
    let certificate = if c.include_peer_certificate {
        x.client_cert_pem.as_deref().map(|pem| {
            percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
    } else {
        None
    };
    w.message(1, |a| {
        peer(a, 1, x.peer, certificate.as_deref());
        peer(a, 2, x.local, None);
        a.message(4, |r| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            r.message(1, |t| {
                t.uint(1, now.as_secs());
                t.uint(2, u64::from(now.subsec_nanos()));
            });
            r.message(2, |h| {
                h.string(1, &x.request_id);
                h.string(2, req.method.as_str());
                headers(h, c, req, x);
                let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
                h.string(4, target);
                let host = req
                    .headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| req.uri.authority().map(|a| a.as_str()))
                    .unwrap_or_default();
                h.string(5, host);
                h.string(6, if x.tls { "https" } else { "http" });
                h.string(7, req.uri.query().unwrap_or_default());
                let size = req
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                match size {
                    Some(n) => h.uint(9, n),
                    // int64 -1: unknown (chunked)
                    None if req.headers.contains_key(http::header::TRANSFER_ENCODING) => {
                        h.key(9, 0);
                        h.varint(u64::MAX);
                    }
                    None => {}
                }
                h.string(
                    10,
                    match req.version {
                        http::Version::HTTP_2 => "HTTP/2",
                        http::Version::HTTP_10 => "HTTP/1.0",
                        _ => "HTTP/1.1",
                    },
                );
            });
        });
    });
    w.into_inner()
}

/// One header the service named, and whether it is appended.
struct Header {
    name: HeaderName,
    value: HeaderValue,
    /// `None`: the message left it to the default (set, replacing).
    append: Option<bool>,
    /// `ADD_IF_ABSENT` (1).
    if_absent: bool,
}

fn header_option(b: &[u8]) -> Result<Header, String> {
    let (mut key, mut value, mut raw) = (None, None, None);
    let (mut append, mut action) = (None, 0u64);
    let mut r = Reader::new(b);
    while let Some(f) = r.next_field()? {
        match f {
            Field::Bytes(1, hv) => {
                let mut r = Reader::new(hv);
                while let Some(f) = r.next_field()? {
                    match f {
                        Field::Bytes(1, k) => key = Some(text(k)?.to_string()),
                        Field::Bytes(2, v) => value = Some(v.to_vec()),
                        Field::Bytes(3, v) => raw = Some(v.to_vec()),
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, bv) => {
                let mut v = false;
                let mut r = Reader::new(bv);
                while let Some(f) = r.next_field()? {
                    if let Field::Varint(1, b) = f {
                        v = b != 0;
                    }
                }
                append = Some(v);
            }
            Field::Varint(3, a) => action = a,
            _ => {}
        }
    }
    let key = key.ok_or("a header without a key")?;
    let name = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{key:?} is not a header name"))?;
    let bytes = raw.filter(|r| !r.is_empty()).or(value).unwrap_or_default();
    let value = HeaderValue::from_bytes(&bytes)
        .map_err(|_| format!("the value of {key:?} is not a header value"))?;
    // append_action: 0 APPEND_IF_EXISTS_OR_ADD, 1 ADD_IF_ABSENT,
    // 2 OVERWRITE_IF_EXISTS_OR_ADD, 3 OVERWRITE_IF_EXISTS; the deprecated
    // `append` wins when given. ext_authz's own default is to set.
    let (append, if_absent) = match (append, action) {
        (Some(a), _) => (Some(a), false),
        (None, 1) => (Some(false), true),
        (None, 0) => (None, false),
        (None, _) => (Some(false), false),
    };
    Ok(Header {
        name,
        value,
        append,
        if_absent,
    })
}

/// The service's `CheckResponse`.
pub fn verdict(answer: &[u8]) -> Result<Verdict, String> {
    let mut code = 0i64;
    let mut message = String::new();
    let (mut denied, mut ok) = (None, None);
    let mut r = Reader::new(answer);
    while let Some(f) = r.next_field()? {
        match f {
            Field::Bytes(1, status) => {
                let mut r = Reader::new(status);
                while let Some(f) = r.next_field()? {
                    match f {
                        Field::Varint(1, c) => code = c as i32 as i64,
                        Field::Bytes(2, m) => message = text(m)?.to_string(),
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, d) => denied = Some(d),
            Field::Bytes(3, o) => ok = Some(o),
            _ => {}
        }
    }
    if code == 0 {
        let mut a = Allowed::default();
        if let Some(o) = ok {
            let mut r = Reader::new(o);
            while let Some(f) = r.next_field()? {
                match f {
                    Field::Bytes(2, h) => {
                        let h = header_option(h)?;
                        match h.append {
                            Some(true) => a.upstream_append.push((h.name, h.value)),
                            _ if h.if_absent => a.upstream_if_absent.push((h.name, h.value)),
                            _ => a.upstream_set.push((h.name, h.value)),
                        }
                    }
                    Field::Bytes(5, name) => {
                        let name = text(name)?;
                        a.upstream_remove.push(
                            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                                .map_err(|_| format!("{name:?} is not a header name"))?,
                        );
                    }
                    Field::Bytes(6, h) => {
                        let h = header_option(h)?;
                        a.client_add.push((h.name, h.value));
                    }
                    _ => {}
                }
            }
        }
        return Ok(Verdict::Allow(a));
    }
    let Some(d) = denied else {
        // an error status with no denial: the service could not decide
        return Err(format!(
            "the authorization service answered status {code} with no denial {message}"
        )
        .trim_end()
        .to_string());
    };
    let mut status = 403u16;
    let mut r = LocalResponse::new(403, "denied by the authorization service");
    let mut body = Vec::new();
    let mut rd = Reader::new(d);
    while let Some(f) = rd.next_field()? {
        match f {
            Field::Bytes(1, s) => {
                let mut rs = Reader::new(s);
                while let Some(f) = rs.next_field()? {
                    if let Field::Varint(1, c) = f {
                        // HttpStatus's enum: 0 (Empty) leaves the default
                        if (200..=599).contains(&c) {
                            status = c as u16;
                        }
                    }
                }
            }
            Field::Bytes(2, h) => {
                let h = header_option(h)?;
                if !super::framing(&h.name) {
                    if let Ok(v) = h.value.to_str() {
                        r = r.with_header(h.name.as_str().to_string(), v.to_string());
                    }
                }
            }
            Field::Bytes(3, b) => body = b.to_vec(),
            _ => {}
        }
    }
    r.status = status;
    r.body = Some(bytes::Bytes::from(body));
    Ok(Verdict::Deny(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(w: &mut Writer, field: u32, key: &str, value: &str, append: Option<bool>) {
        w.message(field, |o| {
            o.message(1, |h| {
                h.string(1, key);
                h.string(2, value);
            });
            if let Some(a) = append {
                o.message(2, |b| b.boolean(1, a));
            }
        });
    }

    #[test]
    fn an_ok_answer_sets_appends_and_removes() {
        let mut w = Writer::with_capacity(64);
        w.message(1, |s| s.uint(1, 0));
        w.message(3, |ok| {
            option(ok, 2, "X-User", "alice", None);
            option(ok, 2, "x-groups", "admin", Some(true));
            ok.string(5, "x-secret");
            option(ok, 6, "x-checked", "yes", None);
        });
        let Ok(Verdict::Allow(a)) = verdict(&w.into_inner()) else {
            panic!("allowed")
        };
        assert_eq!(
            a.upstream_set,
            [(
                HeaderName::from_static("x-user"),
                HeaderValue::from_static("alice")
            )]
        );
        assert_eq!(a.upstream_append[0].0, "x-groups");
        assert_eq!(a.upstream_remove, ["x-secret"]);
        assert_eq!(a.client_add[0].1, "yes");
    }

    #[test]
    fn a_denial_carries_status_headers_and_body() {
        let mut w = Writer::with_capacity(64);
        w.message(1, |s| s.uint(1, 7)); // PERMISSION_DENIED
        w.message(2, |d| {
            d.message(1, |s| s.uint(1, 401));
            option(d, 2, "www-authenticate", "Bearer", None);
            option(d, 2, "content-length", "999", None);
            d.string(3, "{\"why\":\"no\"}");
        });
        let Ok(Verdict::Deny(r)) = verdict(&w.into_inner()) else {
            panic!("denied")
        };
        assert_eq!(r.status, 401);
        assert_eq!(r.body.as_deref(), Some(&b"{\"why\":\"no\"}"[..]));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v == "Bearer"));
        assert!(!r.headers.iter().any(|(k, _)| k == "content-length"));
    }

    #[test]
    fn an_error_without_a_denial_or_a_malformed_answer_fails() {
        let mut w = Writer::with_capacity(8);
        w.message(1, |s| s.uint(1, 14)); // UNAVAILABLE
        assert!(verdict(&w.into_inner()).is_err());
        assert!(verdict(&[0x0a, 9, 1]).is_err());
        let mut w = Writer::with_capacity(8);
        w.message(3, |ok| option(ok, 2, "bad name", "x", None));
        assert!(verdict(&w.into_inner()).is_err());
    }
}
