//! The HTTP mode: the request's method, the service's path prefix plus the
//! request's path and query, the original `Host`, the client's
//! `Authorization` and `allowedHeaders`, and `serviceRequestHeadersToAdd`;
//! no body. A 2xx allows; any other answer (a redirect too) is the
//! client's, with its status, body and the headers
//! `serviceResponseClientHeaders` lists (all when none is listed;
//! `Content-Type`, `Location` and `WWW-Authenticate` always).

use super::{framing, Allowed, Config, Verdict};
use crate::exchange::Exchange;
use crate::policy::LocalResponse;
use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;

/// The largest denial body passed on to the client.
const MAX_BODY: usize = 64 * 1024;

pub(super) async fn ask(
    c: &Config,
    client: &reqwest::Client,
    req: &RequestHeader,
    _x: &Exchange,
) -> Result<Verdict, String> {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{target}", c.uri);
    let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
        .map_err(|e| format!("method: {e}"))?;
    let mut check = client.request(method, &url);
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let shown = name == http::header::AUTHORIZATION || c.allowed_headers.contains(name);
        if shown && !framing(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(host) = req.headers.get(http::header::HOST) {
        headers.insert(http::header::HOST, host.clone());
    } else if let Some(a) = req.uri.authority() {
        if let Ok(v) = a.as_str().parse() {
            headers.insert(http::header::HOST, v);
        }
    }
    for (k, v) in &c.request_headers_to_add {
        headers.insert(k.clone(), v.clone());
    }
    check = check.headers(headers);
    let answer = check
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::ops::with_causes(&e)))?;
    let status = answer.status();
    let got = answer.headers().clone();
    let pick = |names: &[HeaderName]| -> Vec<(HeaderName, http::HeaderValue)> {
        names
            .iter()
            .flat_map(|n| got.get_all(n).iter().map(move |v| (n.clone(), v.clone())))
            .collect()
    };
    if status.is_success() {
        return Ok(Verdict::Allow(Allowed {
            upstream_set: pick(&c.upstream_headers),
            upstream_append: pick(&c.upstream_headers_append),
            upstream_remove: Vec::new(),
            upstream_if_absent: Vec::new(),
            client_add: pick(&c.client_headers_on_success),
        }));
    }
    // the denial as the service wrote it (bounded)
    let mut body = Vec::new();
    let mut answer = answer;
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| format!("{url}: reading the denial: {}", crate::ops::with_causes(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{url}: a denial body over {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let mut r = LocalResponse::new(status.as_u16(), "denied by the authorization service");
    for (name, value) in &got {
        let listed = if c.client_headers.is_empty() {
            true
        } else {
            // what a denial or a redirect means without (as Envoy)
            c.client_headers.contains(name)
                || name == http::header::CONTENT_TYPE
                || name == http::header::LOCATION
                || name == http::header::WWW_AUTHENTICATE
        };
        if listed && !framing(name) && name != http::header::DATE && name != http::header::SERVER {
            if let Ok(v) = value.to_str() {
                r = r.with_header(name.as_str().to_string(), v.to_string());
            }
        }
    }
    r.body = Some(bytes::Bytes::from(body));
    Ok(Verdict::Deny(r))
}
