//! `ldap-authentication`: HTTP Basic credentials checked against an LDAP
//! directory (Flex's `ldap-authentication-flex`: [`crate::config::flex`]
//! maps its fields onto these).
//!
//! ```yaml
//! - ldap-authentication:
//!     url: ldaps://ldap.example.com:636    # ldap:// or ldaps://
//!     startTls: false                      # ldap:// upgraded with StartTLS
//!     caFile: /etc/ssl/ldap-ca.pem         # trust this CA (default: the system's)
//!     bindDn: cn=gateway,dc=example,dc=org # the service account that searches
//!     bindPassword: ${LDAP_PASSWORD}
//!     searchBase: ou=people,dc=example,dc=org
//!     searchFilter: "(uid={0})"            # {0}: the user name, escaped
//!     searchInSubtree: false               # false: one level below the base
//!     cacheTtl: 60s                        # remember a verified credential (0: never)
//!     timeout: 5s                          # connect, and each LDAP operation
//!     maxConnections: 4                    # the pool: requests wait for a free one
//!     realm: flex-gateway
//!     keepCredentials: false
//!     credentials: {header: X-Credentials}  # default: Authorization: Basic;
//!                                          # or {queryParam: q}, {cookie: c}
//! ```
//!
//! Elsewhere than `Authorization` (Flex's `authorizationOrigin:
//! customExpression`), the credential is `Basic base64(user:password)` or
//! the base64 alone.
//!
//! Per request: the service account binds, searches `searchBase` for the
//! one entry the filter finds, and that entry's DN binds with the given
//! password. Right: the user name is the consumer. Wrong user or password,
//! no entry, or more than one: 401 with `WWW-Authenticate: Basic`. The
//! directory unreachable, too slow, or refusing the service account: 503 —
//! never let through.
//!
//! The user name is escaped into the filter (RFC 4515: `*`, `(`, `)`, `\`
//! and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`), so it can only be
//! compared, never widen the search; the DN that binds is the one the
//! directory returned, never built from the request. An empty password is
//! refused before the directory is asked (LDAP would take it as an
//! anonymous bind and say yes). TLS is verified (system roots or
//! `caFile`); there is no switch to turn verification off.

use super::{basic_auth, common, Decision, LocalResponse, Policy, REDACTED};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, DURATION, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use pingora::http::RequestHeader;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub const FIELDS: &[Field] = &[
    f("url", Ty::Text("ldap://host:port or ldaps://host:port")).default("\"ldap://127.0.0.1:389\""),
    f("startTls", BOOL)
        .default("false")
        .doc("Upgrade an ldap:// connection with StartTLS."),
    f("caFile", Ty::Text("a PEM file"))
        .doc("Trust this CA for ldaps:// and StartTLS (default: the system's roots)."),
    f("bindDn", STR).req().doc("The service account's DN."),
    f("bindPassword", STR).req(),
    f("searchBase", STR).req(),
    f("searchFilter", STR)
        .default("\"(uid={0})\"")
        .doc("{0} is the user name, escaped (RFC 4515)."),
    f("searchInSubtree", BOOL)
        .default("false")
        .doc("Search the whole subtree (with the base); false: one level below the base."),
    f("cacheTtl", DURATION)
        .default("\"60s\"")
        .doc("How long a verified credential is remembered (0: not at all)."),
    f("timeout", DURATION).default("\"5s\""),
    f("maxConnections", Ty::Int(1, 256)).default("4"),
    f("realm", STR).default("\"flex-gateway\""),
    f("keepCredentials", BOOL)
        .default("false")
        .doc("Forward the credential upstream."),
    f("credentials", Ty::Obj(common::TOKEN_FIELDS))
        .doc("Where the Basic credential is read (default: the Authorization header)."),
];

