//! `http-basic-authentication`: HTTP Basic credentials (RFC 7617) checked
//! against a list of users.
//!
//! ```yaml
//! - http-basic-authentication:
//!     realm: orders                 # default "flex-gateway"
//!     keepCredentials: false        # default: Authorization is not sent upstream
//!     users:
//!       - username: alice
//!         passwordHash: "$2b$12$..."            # bcrypt or argon2id (PHC string)
//!       - username: bob
//!         password: "${BOB_PASSWORD}"           # plain text, from a secret reference
//! ```
//!
//! Missing or wrong credentials: 401 with `WWW-Authenticate: Basic
//! realm="..."`. The user name becomes the request's consumer.
//!
//! Cost: a bcrypt/argon2 check takes tens to hundreds of milliseconds of
//! CPU, so it runs on the blocking pool, at most one per core at a time (a
//! flood of wrong passwords queues instead of starving the proxy). A correct
//! credential is remembered (as a SHA-256 digest of user and password, never
//! the password) so repeated requests skip the hash; the cache is bounded.
//! An unknown user is checked against a real hash anyway, so response
//! timing does not reveal which user names exist.

use super::{common, Decision, LocalResponse, Policy, REDACTED};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use base64::Engine;
use pingora::http::RequestHeader;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

pub const FIELDS: &[Field] = &[
    f("realm", STR).default("\"flex-gateway\""),
    f("users", Ty::List(&Ty::Obj(USER_FIELDS), false)).req(),
    f("keepCredentials", BOOL)
        .default("false")
        .doc("Forward the Authorization header upstream."),
];
const USER_FIELDS: &[Field] = &[
    f("username", STR).req(),
    f("password", STR).doc("Plain text (or a ${ENV} / file: reference); or `passwordHash`."),
    f("passwordHash", Ty::Text("a bcrypt or argon2id hash")),
];
/// Correct credentials remembered; past this many, the cache starts afresh.
const CACHE_LIMIT: usize = 10_000;

/// How a user's password is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    Bcrypt(String),
    /// An argon2id PHC string (`$argon2id$v=19$...`).
    Argon2id(String),
    /// The SHA-256 of a plain-text password (compared in constant time).
    Plain([u8; 32]),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Password::Bcrypt(_) => "bcrypt",
            Password::Argon2id(_) => "argon2id",
            Password::Plain(_) => "plain",
        };
        write!(f, "{kind}({REDACTED})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub password: Password,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub realm: String,
    pub users: Vec<User>,
    pub keep_credentials: bool,
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let realm = common::realm(d, f.get("realm"), path);
    let keep = match f.get("keepCredentials") {
        Some(n) => d.bool(n, &join(path, "keepCredentials")),
        None => Some(false),
    };
    let mut users: Vec<User> = Vec::new();
    let mut ok = true;
    if let Some(list) = d.required(&f, "users", path) {
        let field = join(path, "users");
        let items = d.list(list, &field, false).unwrap_or_default();
        if items.is_empty() {
            d.error(list.pos, &field, "at least one user is required");
            ok = false;
        }
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            match decode_user(d, item, &at) {
                Some(u) => {
                    if users.iter().any(|v| v.username == u.username) {
                        d.error(
                            item.pos,
                            &join(&at, "username"),
                            format!("duplicate user {:?}", u.username),
                        );
                        ok = false;
                    } else {
                        users.push(u);
                    }
                }
                None => ok = false,
            }
        }
    }
    if !ok {
        return None;
    }
    Some(Config {
        realm: realm?,
        users,
        keep_credentials: keep?,
    })
}

