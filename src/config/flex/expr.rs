//! Flex expressions in policy configs, mapped onto our policies: a simple
//! accessor becomes our native setting (a rate-limit `key: header:X`, a
//! token in a header); anything else in the subset of
//! [`crate::policy::expr`] is kept as an expression the policy evaluates
//! per request. Parsed here, so an expression outside the subset is a
//! `validate` error at its position.

use crate::policy::expr::{parse_value, Accessor, Expr, Piece};

/// The one expression a field holds (`#[...]`, nothing around it).
pub fn single(text: &str) -> Result<Expr, String> {
    match parse_value(text)?.as_slice() {
        [Piece::Expr(e)] => Ok(e.clone()),
        _ => Err(format!("expected one expression #[...], found {text:?}")),
    }
}

/// A `header-injection-flex` value as our template text: literal text with
/// its braces escaped, expressions kept (the template compiles them).
pub fn to_template(text: &str) -> Result<String, String> {
    let mut out = String::new();
    for p in parse_value(text)? {
        match p {
            Piece::Text(t) => out.push_str(&t.replace('{', "{{").replace('}', "}}")),
            Piece::Expr(e) => {
                out.push_str("#[");
                out.push_str(e.source());
                out.push(']');
            }
        }
    }
    Ok(out)
}

/// A `keySelector` as our rate-limit `key`: a native key for a simple
/// accessor, else the expression; `None` for a constant (one counter).
pub fn to_rate_limit_key(text: &str) -> Result<Option<String>, String> {
    let pieces = parse_value(text)?;
    let e = match pieces.as_slice() {
        [Piece::Text(_)] => return Ok(None),
        [Piece::Expr(e)] => e,
        _ => return Err("keySelector must be one expression #[...]".into()),
    };
    Ok(Some(match e.accessor() {
        Some(Accessor::Header(h)) => format!("header:{h}"),
        Some(Accessor::Query(q)) => format!("query:{q}"),
        Some(Accessor::RemoteAddress) => "client-ip".into(),
        Some(Accessor::Principal) => "consumer".into(),
        Some(Accessor::Claim(c)) => format!("claim:{c}"),
        _ => format!("#[{}]", e.source()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_native_when_simple() {
        let k = |t: &str| to_rate_limit_key(t).unwrap();
        assert_eq!(
            k("#[attributes.headers['X-Client']]").as_deref(),
            Some("header:x-client")
        );
        assert_eq!(k("#[authentication.clientId]").as_deref(), Some("consumer"));
        assert_eq!(
            k("#[attributes.method]").as_deref(),
            Some("#[attributes.method]")
        );
        assert_eq!(
            k("#[lower(attributes.headers.tenant) default 'none']").as_deref(),
            Some("#[lower(attributes.headers.tenant) default 'none']")
        );
        assert_eq!(k("global"), None);
        assert!(to_rate_limit_key("#[payload.id]")
            .unwrap_err()
            .contains("`payload.id`"));
    }

    #[test]
    fn templates_escape_text_and_keep_expressions() {
        assert_eq!(
            to_template("{x} #[attributes.remoteAddress]").unwrap(),
            "{{x}} #[attributes.remoteAddress]"
        );
    }
}
