//! `path-rewrite`: change the path sent upstream, after normalisation and
//! routing (the route was chosen, and other policies judged, by the path the
//! client sent).
//!
//! ```yaml
//! - path-rewrite: {stripPrefix: /v1}                          # /v1/orders/7 -> /orders/7
//! - path-rewrite: {pattern: "^/v1/(.*)$", replacement: "/api/$1"}   # /v1/x -> /api/x
//! ```
//!
//! `pattern` is a regular expression matched against the normalised path;
//! `$1` and `$<name>` in `replacement` are its capture groups (`$<1>` when
//! letters follow; `$$` is a `$`). (`${...}` is not used here: in every
//! policy string it is an environment reference.)
//! A path the pattern does not match (or without the prefix) goes upstream
//! unchanged. The query string is kept as sent; percent-encoded characters
//! in the path stay encoded. An invalid regex or a replacement naming a
//! group the pattern does not have is a validation error.

use super::{common, Decision, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use regex::Regex;
use serde_json::{json, Value};
use std::sync::Arc;

pub const FIELDS: &[Field] = &[
    f("stripPrefix", Ty::Text("a path prefix such as /v1")),
    f("pattern", Ty::Text("a regular expression")),
    f("replacement", Ty::Text("the new path: $1, $<name>")),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    StripPrefix(String),
    Regex {
        pattern: String,
        replacement: String,
    },
}

/// A replacement in the regex crate's syntax (`${name}`), and the groups
/// it references, from ours (`$1`, `$<name>`, `$<1>`, `$$`).
fn translate(replacement: &str) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut refs = Vec::new();
    let mut rest = replacement;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push_str("$$");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('<') {
            let end = r.find('>').ok_or("unclosed `$<` in the replacement")?;
            let name = &r[..end];
            if name.is_empty() {
                return Err("`$<>` names no group".into());
            }
            refs.push(name.to_string());
            out.push_str(&format!("${{{name}}}"));
            rest = &r[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if end == 0 {
                return Err("`$` must be followed by a group number, `<name>` or `$`".into());
            }
            let n = &rest[..end];
            if rest[end..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                return Err(format!("write `$<{n}>` when letters follow a group number"));
            }
            refs.push(n.to_string());
            out.push_str(&format!("${{{n}}}"));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Ok((out, refs))
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let s = |d: &mut Decoder, k: &str| {
        f.get(k)
            .and_then(|n| Some((d.string(n, &join(path, k))?, n)))
    };
    match (s(d, "stripPrefix"), s(d, "pattern"), s(d, "replacement")) {
        (Some((prefix, n)), None, None) => {
            let p = prefix.trim_end_matches('/');
            if !prefix.starts_with('/') || p.is_empty() {
                d.error(
                    n.pos,
                    &join(path, "stripPrefix"),
                    "a prefix like /v1 (starting with /, not / alone)",
                );
                return None;
            }
            Some(Config::StripPrefix(p.to_string()))
        }
        (None, Some((pattern, pn)), Some((replacement, rn))) => {
            let re = common::regex(d, &pattern, pn, &join(path, "pattern"))?;
            let field = join(path, "replacement");
            if !replacement.starts_with('/') && !replacement.starts_with('$') {
                d.error(
                    rn.pos,
                    &field,
                    "the replacement is a path: it starts with /",
                );
                return None;
            }
            match translate(&replacement) {
                Err(why) => {
                    d.error(rn.pos, &field, why);
                    None
                }
                Ok((_, refs)) => {
                    let names: Vec<&str> = re.capture_names().flatten().collect();
                    for r in refs {
                        let known = match r.parse::<usize>() {
                            Ok(i) => i < re.captures_len(),
                            Err(_) => names.contains(&r.as_str()),
                        };
                        if !known {
                            d.error(
                                rn.pos,
                                &field,
                                format!(
                                    "`{r}` is not a group of the pattern (it has {} numbered group(s){})",
                                    re.captures_len() - 1,
                                    if names.is_empty() { String::new() } else { format!(" and {}", names.join(", ")) }
                                ),
                            );
                            return None;
                        }
                    }
                    Some(Config::Regex {
                        pattern,
                        replacement,
                    })
                }
            }
        }
        (None, None, None) => {
            d.error(
                f.pos,
                path,
                "give `stripPrefix`, or `pattern` with `replacement`",
            );
            None
        }
        _ => {
            d.error(
                f.pos,
                path,
                "give either `stripPrefix`, or `pattern` with `replacement`",
            );
            None
        }
    }
}

pub fn describe(c: &Config) -> Value {
    match c {
        Config::StripPrefix(p) => json!({"stripPrefix": p}),
        Config::Regex {
            pattern,
            replacement,
        } => {
            json!({"pattern": pattern, "replacement": replacement})
        }
    }
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(match c {
        Config::StripPrefix(p) => Rewrite::Strip(p.clone()),
        // checked at load
        Config::Regex {
            pattern,
            replacement,
        } => match (Regex::new(pattern), translate(replacement)) {
            (Ok(re), Ok((replacement, _))) => Rewrite::Regex(re, replacement),
            _ => Rewrite::Strip(String::new()),
        },
    })
}

pub enum Rewrite {
    Strip(String),
    Regex(Regex, String),
}

impl Rewrite {
    /// The upstream path for a normalised request path, if it changes.
    pub fn apply(&self, path: &str) -> Option<String> {
        match self {
            Rewrite::Strip(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                if rest.is_empty() {
                    Some("/".into())
                } else if rest.starts_with('/') {
                    Some(rest.to_string())
                } else {
                    None // /v1x is not under /v1
                }
            }
            Rewrite::Regex(re, replacement) => {
                let caps = re.captures(path)?;
                let mut out = String::new();
                caps.expand(replacement, &mut out);
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                Some(out)
            }
        }
    }
}

#[async_trait]
impl Policy for Rewrite {
    async fn on_request(&self, _req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let current = x.upstream_path.as_deref().unwrap_or(&x.path);
        if let Some(p) = self.apply(current) {
            x.upstream_path = Some(p);
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_and_regex() {
        let s = Rewrite::Strip("/v1".into());
        assert_eq!(s.apply("/v1/orders/7").as_deref(), Some("/orders/7"));
        assert_eq!(s.apply("/v1").as_deref(), Some("/"));
        assert_eq!(s.apply("/v1x/a"), None);
        assert_eq!(s.apply("/v2/a"), None);
        let r = Rewrite::Regex(Regex::new("^/v1/(.*)$").unwrap(), "/api/$1".into());
        assert_eq!(r.apply("/v1/a%2Fb/c").as_deref(), Some("/api/a%2Fb/c"));
        assert_eq!(r.apply("/v2/a"), None);
        let named = Rewrite::Regex(
            Regex::new("^/users/(?P<id>[0-9]+)/(.*)$").unwrap(),
            translate("/u/$<id>/$<2>x").unwrap().0,
        );
        assert_eq!(
            named.apply("/users/42/profile").as_deref(),
            Some("/u/42/profilex")
        );
    }

    #[test]
    fn replacement_references() {
        let (re, refs) = translate("/api/$1/$<name>/$$").unwrap();
        assert_eq!(re, "/api/${1}/${name}/$$");
        assert_eq!(refs, ["1", "name"]);
        assert!(translate("/api/$1a").is_err());
        assert!(translate("/api/$").is_err());
    }
}
