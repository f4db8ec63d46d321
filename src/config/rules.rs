//! Request rules as Flex Gateway writes them (`rules:` of a route or of a
//! policy binding): regular expressions on the path, the method, the host
//! and header values, each matched against the whole value. Entries are
//! OR'd, fields inside one entry AND'd; an absent field matches anything.
//!
//! Compiled once at load; matching is pure and allocation-free. A route's
//! rules also rewrite the path: the capture groups of the rule that matched,
//! concatenated, replace the path, under the route's `destinationPath`.

use regex::Regex;

/// One `rules` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path: Option<Regex>,
    pub methods: Option<Regex>,
    pub host: Option<Regex>,
    /// Lower-case header name and the regex one of its values must match.
    pub headers: Vec<(http::HeaderName, Regex)>,
    /// The expressions as written, for `/config` and comparisons.
    pub source: RuleSource,
}

/// A rule as written (the regexes' sources).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.source == other.source
    }
}

/// Compile a regex matched against a whole value: `^(?:…)$`.
pub fn whole(expr: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{expr})$")).map_err(|e| match e {
        regex::Error::Syntax(s) => format!(
            "invalid regular expression {expr:?}: {}",
            s.lines().last().unwrap_or("syntax error").trim()
        ),
        regex::Error::CompiledTooBig(_) => {
            format!("regular expression {expr:?} is too large")
        }
        other => format!("invalid regular expression {expr:?}: {other}"),
    })
}

impl Rule {
    /// Method, host and headers (the path is matched separately, by a set
    /// when there are many routes).
    pub fn matches_rest(&self, method: &str, host: &str, headers: &http::HeaderMap) -> bool {
        self.methods.as_ref().is_none_or(|m| m.is_match(method))
            && self.host.as_ref().is_none_or(|h| h.is_match(host))
            && self.headers.iter().all(|(name, re)| {
                headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| re.is_match(v)))
            })
    }

    pub fn matches(&self, method: &str, host: &str, path: &str, headers: &http::HeaderMap) -> bool {
        self.path.as_ref().is_none_or(|p| p.is_match(path))
            && self.matches_rest(method, host, headers)
    }
}

/// A `rules` list: empty matches every request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    pub fn matches(&self, method: &str, host: &str, path: &str, headers: &http::HeaderMap) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|r| r.matches(method, host, path, headers))
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self.0.iter().map(|r| &r.source).collect::<Vec<_>>())
            .unwrap_or_default()
    }
}

/// A policy binding's `rules` under its API instance's base path: the
/// policy applies only to the requests they match.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRules {
    pub base_path: String,
    pub rules: Rules,
}

impl PolicyRules {
    pub fn applies(&self, method: &str, host: &str, path: &str, headers: &http::HeaderMap) -> bool {
        strip_base(&self.base_path, path)
            .is_some_and(|p| self.rules.matches(method, host, p, headers))
    }
}

/// `path` under `base` (`/api` takes `/api` and `/api/...`), as the rules
/// see it; `None` outside it.
pub fn strip_base<'p>(base: &str, path: &'p str) -> Option<&'p str> {
    if base.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(base)? {
        "" => Some("/"),
        r if r.starts_with('/') => Some(r),
        _ => None,
    }
}

/// How a Flex route matches and rewrites: under its API instance's base
/// path, by its rules, to `destinationPath` on the service.
#[derive(Debug, Clone, PartialEq)]
pub struct FlexRoute {
    /// The instance's base path (`/api`), empty for none: removed before the
    /// rules see the path; a request outside it is not this route's.
    pub base_path: String,
    pub rules: Rules,
    /// Prefixed to the (rewritten) path going upstream; empty for none.
    pub destination_path: String,
}