fn decode_user(d: &mut Decoder, node: &Node, path: &str) -> Option<User> {
    let f = d.map(node, path, USER_FIELDS)?;
    let username = d.required(&f, "username", path).and_then(|n| {
        let field = join(path, "username");
        let name = d.string(n, &field)?;
        if name.contains(':') || name.chars().any(char::is_control) {
            d.error(
                n.pos,
                &field,
                "a Basic user name contains no `:` and no control characters (RFC 7617)",
            );
            return None;
        }
        Some(name)
    });
    let password = match (f.get("passwordHash"), f.get("password")) {
        (Some(h), None) => {
            let field = join(path, "passwordHash");
            let text = d.string(h, &field)?;
            match parse_hash(&text) {
                Ok(p) => Some(p),
                Err(why) => {
                    d.error(h.pos, &field, why);
                    None
                }
            }
        }
        (None, Some(p)) => {
            let text = d.string(p, &join(path, "password"))?;
            Some(Password::Plain(Sha256::digest(text.as_bytes()).into()))
        }
        (Some(_), Some(p)) => {
            d.error(
                p.pos,
                path,
                "give either `passwordHash` or `password`, not both",
            );
            None
        }
        (None, None) => {
            d.error(
                f.pos,
                path,
                "missing `passwordHash` (bcrypt or argon2id) or `password` (plain text, best as a ${ENV} or file: reference)",
            );
            None
        }
    };
    Some(User {
        username: username?,
        password: password?,
    })
}

/// A bcrypt or argon2id hash, checked for shape at load time.
fn parse_hash(text: &str) -> Result<Password, String> {
    if text.starts_with("$2") {
        return match text.parse::<bcrypt::HashParts>() {
            Ok(_) => Ok(Password::Bcrypt(text.to_string())),
            Err(e) => Err(format!("not a valid bcrypt hash ({e})")),
        };
    }
    if text.starts_with("$argon2") {
        return match argon2::PasswordHash::new(text) {
            Ok(h) if h.algorithm.as_str() == "argon2id" => Ok(Password::Argon2id(text.to_string())),
            Ok(h) => Err(format!(
                "{} hashes are not accepted; use argon2id (or bcrypt)",
                h.algorithm
            )),
            Err(e) => Err(format!("not a valid argon2id PHC string ({e})")),
        };
    }
    Err("expected a bcrypt hash ($2b$...) or an argon2id PHC string ($argon2id$...); for a plain-text password use `password`".into())
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(BasicAuth::new(c))
}

pub fn describe(c: &Config) -> Value {
    json!({
        "realm": c.realm,
        "keepCredentials": c.keep_credentials,
        "users": c.users.iter().map(|u| json!({"username": u.username, "password": REDACTED})).collect::<Vec<_>>(),
    })
}

pub struct BasicAuth {
    config: Config,
    challenge: String,
    /// SHA-256 of `user:password` for credentials already verified.
    verified: RwLock<HashSet<[u8; 32]>>,
    /// One slow hash check per core at a time.
    hashing: Arc<Semaphore>,
}

/// Set when this policy authenticated the request.
#[derive(Clone, Copy)]
struct Authenticated;

impl BasicAuth {
    pub fn new(c: &Config) -> BasicAuth {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        BasicAuth {
            challenge: format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm),
            config: c.clone(),
            verified: RwLock::new(HashSet::new()),
            hashing: Arc::new(Semaphore::new(cores)),
        }
    }

    fn unauthorized(&self, why: &str) -> Decision {
        Decision::Respond(
            LocalResponse::new(401, why).with_header("www-authenticate", self.challenge.clone()),
        )
    }

    /// Is this user name and password right?
    pub async fn check(&self, username: &str, password: &str) -> bool {
        let digest: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(username.as_bytes());
            h.update(b":");
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&digest)
        {
            return true;
        }
        let user = self.config.users.iter().find(|u| u.username == username);
        let ok = match user.map(|u| &u.password) {
            Some(Password::Plain(expected)) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(expected))
            }
            Some(hash) => self.verify_slow(hash.clone(), password).await,
            None => {
                // same work as for a real user, then no
                if let Some(u) = self.config.users.first() {
                    let _ = self.verify_slow(u.password.clone(), password).await;
                }
                false
            }
        };
        if ok {
            let mut set = self.verified.write().unwrap_or_else(|e| e.into_inner());
            if set.len() >= CACHE_LIMIT {
                set.clear();
            }
            set.insert(digest);
        }
        ok
    }

    async fn verify_slow(&self, hash: Password, password: &str) -> bool {
        let Ok(_permit) = self.hashing.clone().acquire_owned().await else {
            return false;
        };
        let password = password.to_string();
        tokio::task::spawn_blocking(move || match hash {
            Password::Bcrypt(h) => bcrypt::verify(password.as_bytes(), &h).unwrap_or(false),
            Password::Argon2id(h) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(&h).is_ok_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
            }
            Password::Plain(expected) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(&expected))
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// User and password from `Authorization: Basic base64(user:password)`.
pub fn credentials(req: &RequestHeader) -> Option<(String, String)> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    decode_pair(token)
}

