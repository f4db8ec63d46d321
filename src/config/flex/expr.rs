//! Flex's DataWeave-style expressions (`#[...]`), the part of them these
//! policies use, parsed at load: accessors of the request and of what
//! authentication established, string literals and `++` (concatenation).
//! Anything else is an error naming the part that is not supported.

/// What an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accessor {
    Header(String),
    Query(String),
    Method,
    RequestPath,
    RemoteAddress,
    /// `authentication.principal` / `authentication.clientId`.
    Principal,
    /// `vars.claimSet.<claim>`.
    Claim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Read(Accessor),
}

const SUPPORTED: &str = "attributes.headers['NAME'], attributes.queryParams['NAME'], attributes.method, attributes.requestPath, attributes.remoteAddress, authentication.principal, authentication.clientId, vars.claimSet.CLAIM, 'literals' and ++";

/// A value that may hold `#[...]` expressions among literal text.
pub fn parse_value(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[") {
        if i > 0 {
            out.push(Piece::Literal(rest[..i].to_string()));
        }
        let body = &rest[i + 2..];
        let end = closing(body).ok_or_else(|| format!("unclosed `#[` in {text:?}"))?;
        out.extend(parse_expr(&body[..end])?);
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest.to_string()));
    }
    Ok(out)
}

/// The `]` closing an expression, skipping brackets and quotes inside it.
fn closing(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// One expression: terms joined by `++`.
pub fn parse_expr(expr: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    for term in split_concat(expr) {
        let t = term.trim();
        if let Some(lit) = quoted(t) {
            out.push(Piece::Literal(lit.to_string()));
            continue;
        }
        out.push(Piece::Read(accessor(t).ok_or_else(|| {
            format!("`{t}` is not supported in expressions here (supported: {SUPPORTED})")
        })?));
    }
    if out.is_empty() {
        return Err("empty expression".into());
    }
    Ok(out)
}

fn split_concat(expr: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '+') if bytes.get(i + 1) == Some(&b'+') => {
                parts.push(&expr[start..i]);
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&expr[start..]);
    parts
}

fn quoted(t: &str) -> Option<&str> {
    let q = t.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = t.strip_prefix(q)?.strip_suffix(q)?;
    (!inner.contains(q)).then_some(inner)
}

fn accessor(t: &str) -> Option<Accessor> {
    let indexed = |prefix: &str| -> Option<String> {
        let rest = t.strip_prefix(prefix)?;
        if let Some(name) = rest.strip_prefix('.') {
            return valid_name(name).then(|| name.to_string());
        }
        let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
        quoted(inner.trim())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    match t {
        "attributes.method" => return Some(Accessor::Method),
        "attributes.requestPath" => return Some(Accessor::RequestPath),
        "attributes.remoteAddress" => return Some(Accessor::RemoteAddress),
        "authentication.principal" | "authentication.clientId" => return Some(Accessor::Principal),
        _ => {}
    }
    if let Some(h) = indexed("attributes.headers") {
        return Some(Accessor::Header(h.to_ascii_lowercase()));
    }
    if let Some(q) = indexed("attributes.queryParams") {
        return Some(Accessor::Query(q));
    }
    indexed("vars.claimSet").map(Accessor::Claim)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A header-injection value as our template text (`{header.x}`, ...).
pub fn to_template(pieces: &[Piece]) -> Result<String, String> {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Literal(l) => out.push_str(&l.replace('{', "{{").replace('}', "}}")),
            Piece::Read(a) => out.push_str(&match a {
                Accessor::Header(h) => format!("{{header.{h}}}"),
                Accessor::RemoteAddress => "{client_ip}".into(),
                Accessor::Principal => "{consumer}".into(),
                Accessor::Claim(c) => format!("{{claim.{c}}}"),
                other => {
                    return Err(format!(
                        "{other:?} cannot be used in a header value yet (supported: headers, remoteAddress, authentication.principal, vars.claimSet)"
                    ))
                }
            }),
        }
    }
    Ok(out)
}

/// A rate-limit `keySelector` as our `key` (one accessor, nothing else).
pub fn to_rate_limit_key(pieces: &[Piece]) -> Result<Option<String>, String> {
    match pieces {
        [Piece::Read(a)] => match a {
            Accessor::Header(h) => Ok(Some(format!("header:{h}"))),
            Accessor::Query(q) => Ok(Some(format!("query:{q}"))),
            Accessor::RemoteAddress => Ok(Some("client-ip".into())),
            Accessor::Principal => Ok(Some("consumer".into())),
            Accessor::Claim(c) => Ok(Some(format!("claim:{c}"))),
            other => Err(format!(
                "keySelector on {other:?} is not supported yet (supported: a header, a query parameter, remoteAddress, authentication.principal, vars.claimSet.CLAIM)"
            )),
        },
        // a constant key: every request in one group, as with no key
        [Piece::Literal(_)] => Ok(None),
        _ => Err("keySelector must be a single accessor (e.g. #[attributes.headers['client_id']])".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_literals_and_concatenation() {
        assert_eq!(
            parse_value("#[attributes.headers['X-Client']]").unwrap(),
            [Piece::Read(Accessor::Header("x-client".into()))]
        );
        assert_eq!(
            parse_value("Bearer #['v=' ++ vars.claimSet.sub]").unwrap(),
            [
                Piece::Literal("Bearer ".into()),
                Piece::Literal("v=".into()),
                Piece::Read(Accessor::Claim("sub".into())),
            ]
        );
        assert_eq!(
            parse_value("#[attributes.queryParams[\"k\"]]").unwrap(),
            [Piece::Read(Accessor::Query("k".into()))]
        );
        assert_eq!(
            parse_value("plain").unwrap(),
            [Piece::Literal("plain".into())]
        );
    }

    #[test]
    fn outside_the_subset_is_an_error_naming_the_part() {
        let e = parse_value("#[upper(attributes.method)]").unwrap_err();
        assert!(e.contains("`upper(attributes.method)`"), "{e}");
        assert!(parse_value("#[attributes.method")
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn templates_and_keys() {
        let p = parse_value("{x} #[attributes.remoteAddress]").unwrap();
        assert_eq!(to_template(&p).unwrap(), "{{x}} {client_ip}");
        let k = parse_value("#[authentication.clientId]").unwrap();
        assert_eq!(to_rate_limit_key(&k).unwrap().as_deref(), Some("consumer"));
        assert!(to_rate_limit_key(&parse_value("#[attributes.method]").unwrap()).is_err());
    }
}