/// Verified credentials remembered; past this many, the oldest go.
const CACHE_LIMIT: usize = 10_000;

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub url: String,
    pub start_tls: bool,
    pub ca_file: Option<String>,
    /// `caFile`'s certificate, read (and checked) when the config loads.
    pub ca_pem: Option<Vec<u8>>,
    pub bind_dn: String,
    pub bind_password: String,
    pub search_base: String,
    pub search_filter: String,
    pub subtree: bool,
    pub cache_ttl: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
    pub realm: String,
    pub keep_credentials: bool,
    /// Where the credential is: `Bearer` stands for `Authorization: Basic`.
    pub credentials: common::TokenSource,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &REDACTED)
            .field("search_base", &self.search_base)
            .field("search_filter", &self.search_filter)
            .finish_non_exhaustive()
    }
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let text = |d: &mut Decoder, key: &str| -> Option<String> {
        f.get(key).and_then(|n| d.string(n, &join(path, key)))
    };
    let flag = |d: &mut Decoder, key: &str| -> bool {
        f.get(key)
            .and_then(|n| d.bool(n, &join(path, key)))
            .unwrap_or(false)
    };
    let duration = |d: &mut Decoder, key: &str, default: u64| -> Duration {
        f.get(key)
            .and_then(|n| d.duration(n, &join(path, key), true))
            .unwrap_or(Duration::from_secs(default))
    };
    // `0` / `0s` switches the cache off (a duration is otherwise more than 0)
    let cache_off = f.get("cacheTtl").is_some_and(|n| {
        matches!(&n.value, crate::config::yaml::Value::Scalar { text, .. }
            if text == "0" || crate::config::decode::parse_duration(text).is_some_and(|t| t.is_zero()))
    });
    let url = text(d, "url").unwrap_or_else(|| "ldap://127.0.0.1:389".into());
    let start_tls = flag(d, "startTls");
    let url_node = f.get("url").unwrap_or(node);
    match url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
        Some(s) if s == "ldap" => {}
        Some(s) if s == "ldaps" && !start_tls => {}
        Some(s) if s == "ldaps" => d.error(
            url_node.pos,
            &join(path, "startTls"),
            "StartTLS upgrades an ldap:// connection; an ldaps:// one is TLS already",
        ),
        _ => d.error(
            url_node.pos,
            &join(path, "url"),
            format!("expected ldap://host:port or ldaps://host:port, found {url:?}"),
        ),
    }
    if url.contains(['?', '#']) {
        d.error(
            url_node.pos,
            &join(path, "url"),
            "the URL names the server only: no search parts",
        );
    }
    let ca_file = text(d, "caFile");
    let mut ca_pem = None;
    if let (Some(file), Some(n)) = (&ca_file, f.get("caFile")) {
        match std::fs::read(file) {
            Ok(pem) if native_tls::Certificate::from_pem(&pem).is_ok() => ca_pem = Some(pem),
            Ok(_) => d.error(
                n.pos,
                &join(path, "caFile"),
                format!("{file}: not a PEM certificate"),
            ),
            Err(e) => d.error(
                n.pos,
                &join(path, "caFile"),
                format!("cannot read {file}: {e}"),
            ),
        }
    }
    let bind_dn = d
        .required(&f, "bindDn", path)
        .and_then(|n| d.string(n, &join(path, "bindDn")));
    let bind_password = d
        .required(&f, "bindPassword", path)
        .and_then(|n| d.string(n, &join(path, "bindPassword")));
    let search_base = d
        .required(&f, "searchBase", path)
        .and_then(|n| d.string(n, &join(path, "searchBase")));
    let search_filter = text(d, "searchFilter").unwrap_or_else(|| "(uid={0})".into());
    if !search_filter.contains("{0}") {
        let n = f.get("searchFilter").unwrap_or(node);
        d.error(
            n.pos,
            &join(path, "searchFilter"),
            "the filter must hold {0} (the user name), or it finds the same entry for everyone",
        );
    } else if !(search_filter.starts_with('(') && search_filter.ends_with(')')) {
        let n = f.get("searchFilter").unwrap_or(node);
        d.error(
            n.pos,
            &join(path, "searchFilter"),
            "an LDAP filter is in parentheses, e.g. (uid={0})",
        );
    }
    let max_connections = match f.get("maxConnections") {
        Some(n) => d.int(n, &join(path, "maxConnections"), 1, 256),
        None => Some(4),
    };
    let realm = common::realm(d, f.get("realm"), path);
    let credentials = common::TokenSource::decode_at(d, f.get("credentials"), path, "credentials");
    let config = Config {
        credentials: credentials?,
        subtree: flag(d, "searchInSubtree"),
        cache_ttl: match cache_off {
            true => Duration::ZERO,
            false => duration(d, "cacheTtl", 60),
        },
        timeout: duration(d, "timeout", 5),
        keep_credentials: flag(d, "keepCredentials"),
        url,
        start_tls,
        ca_file,
        ca_pem,
        bind_dn: bind_dn?,
        bind_password: bind_password?,
        search_base: search_base?,
        search_filter,
        max_connections: max_connections? as usize,
        realm: realm?,
    };
    (d.errors.len() == before).then_some(config)
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(LdapAuth::new(c.clone()))
}

