//! The request's authority — `Host`, the authority of an absolute-form
//! target, HTTP/2 `:authority` — checked and normalised once, before
//! routing, so host routes, policies and the upstream's `X-Forwarded-Host`
//! all read the same name.
//!
//! Accepted: a host name of letters, digits, `-`, `.`, `_` and `~` (RFC
//! 3986 unreserved characters: no percent-encoding, no sub-delimiters), an
//! IPv4 address, or an IP literal `[v6]`; then, optionally, `:` and a port
//! (digits, at most 65535). Anything else — a comma (two hosts in one),
//! whitespace, userinfo (`@`), `%`, a path, an empty label — is refused.
//! Normalised: lower case, one trailing dot removed, the scheme's default
//! port (80, or 443 over TLS) and an empty port removed, leading zeros of a
//! port dropped.

use std::net::Ipv6Addr;

/// Check `raw`; `Ok(None)` when it is already normal (the common case: no
/// allocation), `Ok(Some(normal))` when it had to change, `Err(why)` when
/// it is not an authority the gateway accepts.
pub fn normalize(raw: &[u8], tls: bool) -> Result<Option<String>, &'static str> {
    if raw.is_empty() {
        // HTTP/1.1 allows an empty Host for a target without authority
        return Ok(None);
    }
    let (host, port) = split(raw)?;
    let literal = host.first() == Some(&b'[');
    if !literal {
        check_name(host)?;
    }
    let port_value = match port {
        None | Some([]) => None,
        Some(p) => {
            if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
                return Err("the port in Host is not a number from 1 to 65535");
            }
            let n: u32 = p.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
            if n == 0 || n > 65535 {
                return Err("the port in Host is not a number from 1 to 65535");
            }
            Some((n, p))
        }
    };
    let upper = host.iter().any(u8::is_ascii_uppercase);
    let dot = !literal && host.ends_with(b".");
    let default_port = if tls { 443 } else { 80 };
    let drop_port = match (port, port_value) {
        (Some([]), _) => true,
        (_, Some((n, _))) => n == default_port,
        _ => false,
    };
    let zeros = port_value.is_some_and(|(_, p)| p.len() > 1 && p[0] == b'0');
    if !(upper || dot || drop_port || zeros) {
        return Ok(None);
    }
    let name = if dot { &host[..host.len() - 1] } else { host };
    // checked above: ASCII only
    let mut out = String::from_utf8_lossy(name).to_ascii_lowercase();
    if let (false, Some((n, _))) = (drop_port, port_value) {
        out.push(':');
        out.push_str(&n.to_string());
    }
    Ok(Some(out))
}

/// Host and port (`None`: no `:`; `Some([])`: an empty port).
fn split(raw: &[u8]) -> Result<(&[u8], Option<&[u8]>), &'static str> {
    if raw[0] == b'[' {
        let end = raw
            .iter()
            .position(|b| *b == b']')
            .ok_or("an IPv6 literal in Host without `]`")?;
        let inner = std::str::from_utf8(&raw[1..end]).map_err(|_| "not an IPv6 literal")?;
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err("not a valid IPv6 literal in Host");
        }
        return match &raw[end + 1..] {
            [] => Ok((&raw[..=end], None)),
            [b':', port @ ..] => Ok((&raw[..=end], Some(port))),
            _ => Err("text after the IPv6 literal in Host"),
        };
    }
    Ok(match raw.iter().position(|b| *b == b':') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    })
}

fn check_name(host: &[u8]) -> Result<(), &'static str> {
    if let Some(bad) = host
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')))
    {
        return Err(match bad {
            b',' => "a comma in Host (more than one host)",
            b'@' => "userinfo in Host",
            b' ' | b'\t' => "whitespace in Host",
            b'%' => "percent-encoding in Host",
            b':' => "more than one `:` in Host",
            b'/' | b'?' | b'#' | b'\\' => "a path or query in Host",
            _ => "a character that is not allowed in a host name",
        });
    }
    // one trailing dot is the root label; any other empty label is wrong
    let name = host.strip_suffix(b".").unwrap_or(host);
    if name.is_empty()
        || name.starts_with(b".")
        || name.ends_with(b".")
        || name.windows(2).any(|w| w == b"..")
    {
        return Err("an empty label in the Host name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(raw: &str) -> Result<Option<String>, &'static str> {
        normalize(raw.as_bytes(), false)
    }

    #[test]
    fn normal_hosts_pass_untouched() {
        for h in [
            "api.example.com",
            "api.example.com:8080",
            "localhost",
            "127.0.0.1:8081",
            "[::1]",
            "[2001:db8::1]:8443",
            "a_b.example",
            "xn--bcher-kva.example",
            "",
        ] {
            assert_eq!(n(h), Ok(None), "{h}");
        }
    }

    #[test]
    fn spellings_of_one_host_become_one() {
        for (raw, want) in [
            ("API.Example.COM", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com:80", "api.example.com"),
            ("api.example.com:", "api.example.com"),
            ("API.example.com.:80", "api.example.com"),
            ("api.example.com:0080", "api.example.com"),
            ("api.example.com:08080", "api.example.com:8080"),
            ("[::1]:80", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
        ] {
            assert_eq!(n(raw), Ok(Some(want.to_string())), "{raw}");
        }
        assert_eq!(
            normalize(b"api.example.com:443", true),
            Ok(Some("api.example.com".into()))
        );
        assert_eq!(normalize(b"api.example.com:80", true), Ok(None));
        assert_eq!(n("api.example.com:443"), Ok(None));
    }

    #[test]
    fn what_is_not_one_host_is_refused() {
        for raw in [
            "a.example.com,b.example.com",
            "a.example.com, b.example.com",
            "user@api.example.com",
            "user:pass@api.example.com",
            "api.example.com/admin",
            "api.example.com?x",
            "api.example.com#x",
            "api%2eexample.com",
            "api example.com",
            "api.example.com\t",
            "api.example.com:80:80",
            "api.example.com:http",
            "api.example.com:65536",
            "api.example.com:0",
            "api.example.com:-1",
            "api.example.com:+80",
            "api..example.com",
            ".api.example.com",
            "api.example.com..",
            ".",
            "[::1",
            "[::g]",
            "[::1]x",
            "[::1]:99999",
            "[127.0.0.1]",
            "api.exa\\mple.com",
            "*.example.com",
            "api.example.com;x",
            "ex\u{e4}mple.com",
        ] {
            assert!(n(raw).is_err(), "{raw:?} -> {:?}", n(raw));
        }
    }
}
