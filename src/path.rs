//! Request path normalisation, done once per request before routing, so that
//! a route (and its policies) sees the same path the upstream will receive.
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded;
//!   other escapes are kept, with upper-case hex (`%2f` becomes `%2F`, never `/`);
//! - repeated slashes collapse: `//a///b` is `/a/b`;
//! - `.` segments vanish and `..` removes the previous segment;
//!   a `..` that would climb above `/` is an error (400), not silently clamped;
//! - a trailing slash is kept.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/`.
    NotAbsolute,
    /// A `..` segment climbs above the root.
    AboveRoot,
    /// A `%` not followed by two hex digits.
    BadEscape,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request path must start with /",
            PathError::AboveRoot => "request path climbs above the root with ..",
            PathError::BadEscape => "request path has an invalid percent-encoding",
        }
    }
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'%') {
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

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
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
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // the path is valid UTF-8 (a &str); copy one whole character
            let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    Ok(out)
}

/// Normalise a request path (without its query). Borrows when nothing changes.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
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
        // an encoded slash stays encoded: it is data, not a separator
        assert_eq!(n("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
    }

    #[test]
    fn relative_is_an_error() {
        assert_eq!(n("api"), Err(PathError::NotAbsolute));
        assert_eq!(n(""), Err(PathError::NotAbsolute));
    }
}