/// A Basic credential found elsewhere than `Authorization` (another
/// header, a query parameter): `Basic base64(user:password)`, or the
/// base64 alone.
pub fn credentials_in(value: &str) -> Option<(String, String)> {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("basic") => decode_pair(token),
        Some(_) => None,
        None => decode_pair(value),
    }
}

fn decode_pair(token: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[async_trait]
impl Policy for BasicAuth {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let has_header = req.headers.contains_key(http::header::AUTHORIZATION);
        let Some((user, password)) = credentials(req) else {
            return self.unauthorized(if has_header {
                "malformed Basic credentials"
            } else {
                "authentication required"
            });
        };
        if !self.check(&user, &password).await {
            return self.unauthorized("invalid credentials");
        }
        x.consumer = Some(user);
        x.ext.insert(Authenticated);
        Decision::Continue
    }

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        if !self.config.keep_credentials && x.ext.get::<Authenticated>().is_some() {
            up.remove_header(&http::header::AUTHORIZATION);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(users: Vec<User>) -> BasicAuth {
        BasicAuth::new(&Config {
            realm: "r".into(),
            users,
            keep_credentials: false,
        })
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn bcrypt_argon2_and_plain() {
        let bc = bcrypt::hash("s3cret", 4).unwrap();
        let ar = {
            use argon2::PasswordHasher;
            let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHQ").unwrap();
            argon2::Argon2::default()
                .hash_password(b"hunter2", &salt)
                .unwrap()
                .to_string()
        };
        let p = policy(vec![
            User {
                username: "alice".into(),
                password: parse_hash(&bc).unwrap(),
            },
            User {
                username: "bob".into(),
                password: parse_hash(&ar).unwrap(),
            },
            User {
                username: "carol".into(),
                password: Password::Plain(Sha256::digest(b"pw").into()),
            },
        ]);
        block(async {
            assert!(p.check("alice", "s3cret").await);
            assert!(p.check("alice", "s3cret").await, "cached");
            assert!(!p.check("alice", "S3cret").await);
            assert!(p.check("bob", "hunter2").await);
            assert!(!p.check("bob", "hunter3").await);
            assert!(p.check("carol", "pw").await);
            assert!(!p.check("carol", "pw2").await);
            assert!(!p.check("dave", "s3cret").await);
            assert!(!p.check("alice", "").await);
        });
    }

    #[test]
    fn hash_shapes() {
        assert!(parse_hash("$2b$04$invalid").is_err());
        assert!(parse_hash("plain").is_err());
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXw";
        assert!(parse_hash(argon2i).unwrap_err().contains("argon2id"));
    }

    #[test]
    fn parses_the_authorization_header() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("authorization", "basic YWxpY2U6czM6Y3JldA==")
            .unwrap();
        assert_eq!(credentials(&req), Some(("alice".into(), "s3:cret".into())));
        req.insert_header("authorization", "Bearer abc").unwrap();
        assert_eq!(credentials(&req), None);
        req.insert_header("authorization", "Basic !!!").unwrap();
        assert_eq!(credentials(&req), None);
    }
}
