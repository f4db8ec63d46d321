//! Request path normalisation, done once per request before routing, so that
//! a route (and its policies) sees the same path the upstream will receive.
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded;
//!   other escapes are kept, with upper-case hex (`%2f` becomes `%2F`, never `/`);
//! - repeated slashes collapse: `//a///b` is `/a/b`;
//! - `.` segments vanish and `..` removes the previous segment;
//!   a `..` that would climb above `/` is an error (400), not silently clamped;
//! - a trailing slash is kept.
//!
//! Refused (400), because a backend could resolve them to another path than
//! the one the gateway routed and judged:
//! - an encoded `/` or `\` (`%2F`, `%5C`): unless the route opts into passing
//!   encoded slashes through unchanged ([`Options::allow_encoded_slashes`]);
//! - a raw `\` (some servers treat it as a separator);
//! - a `.` or `..` segment carrying `;` parameters (`/..;/admin`);
//! - double encoding (`%25` followed by two hex digits: `%252e`, `%252F`);
//! - an encoded NUL or other control byte (`%00`, `%0A`, `%7F`);
//! - bytes that are not UTF-8 once decoded (`%C3%28`).

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/`.
    NotAbsolute,
    /// A `..` segment climbs above the root.
    AboveRoot,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C` on a route that does not allow them.
    EncodedSlash,
    /// A raw backslash.
    Backslash,
    /// `.` or `..` with `;` parameters.
    DotSegmentParams,
    /// `%25` followed by two hex digits.
    DoubleEncoded,
    /// An encoded control byte.
    ControlByte,
    /// Not UTF-8 once decoded.
    InvalidUtf8,
}

/// Choices a route can make about the path rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Pass `%2F` / `%5C` through unchanged instead of refusing them.
    pub allow_encoded_slashes: bool,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request path must start with /",
            PathError::AboveRoot => "request path climbs above the root with ..",
            PathError::BadEscape => "request path has an invalid percent-encoding",
            PathError::EncodedSlash => "request path has an encoded slash (%2F or %5C)",
            PathError::Backslash => "request path has a backslash",
            PathError::DotSegmentParams => "request path has a dot segment with ; parameters",
            PathError::DoubleEncoded => "request path is percent-encoded twice (%25..)",
            PathError::ControlByte => "request path has an encoded control character",
            PathError::InvalidUtf8 => "request path is not UTF-8 once decoded",
        }
    }
}

/// The path without `;` parameters in its segments (`/a;v=1/b;x` is
/// `/a/b`): what servlet containers (Tomcat, Jetty, Spring) resolve.
pub fn without_params(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split_once(';').map_or(seg, |(name, _)| name));
    }
    Cow::Owned(out)
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    if b.iter().any(|c| matches!(c, b'%' | b'\\' | b';')) {
        return true;
    }
    // any segment that is empty (except a trailing one), "." or ".."
    b.windows(2).any(|w| w == b"//")
        || b.windows(3).any(|w| w == b"/./")
        || b.windows(4).any(|w| w == b"/../")
        || path.ends_with("/.")
        || path.ends_with("/..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_unreserved(path: &str, opts: Options) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // the path fully decoded, for the UTF-8 check
    let mut bytes: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let c = h * 16 + l;
            match c {
                b'/' | b'\\' if !opts.allow_encoded_slashes => return Err(PathError::EncodedSlash),
                0..=0x1f | 0x7f => return Err(PathError::ControlByte),
                _ => {}
            }
            bytes.push(c);
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else if b[i] == b'\\' {
            return Err(PathError::Backslash);
        } else {
            // the path is valid UTF-8 (a &str); copy one whole character
            let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + ch_len]);
            bytes.extend_from_slice(&b[i..i + ch_len]);
            i += ch_len;
        }
    }
    if std::str::from_utf8(&bytes).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    // double encoding, judged on the result: `%25` and two hex digits, also
    // where the digits were themselves encoded (`%253%65` becomes `%253e`,
    // which a backend decoding twice reads as `>`)
    let o = out.as_bytes();
    if o.windows(5)
        .any(|w| w.starts_with(b"%25") && hex(w[3]).is_some() && hex(w[4]).is_some())
    {
        return Err(PathError::DoubleEncoded);
    }
    Ok(out)
}

