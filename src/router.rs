//! The compiled route table of one listener: (host, method, normalised path)
//! to a route. Pure and allocation-free on a hit.
//!
//! Exact paths and `/*` prefixes sit in two hash maps. A lookup tries the
//! exact path, then each ancestor of the path from the longest down to `/*`,
//! so the most specific pattern wins whatever the file order; the cost is
//! one hash lookup per path segment, independent of the number of routes.
//! At one pattern, routes naming the request's host go before host-less ones.
//! The first candidate whose host and method fit wins; if some candidate fit
//! the host but none the method, the answer is 405 with the allowed methods.
//!
//! Flex routes (ApiInstance rules, regexes) are tried when no `kind:
//! Gateway` route took the request: grouped by the instance's base path,
//! the path regexes of one group are one `RegexSet`, so a lookup is one
//! pass over the path whatever the number of routes; the matching rules are
//! then checked in route order (method, host, headers) and the first wins.

use crate::config::model::{PathPattern, Route};
use crate::config::rules::FlexRoute;
use http::Method;
use regex::{RegexSet, RegexSetBuilder};
use std::collections::HashMap;
use std::sync::Arc;

const KNOWN: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

fn method_bit(m: &Method) -> u16 {
    KNOWN
        .iter()
        .position(|k| k == m)
        .map_or(1 << 15, |i| 1 << i)
}

#[derive(Debug, Clone)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }

    fn rank(&self) -> u8 {
        match self {
            HostMatch::Exact(_) => 0,
            HostMatch::Suffix(_) => 1,
            HostMatch::Any => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry<T> {
    route: T,
    host: HostMatch,
    /// Bit per method in `KNOWN` (bit 15: any other method); all ones for "every method".
    methods: u16,
}

/// Routes to values of type `T` (the proxy's compiled route; tests use the config route).
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<Box<str>, Vec<Entry<T>>>,
    prefix: HashMap<Box<str>, Vec<Entry<T>>>,
    /// Flex routes by base path, longest base path first.
    flex: Vec<FlexGroup<T>>,
}

/// The Flex routes under one base path, in route order.
#[derive(Debug)]
struct FlexGroup<T> {
    base: FlexRoute,
    routes: Vec<(T, Arc<FlexRoute>)>,
    /// Per set pattern: (route index, rule index; `None`: no rules).
    members: Vec<(usize, Option<usize>)>,
    /// Every member's path regex; `None` if the set could not be built
    /// (too large): the members are then tried one by one.
    set: Option<RegexSet>,
}

/// A Flex match: the route and the path to send upstream.
pub type FlexFound<'r, T> = (&'r T, String);

#[derive(Debug)]
pub enum Match<'r, T> {
    Found(&'r T),
    /// The path (and host) is routed, but not for this method: the `Allow`
    /// value, and the most specific route of the path, whose policies may
    /// still answer the request (a CORS preflight).
    MethodNotAllowed {
        allow: String,
        route: &'r T,
    },
    NotFound,
}