impl FlexRoute {
    /// The path the rules see: `path` under the base path, or `None`.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        strip_base(&self.base_path, path)
    }

    /// The upstream path for `path` (already stripped of the base path),
    /// matched by `rule`: its captures concatenated (the path itself when
    /// the rule has no groups or no path), under `destinationPath`.
    pub fn rewrite(&self, rule: Option<&Rule>, path: &str) -> String {
        let mut out = String::with_capacity(self.destination_path.len() + path.len());
        out.push_str(&self.destination_path);
        let re = rule.and_then(|r| r.path.as_ref());
        match re.filter(|re| re.captures_len() > 1) {
            Some(re) => {
                if let Some(caps) = re.captures(path) {
                    for g in caps.iter().skip(1).flatten() {
                        push_joined(&mut out, g.as_str());
                    }
                }
            }
            None => push_joined(&mut out, path),
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Append `part` to a path without doubling or dropping the slash between.
fn push_joined(out: &mut String, part: &str) {
    match (out.ends_with('/'), part.starts_with('/')) {
        (true, true) => out.push_str(&part[1..]),
        (false, false) if !out.is_empty() && !part.is_empty() => {
            out.push('/');
            out.push_str(part);
        }
        _ => out.push_str(part),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(base: &str, rule_path: &str, dest: &str) -> (FlexRoute, Rule) {
        let rule = Rule {
            path: Some(whole(rule_path).unwrap()),
            methods: None,
            host: None,
            headers: Vec::new(),
            source: RuleSource::default(),
        };
        let route = FlexRoute {
            base_path: base.to_string(),
            rules: Rules(vec![rule.clone()]),
            destination_path: dest.to_string(),
        };
        (route, rule)
    }

    /// Flex's own routing table (FLEX-LOCAL-MODE.md), row by row.
    #[test]
    fn the_documented_routing_table() {
        let rows = [
            ("", "/api/.*", "", "/api/foo/bar", Some("/api/foo/bar")),
            ("", "/api(/.*)", "", "/api/foo/bar", Some("/foo/bar")),
            (
                "",
                "/api/.*",
                "/orders",
                "/api/foo/bar",
                Some("/orders/api/foo/bar"),
            ),
            (
                "",
                "/api(/.*)",
                "/orders",
                "/api/foo/bar",
                Some("/orders/foo/bar"),
            ),
            ("/api", "/foo/.*", "", "/api/foo/bar", Some("/foo/bar")),
            ("/api", "/foo(/.*)", "", "/api/foo/bar", Some("/bar")),
            (
                "/api",
                "/foo(/.*)",
                "/orders",
                "/api/foo/bar",
                Some("/orders/bar"),
            ),
            ("/api", "/api/foo/.*", "/orders", "/api/foo/bar", None),
            (
                "/api",
                "/foo(/.*)/bar(/.*)",
                "",
                "/api/foo/abc/bar/def",
                Some("/abc/def"),
            ),
        ];
        let headers = http::HeaderMap::new();
        for (base, rule_path, dest, request, expected) in rows {
            let (route, rule) = route(base, rule_path, dest);
            let got = route.strip(request).and_then(|p| {
                rule.matches("GET", "h", p, &headers)
                    .then(|| route.rewrite(Some(&rule), p))
            });
            assert_eq!(
                got.as_deref(),
                expected,
                "base {base:?} rule {rule_path:?} dest {dest:?} request {request:?}"
            );
        }
    }

    #[test]
    fn base_paths_end_at_a_segment() {
        let (route, _) = route("/api", ".*", "");
        assert_eq!(route.strip("/api"), Some("/"));
        assert_eq!(route.strip("/api/x"), Some("/x"));
        assert_eq!(route.strip("/apix"), None);
        assert_eq!(route.strip("/other"), None);
    }

    #[test]
    fn whole_values_only_and_errors_name_the_expression() {
        let re = whole("GET|POST").unwrap();
        assert!(re.is_match("GET") && re.is_match("POST"));
        assert!(!re.is_match("GETX") && !re.is_match("XPOST"));
        let e = whole("/api(").unwrap_err();
        assert!(e.contains("\"/api(\""), "{e}");
    }

    #[test]
    fn methods_host_and_headers_are_anded() {
        let rule = Rule {
            path: Some(whole("/a.*").unwrap()),
            methods: Some(whole("GET|POST").unwrap()),
            host: Some(whole("api\\.example\\.com").unwrap()),
            headers: vec![(
                http::HeaderName::from_static("x-tenant"),
                whole("acme|globex").unwrap(),
            )],
            source: RuleSource::default(),
        };
        let mut h = http::HeaderMap::new();
        assert!(
            !rule.matches("GET", "api.example.com", "/a", &h),
            "header missing"
        );
        h.insert("x-tenant", "acme".parse().unwrap());
        assert!(rule.matches("GET", "api.example.com", "/a", &h));
        assert!(!rule.matches("DELETE", "api.example.com", "/a", &h));
        assert!(!rule.matches("GET", "other.example.com", "/a", &h));
        assert!(!rule.matches("GET", "api.example.com", "/b", &h));
        h.insert("x-tenant", "acmex".parse().unwrap());
        assert!(!rule.matches("GET", "api.example.com", "/a", &h));
    }
}