/// Normalise a request path (without its query) with the default (strict)
/// options. Borrows when nothing changes.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_with(path, Options::default())
}

pub fn normalize_with(path: &str, opts: Options) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, opts)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        if let Some((name, _)) = seg.split_once(';') {
            if name == "." || name == ".." {
                return Err(PathError::DotSegmentParams);
            }
        }
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn parameters_come_off_every_segment() {
        for (p, want) in [
            ("/a/b", "/a/b"),
            ("/admin;x/users", "/admin/users"),
            ("/admin;jsessionid=1", "/admin"),
            ("/a;x=1;y=2/b;z/", "/a/b/"),
            ("/;x/a", "//a"),
            ("/a/%3Bb", "/a/%3Bb"),
        ] {
            assert_eq!(without_params(p), want, "{p}");
        }
    }

    #[test]
    fn already_normal_borrows() {
        assert!(matches!(normalize("/api/products/2"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn dots_and_slashes() {
        assert_eq!(n("/api//products///2").unwrap(), "/api/products/2");
        assert_eq!(n("/api/./products").unwrap(), "/api/products");
        assert_eq!(n("/api/products/../health").unwrap(), "/api/health");
        assert_eq!(n("/api/products/../../health").unwrap(), "/health");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/a/b/").unwrap(), "/a/b/");
        assert_eq!(n("//").unwrap(), "/");
    }

    #[test]
    fn above_root_is_an_error() {
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/api/../../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2e/x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(n("/api/%70roducts").unwrap(), "/api/products");
        assert_eq!(n("/api/products/%2E%2E/%2e%2e/health").unwrap(), "/health");
        // an encoded slash is refused, or, where a route allows it, stays
        // encoded: data, not a separator
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSlash));
        let allow = Options {
            allow_encoded_slashes: true,
        };
        assert_eq!(normalize_with("/a%2fb", allow).unwrap(), "/a%2Fb");
        assert_eq!(normalize_with("/a%5cb", allow).unwrap(), "/a%5Cb");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        assert_eq!(n("/a%5Cb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a/..;/admin"), Err(PathError::DotSegmentParams));
        assert_eq!(n("/a/.;x/b"), Err(PathError::DotSegmentParams));
        assert_eq!(n("/a/%2e%2e;/b"), Err(PathError::DotSegmentParams));
        assert_eq!(
            n("/a;v=1/b").unwrap(),
            "/a;v=1/b",
            "parameters on names are data"
        );
        assert_eq!(n("/a%252e%252e/b"), Err(PathError::DoubleEncoded));
        assert_eq!(n("/a%252F"), Err(PathError::DoubleEncoded));
        // found by the path_router fuzz target: the digits encoded too
        assert_eq!(n("//1e%253%653/e"), Err(PathError::DoubleEncoded));
        assert_eq!(n("/a%25%33%65"), Err(PathError::DoubleEncoded));
        assert_eq!(
            n("/a%25zz").unwrap(),
            "/a%25zz",
            "a literal percent sign is fine"
        );
        assert_eq!(n("/a%00b"), Err(PathError::ControlByte));
        assert_eq!(n("/a%0Ab"), Err(PathError::ControlByte));
        assert_eq!(n("/a%7f"), Err(PathError::ControlByte));
        assert_eq!(n("/a%C3%28"), Err(PathError::InvalidUtf8));
        assert_eq!(
            n("/caf%C3%A9").unwrap(),
            "/caf%C3%A9",
            "valid UTF-8 stays encoded"
        );
    }

    #[test]
    fn relative_is_an_error() {
        assert_eq!(n("api"), Err(PathError::NotAbsolute));
        assert_eq!(n(""), Err(PathError::NotAbsolute));
    }
}