pub fn describe(c: &Config) -> Value {
    json!({
        "url": c.url,
        "startTls": c.start_tls,
        "caFile": c.ca_file,
        "bindDn": c.bind_dn,
        "bindPassword": REDACTED,
        "searchBase": c.search_base,
        "searchFilter": c.search_filter,
        "searchInSubtree": c.subtree,
        "cacheTtlMs": c.cache_ttl.as_millis() as u64,
        "timeoutMs": c.timeout.as_millis() as u64,
        "maxConnections": c.max_connections,
        "realm": c.realm,
        "keepCredentials": c.keep_credentials,
        "credentials": c.credentials.describe(),
    })
}

/// The directory's verdict on a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right: the entry's DN.
    Valid,
    /// Wrong user, wrong password, or no single entry.
    Invalid(&'static str),
    /// The directory could not answer (down, slow, refusing the service
    /// account): the request is refused, never let through.
    Unavailable(String),
}

pub struct LdapAuth {
    config: Config,
    challenge: String,
    /// Idle connections, bound as whoever last bound.
    idle: Mutex<Vec<Ldap>>,
    /// At most `maxConnections` in use at a time.
    slots: Arc<Semaphore>,
    /// SHA-256 of `user:password` of verified credentials, with when they
    /// stop counting.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    tls: Option<native_tls::TlsConnector>,
}

/// Set when this policy authenticated the request.
#[derive(Clone, Copy)]
struct Authenticated;

/// RFC 4515: the characters that would make a value more than a value.
pub fn escape_filter_value(value: &str) -> String {
    ldap3::ldap_escape(value).into_owned()
}

impl LdapAuth {
    pub fn new(config: Config) -> LdapAuth {
        let tls = config.ca_pem.as_ref().and_then(|pem| {
            let ca = native_tls::Certificate::from_pem(pem).ok()?;
            native_tls::TlsConnector::builder()
                .add_root_certificate(ca)
                .build()
                .ok()
        });
        LdapAuth {
            challenge: format!("Basic realm=\"{}\", charset=\"UTF-8\"", config.realm),
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            verified: Mutex::new(HashMap::new()),
            tls,
            config,
        }
    }

    fn unauthorized(&self, why: &str) -> Decision {
        Decision::Respond(
            LocalResponse::new(401, why).with_header("www-authenticate", self.challenge.clone()),
        )
    }

    fn digest(user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update(b":");
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn cached(&self, digest: &[u8; 32]) -> bool {
        if self.config.cache_ttl.is_zero() {
            return false;
        }
        let map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.get(digest).is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, digest: [u8; 32]) {
        if self.config.cache_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_LIMIT {
            map.retain(|_, until| *until > now);
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
        }
        map.insert(digest, now + self.config.cache_ttl);
    }

    /// Ask the directory about `user` / `password` (not cached).
    pub async fn verify(&self, user: &str, password: &str) -> Verdict {
        let deadline = self.config.timeout * 4;
        let Ok(permit) = tokio::time::timeout(deadline, self.slots.clone().acquire_owned()).await
        else {
            return Verdict::Unavailable("no LDAP connection free in time".into());
        };
        let _permit = permit;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(mut ldap) = idle {
            if !ldap.is_closed() {
                let verdict = self.ask_keeping(ldap, user, password).await;
                if !matches!(verdict, Verdict::Unavailable(_)) {
                    return verdict;
                }
                // a pooled connection may have died with an earlier server
                // process: a fresh one decides
            }
        }
        match self.connect().await {
            Ok(ldap) => self.ask_keeping(ldap, user, password).await,
            Err(e) => Verdict::Unavailable(e),
        }
    }

    /// [`Self::ask`] on `ldap`; a connection that answered goes back to
    /// the pool for the next request.
    async fn ask_keeping(&self, mut ldap: Ldap, user: &str, password: &str) -> Verdict {
        let verdict = self.ask(&mut ldap, user, password).await;
        if !matches!(verdict, Verdict::Unavailable(_)) {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ldap);
        }
        verdict
    }

