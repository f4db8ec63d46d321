//! jwt-validation and oauth2-introspection as a client and an attacker see
//! them. JWT: tokens signed in the
//! test with keys generated in the test (RSA, EC P-256, Ed25519, HMAC), a
//! JWKS server over real HTTP that rotates keys and goes down, and forged
//! tokens (alg none, HS/RS confusion, tampered payload).

use crate::support::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://issuer.test/";
const HMAC_SECRET: &str = "hmac-secret-for-tests-0123456789abcdef";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

struct RsaKey {
    kid: String,
    private_pem: Vec<u8>,
    public_pem: Vec<u8>,
    jwk: Value,
}

fn rsa_key(kid: &str) -> RsaKey {
    let rsa = Rsa::generate(2048).expect("rsa");
    let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
        "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
    let pkey = PKey::from_rsa(rsa).expect("pkey");
    RsaKey {
        kid: kid.to_string(),
        private_pem: pkey.private_key_to_pem_pkcs8().expect("pem"),
        public_pem: pkey.public_key_to_pem().expect("pem"),
        jwk,
    }
}

fn pem_pair(pkey: &PKey<Private>) -> (Vec<u8>, Vec<u8>) {
    (
        pkey.private_key_to_pem_pkcs8().expect("pem"),
        pkey.public_key_to_pem().expect("pem"),
    )
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("sign")
}

fn rs256(k: &RsaKey, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&k.private_pem).expect("key");
    sign(Algorithm::RS256, Some(&k.kid), &key, claims)
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "user-42", "iss": ISSUER, "aud": "orders", "exp": now() + 600,
        "scope": "orders:read", "jti": format!("{:?}", std::time::Instant::now())});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

/// A JWKS endpoint whose answer the test changes.
struct Jwks {
    backend: Backend,
    reply: Arc<Mutex<(u16, String)>>,
}

impl Jwks {
    fn start(keys: &[&Value]) -> Jwks {
        let reply = Arc::new(Mutex::new((200, json!({"keys": keys}).to_string())));
        let r = reply.clone();
        let backend = Backend::start(move |_| {
            let (status, body) = r.lock().expect("lock").clone();
            Reply::Json(status, body)
        });
        Jwks { backend, reply }
    }

    fn set(&self, status: u16, keys: &[&Value]) {
        *self.reply.lock().expect("lock") = (status, json!({"keys": keys}).to_string());
    }

    fn url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.backend.url())
    }
}

struct Setup {
    gw: Gateway,
    backend: Backend,
    jwks: Jwks,
    rsa: RsaKey,
    ec: EncodingKey,
    ed: EncodingKey,
}

fn setup() -> Setup {
    let backend = Backend::echo();
    let rsa = rsa_key("k1");
    let jwks = Jwks::start(&[&rsa.jwk]);
    let ec_key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group"))
            .expect("ec"),
    )
    .expect("pkey");
    let (ec_private, ec_public) = pem_pair(&ec_key);
    let (ed_private, ed_public) = pem_pair(&PKey::generate_ed25519().expect("ed25519"));
    let dir = temp_dir("jwt-keys");
    let ec_file = dir.join("ec.pem");
    std::fs::write(&ec_file, &ec_public).expect("write");
    let ed_pem = String::from_utf8(ed_public).expect("pem");
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n                  ");
    let url = backend.url();
    let closed = free_port();
    let config = config_with_routes(&format!(
        r#"    - id: jwks
      path: "/jwks/*"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            realm: orders
            jwks:
              - url: "{jwks}"
            jwksMinRefresh: 50ms
            issuers: ["{ISSUER}"]
            audiences: [orders]
            forwardClaims: {{sub: X-User-Id, scope: X-Scope}}
    - id: scoped
      path: "/scoped"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            jwks: [{{url: "{jwks}"}}]
            claims:
              - {{name: scope, value: "orders:write"}}
              - {{name: tenant, pattern: "acme|globex"}}
    - id: inline
      path: "/inline"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            leeway: 30s
            keys:
              - {{kid: ec1, algorithm: ES256, publicKey: "file:{ec}"}}
              - kid: ed1
                algorithm: EdDSA
                publicKey: |
                  {ed}
    - id: cookie
      path: "/cookie"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            token: {{cookie: session}}
            keys: [{{algorithm: HS256, secret: "${{FLEXGW_TEST_JWT_SECRET}}"}}]
    - id: down
      path: "/down"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            jwks: [{{url: "http://127.0.0.1:{closed}/jwks"}}]
            jwksTimeout: 500ms"#,
        jwks = jwks.url(),
        ec = ec_file.display(),
        ed = indent(&ed_pem),
    ));
    let gw = Gateway::start_with_env(&config, &[("FLEXGW_TEST_JWT_SECRET", HMAC_SECRET)]);
    Setup {
        gw,
        backend,
        jwks,
        rsa,
        ec: EncodingKey::from_ec_pem(&ec_private).expect("ec key"),
        ed: EncodingKey::from_ed_pem(&ed_private).expect("ed key"),
    }
}