impl<T: Clone> Router<T> {
    /// Each config route with the value a match returns for it.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a Route, T)>) -> Router<T> {
        let mut router = Router {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            flex: Vec::new(),
        };
        let mut flex: Vec<(T, Arc<FlexRoute>)> = Vec::new();
        for (route, value) in routes {
            if let Some(f) = &route.flex {
                flex.push((value, f.clone()));
                continue;
            }
            let host = match &route.host {
                None => HostMatch::Any,
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                    None => HostMatch::Exact(h.clone()),
                },
            };
            let methods = match &route.methods {
                None => u16::MAX,
                Some(ms) => ms.iter().fold(0, |acc, m| acc | method_bit(m)),
            };
            for p in &route.paths {
                let (map, key) = match p {
                    PathPattern::Exact(k) => (&mut router.exact, k),
                    PathPattern::Prefix(k) => (&mut router.prefix, k),
                };
                let list = map.entry(key.as_str().into()).or_default();
                list.push(Entry {
                    route: value.clone(),
                    host: host.clone(),
                    methods,
                });
                list.sort_by_key(|e| e.host.rank());
            }
        }
        router.flex = FlexGroup::build(flex);
        router
    }

    /// Route a request: `kind: Gateway` routes first, then Flex routes
    /// (when no Gateway route took it). A Flex match carries the path to
    /// send upstream.
    pub fn route(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> (Match<'_, T>, Option<String>) {
        let found = self.find(host, method, path);
        if self.flex.is_empty() || matches!(found, Match::Found(_)) {
            return (found, None);
        }
        match self.find_flex(host, method.as_str(), path, headers) {
            Some((route, upstream)) => (Match::Found(route), Some(upstream)),
            None => (found, None),
        }
    }

    /// The first Flex route (longest base path first, then route order)
    /// whose rules match.
    pub fn find_flex(
        &self,
        host: &str,
        method: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<FlexFound<'_, T>> {
        for g in &self.flex {
            let Some(rest) = g.base.strip(path) else {
                continue;
            };
            let check = |m: usize| {
                let (i, rule) = g.members[m];
                let (value, route) = &g.routes[i];
                let rule = rule.map(|r| &route.rules.0[r]);
                let fits = match rule {
                    Some(r) => r.matches_rest(method, host, headers),
                    None => true,
                };
                fits.then(|| (value, route.rewrite(rule, rest)))
            };
            let found = match &g.set {
                Some(set) => set.matches(rest).iter().find_map(check),
                None => (0..g.members.len()).find_map(|m| {
                    let (i, rule) = g.members[m];
                    let route = &g.routes[i].1;
                    let path_fits = rule
                        .and_then(|r| route.rules.0[r].path.as_ref())
                        .is_none_or(|re| re.is_match(rest));
                    if path_fits {
                        check(m)
                    } else {
                        None
                    }
                }),
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

impl<T> FlexGroup<T> {
    fn build(routes: Vec<(T, Arc<FlexRoute>)>) -> Vec<FlexGroup<T>> {
        let mut groups: Vec<FlexGroup<T>> = Vec::new();
        for (value, route) in routes {
            let g = match groups
                .iter()
                .position(|g| g.base.base_path == route.base_path)
            {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(FlexGroup {
                        base: FlexRoute {
                            base_path: route.base_path.clone(),
                            rules: Default::default(),
                            destination_path: String::new(),
                        },
                        routes: Vec::new(),
                        members: Vec::new(),
                        set: None,
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            let i = g.routes.len();
            if route.rules.0.is_empty() {
                g.members.push((i, None));
            } else {
                g.members
                    .extend((0..route.rules.0.len()).map(|r| (i, Some(r))));
            }
            g.routes.push((value, route));
        }
        for g in &mut groups {
            let patterns: Vec<&str> = g
                .members
                .iter()
                .map(|&(i, rule)| {
                    rule.and_then(|r| g.routes[i].1.rules.0[r].path.as_ref())
                        .map_or("^(?s:.*)$", |re| re.as_str())
                })
                .collect();
            g.set = RegexSetBuilder::new(patterns)
                .size_limit(256 << 20)
                .dfa_size_limit(64 << 20)
                .build()
                .inspect_err(|e| {
                    log::warn!(
                        "flex routes: one regex set is not possible ({e}); matching route by route"
                    )
                })
                .ok();
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.base.base_path.len()));
        groups
    }
}

impl<T: Clone> Router<T> {
    /// `host` without port; `path` already normalised.
    pub fn find(&self, host: &str, method: &Method, path: &str) -> Match<'_, T> {
        let bit = method_bit(method);
        let mut allowed: u16 = 0;
        let mut path_known: Option<&T> = None;
        if let Some(r) = check(
            self.exact.get(path),
            host,
            bit,
            &mut allowed,
            &mut path_known,
        ) {
            return Match::Found(r);
        }
        if !self.prefix.is_empty() {
            let mut rest = path;
            while let Some(i) = rest.rfind('/') {
                rest = &rest[..i];
                let entries = self.prefix.get(rest);
                if let Some(r) = check(entries, host, bit, &mut allowed, &mut path_known) {
                    return Match::Found(r);
                }
            }
        }
        if let Some(route) = path_known {
            let allow: Vec<&str> = KNOWN
                .iter()
                .enumerate()
                .filter(|(i, _)| allowed & (1 << i) != 0)
                .map(|(_, m)| m.as_str())
                .collect();
            Match::MethodNotAllowed {
                allow: allow.join(", "),
                route,
            }
        } else {
            Match::NotFound
        }
    }
}

/// The first entry fitting host and method; records what the host allowed
/// and the first entry that fitted the host (the most specific one).
fn check<'r, T>(
    entries: Option<&'r Vec<Entry<T>>>,
    host: &str,
    bit: u16,
    allowed: &mut u16,
    path_known: &mut Option<&'r T>,
) -> Option<&'r T> {
    for e in entries? {
        if !e.host.matches(host) {
            continue;
        }
        path_known.get_or_insert(&e.route);
        if e.methods & bit != 0 {
            return Some(&e.route);
        }
        *allowed |= e.methods;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Retries, RouteUpstream, Timeouts, DEFAULT_UPSTREAM_TIMEOUT};
    use std::sync::Arc;

    impl Router<Arc<Route>> {
        fn of(routes: &[Arc<Route>]) -> Self {
            Router::new(routes.iter().map(|r| (r.as_ref(), r.clone())))
        }
    }

    fn route(
        id: &str,
        paths: &[&str],
        methods: Option<&[Method]>,
        host: Option<&str>,
    ) -> Arc<Route> {
        Arc::new(Route {
            id: id.into(),
            gateway: "g".into(),
            paths: paths
                .iter()
                .map(|p| crate::config::values::parse_path_pattern(p).unwrap())
                .collect(),
            methods: methods.map(|m| m.to_vec()),
            host: host.map(String::from),
            upstream: RouteUpstream {
                services: vec![],
                timeouts: Timeouts::all(DEFAULT_UPSTREAM_TIMEOUT),
                retries: Retries::default(),
            },
            max_body_size: None,
            allow_encoded_slashes: false,
            allow_path_parameters: false,
            policies: vec![],
            flex: None,
        })
    }

    fn id(m: Match<'_, Arc<Route>>) -> String {
        match m {
            Match::Found(r) => r.id.clone(),
            Match::MethodNotAllowed { allow, route } => format!("405 {allow} ({})", route.id),
            Match::NotFound => "404".into(),
        }
    }

    #[test]
    fn seed_routes() {
        let get = Some(&[Method::GET][..]);
        let r = Router::of(&[
            route(
                "public-products",
                &["/api/products", "/api/products/*"],
                get,
                None,
            ),
            route("health-check", &["/health", "/status"], get, None),
        ]);
        let f = |m: &Method, p: &str| id(r.find("localhost", m, p));
        assert_eq!(f(&Method::GET, "/api/products"), "public-products");
        assert_eq!(f(&Method::GET, "/api/products/2"), "public-products");
        assert_eq!(f(&Method::GET, "/api/products/2/deeper"), "public-products");
        assert_eq!(f(&Method::GET, "/api/products/"), "public-products");
        assert_eq!(f(&Method::GET, "/api/productsX"), "404");
        assert_eq!(f(&Method::GET, "/health"), "health-check");
        assert_eq!(f(&Method::GET, "/health/x"), "404");
        assert_eq!(
            f(&Method::POST, "/api/products"),
            "405 GET (public-products)"
        );
        assert_eq!(f(&Method::GET, "/"), "404");
    }

    #[test]
    fn most_specific_wins_regardless_of_order() {
        let routes = [
            route("all", &["/*"], None, None),
            route("api", &["/api/*"], None, None),
            route("v1", &["/api/v1/*"], None, None),
            route("exact", &["/api/v1/users"], None, None),
        ];
        for order in [routes.to_vec(), routes.iter().rev().cloned().collect()] {
            let r = Router::of(&order);
            let f = |p: &str| id(r.find("h", &Method::GET, p));
            assert_eq!(f("/api/v1/users"), "exact");
            assert_eq!(f("/api/v1/users/7"), "v1");
            assert_eq!(f("/api/v2"), "api");
            assert_eq!(f("/other"), "all");
            assert_eq!(f("/"), "all");
        }
    }

    #[test]
    fn method_falls_through_to_a_less_specific_route() {
        let r = Router::of(&[
            route(
                "read",
                &["/items/*"],
                Some(&[Method::GET, Method::HEAD]),
                None,
            ),
            route("write", &["/*"], Some(&[Method::POST]), None),
        ]);
        assert_eq!(id(r.find("h", &Method::POST, "/items/1")), "write");
        assert_eq!(
            id(r.find("h", &Method::DELETE, "/items/1")),
            "405 GET, HEAD, POST (read)"
        );
    }

    #[test]
    fn hosts() {
        let r = Router::of(&[
            route("any", &["/x"], None, None),
            route("exact", &["/x"], None, Some("api.example.com")),
            route("wild", &["/x"], None, Some("*.example.com")),
        ]);
        assert_eq!(id(r.find("API.example.com", &Method::GET, "/x")), "exact");
        assert_eq!(id(r.find("www.example.com", &Method::GET, "/x")), "wild");
        assert_eq!(id(r.find("example.com", &Method::GET, "/x")), "any");
        let only_host = Router::of(&[route("exact", &["/x"], None, Some("a.test"))]);
        assert_eq!(id(only_host.find("b.test", &Method::GET, "/x")), "404");
    }
}