    async fn connect(&self) -> Result<Ldap, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.config.start_tls);
        if let Some(tls) = &self.tls {
            settings = settings.set_connector(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.config.url))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    async fn ask(&self, ldap: &mut Ldap, user: &str, password: &str) -> Verdict {
        let c = &self.config;
        let service = ldap
            .with_timeout(c.timeout)
            .simple_bind(&c.bind_dn, &c.bind_password)
            .await;
        match service.map(|r| r.rc) {
            Ok(0) => {}
            Ok(rc) => {
                return Verdict::Unavailable(format!(
                    "the directory refused the service account (result {rc})"
                ))
            }
            Err(e) => return Verdict::Unavailable(format!("service bind: {e}")),
        }
        let filter = c.search_filter.replace("{0}", &escape_filter_value(user));
        let scope = if c.subtree {
            Scope::Subtree
        } else {
            Scope::OneLevel
        };
        let found = ldap
            .with_timeout(c.timeout)
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(&c.search_base, scope, &filter, vec!["1.1"])
            .await;
        let (entries, rc) = match found {
            Ok(r) => (r.0, r.1.rc),
            Err(e) => return Verdict::Unavailable(format!("search: {e}")),
        };
        let dn = match (rc, entries.as_slice()) {
            (0, [one]) => SearchEntry::construct(one.clone()).dn,
            (0, []) | (32, _) => return Verdict::Invalid("invalid credentials"),
            // sizeLimitExceeded, or two entries: the filter is ambiguous
            (0 | 4, _) => {
                log::warn!(target: "flexgw::ldap", "the filter {:?} finds more than one entry: refused", c.search_filter);
                return Verdict::Invalid("invalid credentials");
            }
            (rc, _) => return Verdict::Unavailable(format!("search failed (result {rc})")),
        };
        let bound = ldap
            .with_timeout(c.timeout)
            .simple_bind(&dn, password)
            .await;
        match bound.map(|r| r.rc) {
            Ok(0) => Verdict::Valid,
            // invalidCredentials; inappropriateAuthentication; account
            // locked or expired (unwillingToPerform, constraintViolation)
            Ok(49 | 48 | 53 | 19) => Verdict::Invalid("invalid credentials"),
            Ok(rc) => Verdict::Unavailable(format!("user bind failed (result {rc})")),
            Err(e) => Verdict::Unavailable(format!("user bind: {e}")),
        }
    }
}

#[async_trait]
impl Policy for LdapAuth {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let (presented, found) = match &self.config.credentials {
            common::TokenSource::Bearer => (
                req.headers.contains_key(http::header::AUTHORIZATION),
                basic_auth::credentials(req),
            ),
            elsewhere => match elsewhere.extract(req) {
                Some(v) => (true, basic_auth::credentials_in(&v)),
                None => (false, None),
            },
        };
        let Some((user, password)) = found else {
            return self.unauthorized(if presented {
                "malformed Basic credentials"
            } else {
                "authentication required"
            });
        };
        if user.is_empty() || password.is_empty() || user.chars().any(char::is_control) {
            // an empty password is an anonymous bind to LDAP: never asked
            return self.unauthorized("invalid credentials");
        }
        let digest = Self::digest(&user, &password);
        if !self.cached(&digest) {
            match self.verify(&user, &password).await {
                Verdict::Valid => self.remember(digest),
                Verdict::Invalid(why) => return self.unauthorized(why),
                Verdict::Unavailable(why) => {
                    log::warn!(target: "flexgw::ldap", "{}: {why}", self.config.url);
                    return Decision::Respond(LocalResponse::new(
                        503,
                        "the authentication service is unavailable",
                    ));
                }
            }
        }
        x.consumer = Some(user);
        x.ext.insert(Authenticated);
        Decision::Continue
    }

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        if !self.config.keep_credentials && x.ext.get::<Authenticated>().is_some() {
            self.config.credentials.strip(up);
        }
        Ok(())
    }

    fn credential_headers(&self) -> Vec<http::HeaderName> {
        match &self.config.credentials {
            common::TokenSource::Bearer => vec![http::header::AUTHORIZATION],
            elsewhere => elsewhere.header().into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_cannot_widen_the_filter() {
        assert_eq!(escape_filter_value("alice"), "alice");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("a)(uid=*"), "a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("a\0b\\"), "a\\00b\\5c");
    }
}
