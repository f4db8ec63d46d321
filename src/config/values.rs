//! Values users write as strings, parsed once into typed values: route path
//! patterns and upstream URLs.

use super::model::{PathPattern, Upstream};

/// `/exact/path` or `/prefix/*`; must already be in normal form, since
/// requests are normalised before matching.
pub fn parse_path_pattern(text: &str) -> Result<PathPattern, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with /"));
    }
    if text.contains(['?', '#']) {
        return Err(format!("{text:?}: a route path has no query or fragment"));
    }
    let (base, wildcard) = match text.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (text, false),
    };
    if base.contains('*') {
        return Err(format!(
            "{text:?}: `*` is only allowed as a final `/*` segment"
        ));
    }
    match crate::path::normalize(if base.is_empty() { "/" } else { base }) {
        Ok(n) if n == base || (base.is_empty() && n == "/") => {}
        _ => {
            return Err(format!(
                "{text:?} is not in normal form (no `//`, `.` or `..` segments, percent-encoding only where needed)"
            ))
        }
    }
    Ok(if wildcard {
        PathPattern::Prefix(base.to_string())
    } else {
        PathPattern::Exact(text.to_string())
    })
}

/// `http://host[:port][/base]` or `https://...`.
pub fn parse_upstream_url(text: &str) -> Result<Upstream, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL ({e}); example: http://127.0.0.1:3000"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "unsupported scheme {other:?} in {text:?} (expected http or https)"
            ))
        }
        None => {
            return Err(format!(
                "{text:?} has no scheme (example: http://127.0.0.1:3000)"
            ))
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("{text:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: credentials in the upstream URL are not supported"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?}: an upstream URL has no query"));
    }
    let port = match authority.port_u16() {
        Some(0) => return Err(format!("{text:?}: port 0 is not a valid upstream port")),
        Some(p) => p,
        None if authority.as_str().ends_with(':') => return Err(format!("{text:?}: empty port")),
        None => {
            if tls {
                443
            } else {
                80
            }
        }
    };
    let base_path = uri.path().trim_end_matches('/').to_string();
    let authority = authority.as_str().to_ascii_lowercase();
    let host_header = http::HeaderValue::from_str(&authority)
        .map_err(|_| format!("{text:?}: the host is not a valid Host header"))?;
    Ok(Upstream {
        tls,
        host: host.to_ascii_lowercase(),
        port,
        authority,
        host_header,
        base_path,
    })
}