fn bearer(c: &mut Client, path: &str, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    c.request("GET", path, &[("authorization", &auth)], b"")
}

fn error_of(r: &Response) -> Option<&str> {
    r.header("www-authenticate")
}

#[test]
fn jwt_validation_end_to_end() {
    let s = setup();
    let mut c = s.gw.connect();

    // no token: 401 with the bare challenge; nothing reaches the backend
    let r = c.get("/jwks/a");
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r), Some(r#"Bearer realm="orders""#));

    // valid RS256 from the JWKS; claims forwarded, forged copies replaced
    let good = rs256(&s.rsa, &claims(json!({})));
    let auth = format!("Bearer {good}");
    let r = c.request(
        "GET",
        "/jwks/a",
        &[("authorization", &auth), ("x-user-id", "admin")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.backend.last();
    assert_eq!(seen.header("x-user-id"), Some("user-42"));
    assert_eq!(seen.header("x-scope"), Some("orders:read"));
    assert_eq!(seen.header("authorization"), Some(auth.as_str()));
    let before = s.backend.count();

    let invalid = |r: &Response| {
        r.status == 401 && error_of(r).is_some_and(|h| h.contains(r#"error="invalid_token""#))
    };
    let cases = [
        (
            "expired",
            rs256(&s.rsa, &claims(json!({"exp": now() - 120}))),
        ),
        (
            "not yet valid",
            rs256(&s.rsa, &claims(json!({"nbf": now() + 120}))),
        ),
        (
            "wrong iss",
            rs256(&s.rsa, &claims(json!({"iss": "https://evil.test/"}))),
        ),
        (
            "wrong aud",
            rs256(&s.rsa, &claims(json!({"aud": "billing"}))),
        ),
        ("no exp", {
            let mut c = claims(json!({}));
            c.as_object_mut().expect("object").remove("exp");
            rs256(&s.rsa, &c)
        }),
        ("tampered payload", {
            let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
            parts[1] = b64(claims(json!({"sub": "admin"})).to_string().as_bytes());
            parts.join(".")
        }),
        ("alg none", {
            let head = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
            let body = b64(claims(json!({})).to_string().as_bytes());
            format!("{head}.{body}.")
        }),
        ("HS256 signed with the RSA public key", {
            let key = EncodingKey::from_secret(&s.rsa.public_pem);
            sign(Algorithm::HS256, Some("k1"), &key, &claims(json!({})))
        }),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in &cases {
        let r = bearer(&mut c, "/jwks/a", token);
        assert!(
            invalid(&r),
            "{what}: {} {:?} {}",
            r.status,
            error_of(&r),
            r.text()
        );
    }
    assert_eq!(
        s.backend.count(),
        before,
        "no bad token reached the backend"
    );

    // claim requirements: 403 insufficient_scope
    let r = bearer(&mut c, "/scoped", &good);
    assert_eq!(r.status, 403);
    assert!(error_of(&r).is_some_and(|h| h.contains(r#"error="insufficient_scope""#)));
    let write = rs256(
        &s.rsa,
        &claims(json!({"scope": "orders:read orders:write", "tenant": "globex"})),
    );
    assert_eq!(bearer(&mut c, "/scoped", &write).status, 200);
    let other_tenant = rs256(
        &s.rsa,
        &claims(json!({"scope": "orders:write", "tenant": "acme-evil"})),
    );
    assert_eq!(bearer(&mut c, "/scoped", &other_tenant).status, 403);

    // inline keys: ES256 (from a file: reference) and EdDSA; the RS256
    // token has no key here; a token 10 s past exp passes the 30 s leeway
    let es = sign(Algorithm::ES256, Some("ec1"), &s.ec, &claims(json!({})));
    assert_eq!(bearer(&mut c, "/inline", &es).status, 200);
    let ed = sign(
        Algorithm::EdDSA,
        Some("ed1"),
        &s.ed,
        &claims(json!({"exp": now() - 10})),
    );
    assert_eq!(bearer(&mut c, "/inline", &ed).status, 200);
    let ed_old = sign(
        Algorithm::EdDSA,
        Some("ed1"),
        &s.ed,
        &claims(json!({"exp": now() - 60})),
    );
    assert_eq!(bearer(&mut c, "/inline", &ed_old).status, 401);
    assert_eq!(bearer(&mut c, "/inline", &good).status, 401);
    // an ES256 token whose kid points at the Ed25519 key
    let confused = sign(Algorithm::ES256, Some("ed1"), &s.ec, &claims(json!({})));
    assert_eq!(bearer(&mut c, "/inline", &confused).status, 401);

    // HS256 from a cookie, secret from the environment
    let hs = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
        &claims(json!({})),
    );
    let cookie = format!("theme=dark; session={hs}");
    let r = c.request("GET", "/cookie", &[("cookie", &cookie)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.get("/cookie").status, 401);

    // never fetched: 503, not 200 and not 401
    let r = bearer(&mut c, "/down", &good);
    assert_eq!(r.status, 503, "{}", r.text());

    let m = s.gw.admin("/metrics").text();
    let expected = format!(
        r#"flexgw_policy_rejections_total{{route="jwks",policy="jwt-validation"}} {}"#,
        cases.len() + 1
    );
    assert!(m.contains(&expected), "{expected}\n{m}");
}

#[test]
fn jwks_rotation_and_outage() {
    let s = setup();
    let mut c = s.gw.connect();
    let first = rs256(&s.rsa, &claims(json!({})));
    assert_eq!(bearer(&mut c, "/jwks/a", &first).status, 200);

    // the identity provider rotates to k2: a token with the new kid is
    // accepted without a restart (the unknown kid triggers a refetch)
    let k2 = rsa_key("k2");
    s.jwks.set(200, &[&s.rsa.jwk, &k2.jwk]);
    let rotated = rs256(&k2, &claims(json!({})));
    let mut status = 0;
    wait_until(Duration::from_secs(10), "the rotated key", || {
        status = bearer(&mut c, "/jwks/a", &rotated).status;
        status == 200
    });

    // the JWKS endpoint fails: the last good keys stay in use
    s.jwks.set(500, &[]);
    let k3 = rsa_key("k3");
    let unknown = rs256(&k3, &claims(json!({})));
    assert_eq!(bearer(&mut c, "/jwks/a", &unknown).status, 401);
    let fresh = rs256(&k2, &claims(json!({"jti": "after-outage"})));
    assert_eq!(bearer(&mut c, "/jwks/a", &fresh).status, 200);
    let fresh_k1 = rs256(&s.rsa, &claims(json!({"jti": "after-outage-k1"})));
    assert_eq!(bearer(&mut c, "/jwks/a", &fresh_k1).status, 200);
}

// ─── oauth2-introspection (RFC 7662) ────────────────────────────────────

const CLIENT_SECRET: &str = "introspection-client-secret-77";

/// An introspection endpoint: checks the gateway's client credentials and
/// answers by token.
fn introspection_server() -> Backend {
    use base64::engine::general_purpose::STANDARD;
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("gateway:{CLIENT_SECRET}"))
    );
    Backend::start(move |seen| {
        if seen.header("authorization") != Some(expected.as_str()) {
            return Reply::Json(401, r#"{"error":"invalid_client"}"#.into());
        }
        let body = String::from_utf8_lossy(&seen.body).to_string();
        let token = body
            .split('&')
            .find_map(|p| p.strip_prefix("token="))
            .unwrap_or("")
            .to_string();
        let active = |scope: &str| {
            json!({"active": true, "scope": scope, "username": "alice", "exp": now() + 600})
                .to_string()
        };
        match token.as_str() {
            "good-token" => Reply::Json(200, active("orders:read orders:write")),
            "read-only" => Reply::Json(200, active("orders:read")),
            "slow-token" => Reply::Delayed(
                Duration::from_secs(3),
                Box::new(Reply::Json(200, active("orders:read orders:write"))),
            ),
            "broken-token" => Reply::Json(500, "oops".into()),
            _ => Reply::Json(200, r#"{"active":false}"#.into()),
        }
    })
}

#[test]
fn introspection_active_inactive_scopes_cache_and_outages() {
    let backend = Backend::echo();
    let idp = introspection_server();
    let url = backend.url();
    let config = config_with_routes(&format!(
        r#"    - id: introspected
      path: "/orders/*"
      upstream: {{url: "{url}"}}
      policies:
        - oauth2-introspection:
            url: "{idp}/introspect"
            clientId: gateway
            clientSecret: "${{FLEXGW_TEST_CLIENT_SECRET}}"
            timeout: 500ms
            realm: orders
            scopes: [orders:read, orders:write]
            keepToken: false
    - id: any-scope
      path: "/any"
      upstream: {{url: "{url}"}}
      policies:
        - oauth2-introspection:
            url: "{idp}/introspect"
            clientId: gateway
            clientSecret: "${{FLEXGW_TEST_CLIENT_SECRET}}"
            scopes: [orders:write, admin]
            scopeMatch: any
    - id: wrong-credentials
      path: "/wrong"
      upstream: {{url: "{url}"}}
      policies:
        - oauth2-introspection:
            url: "{idp}/introspect"
            clientId: gateway
            clientSecret: not-the-secret"#,
        idp = idp.url()
    ));
    let gw = Gateway::start_with_env(&config, &[("FLEXGW_TEST_CLIENT_SECRET", CLIENT_SECRET)]);
    let mut c = gw.connect();

    let r = c.get("/orders/1");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="orders""#)
    );
    assert_eq!(idp.count(), 0, "no token, no introspection call");

    // active with both scopes: passes; the token is not forwarded; three
    // requests cost one introspection call (cached)
    for _ in 0..3 {
        let r = bearer(&mut c, "/orders/1", "good-token");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(backend.last().header("authorization"), None);
    }
    assert_eq!(idp.count(), 1);
    let call = idp.last();
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    let r = bearer(&mut c, "/orders/1", "revoked-token");
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.contains(r#"error="invalid_token""#)));
    let r = bearer(&mut c, "/orders/1", "read-only");
    assert_eq!(r.status, 403, "AND: orders:write is missing");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.contains("insufficient_scope")));
    assert_eq!(
        bearer(&mut c, "/any", "good-token").status,
        200,
        "OR: one scope suffices"
    );
    assert_eq!(bearer(&mut c, "/any", "read-only").status, 403);

    // the server slow (3 s > 500 ms timeout), failing, or refusing the
    // gateway's credentials: 503, never a pass
    let r = bearer(&mut c, "/orders/1", "slow-token");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(bearer(&mut c, "/orders/1", "broken-token").status, 503);
    assert_eq!(bearer(&mut c, "/wrong", "good-token").status, 503);

    let seen_tokens = backend.count();
    assert_eq!(seen_tokens, 4, "3 good on /orders + 1 on /any");
    let config = gw.admin("/config").text();
    assert!(
        !config.contains(CLIENT_SECRET) && !config.contains("not-the-secret"),
        "{config}"
    );
}
