//! LDAP authentication against a real OpenLDAP (`slapd`): right and wrong
//! credentials, filter injection as an attacker writes it, the search
//! scope, the cache, a directory that goes away (503, never let through),
//! TLS verified (ldaps:// and StartTLS), and Flex's own form.

use crate::support::*;
use base64::Engine;

const PEOPLE: &str = "ou=people,dc=example,dc=org";

/// alice and bob one level under ou=people; carol one deeper; two "dup"
/// entries with the same uid.
const DIRECTORY: &str = "dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
userPassword: wonderland

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
userPassword: builder

dn: ou=staff,ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: staff

dn: uid=carol,ou=staff,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: C
userPassword: singer

dn: cn=dup one,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dup
cn: dup one
sn: D
userPassword: twice

dn: cn=dup two,ou=staff,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dup
cn: dup two
sn: D
userPassword: twice
";

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn get_as(gw: &Gateway, path: &str, user: &str, password: &str) -> Response {
    let auth = basic(user, password);
    gw.connect()
        .request("GET", path, &[("authorization", &auth)], b"")
}

fn routes(backend: &Backend, slapd_url: &str) -> String {
    let url = backend.url();
    let policy = |extra: &str| {
        format!(
            "        - ldap-authentication:
            url: \"{slapd_url}\"
            bindDn: \"{LDAP_ADMIN}\"
            bindPassword: \"{LDAP_ADMIN_PASSWORD}\"
            searchBase: \"{PEOPLE}\"
{extra}"
        )
    };
    format!(
        r#"    - id: one-level
      path: "/api/*"
      upstream: {{url: "{url}"}}
      policies:
{}    - id: subtree
      path: "/deep/*"
      upstream: {{url: "{url}"}}
      policies:
{}    - id: uncached
      path: "/fresh/*"
      upstream: {{url: "{url}"}}
      policies:
{}    - id: strict
      path: "/strict/*"
      upstream: {{url: "{url}"}}
      policies:
{}"#,
        policy(""),
        policy("            searchInSubtree: true\n"),
        policy("            cacheTtl: 0s\n"),
        policy("            searchFilter: \"(&(uid={0})(objectClass=inetOrgPerson))\"\n"),
    )
}

#[test]
fn basic_credentials_are_checked_against_a_real_directory() {
    let slapd = Slapd::start(DIRECTORY, None);
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&routes(&backend, &slapd.url())));

    let r = gw.connect().get("/api/x");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"flex-gateway\", charset=\"UTF-8\"")
    );
    let r = get_as(&gw, "/api/x", "alice", "wonderland");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert_eq!(
        seen.header("authorization"),
        None,
        "credentials stay at the gateway"
    );
    assert_eq!(get_as(&gw, "/api/x", "bob", "builder").status, 200);
    for (user, password, why) in [
        ("alice", "Wonderland", "wrong password"),
        (
            "alice",
            "",
            "empty password: an anonymous bind LDAP would accept",
        ),
        ("mallory", "wonderland", "no such user"),
        ("", "wonderland", "no user name"),
        ("carol", "singer", "one level below the base only"),
        (
            "uid=alice,ou=people,dc=example,dc=org",
            "wonderland",
            "a DN is not a user name",
        ),
    ] {
        let r = get_as(&gw, "/api/x", user, password);
        assert_eq!(r.status, 401, "{why}");
        assert!(r.header("www-authenticate").is_some(), "{why}");
    }
    // the subtree route finds carol; the same uid twice is refused
    assert_eq!(get_as(&gw, "/deep/x", "carol", "singer").status, 200);
    assert_eq!(
        get_as(&gw, "/deep/x", "dup", "twice").status,
        401,
        "two entries: ambiguous"
    );
    let before = backend.count();

    // filter injection: each of these would find alice (or everyone)
    // were the user name pasted into the filter unescaped
    for user in [
        "*",
        "al*",
        "alice)(objectClass=*",
        "alice)(|(uid=*",
        "*)(uid=alice",
        "alice\0",
        "alice\\",
        "ALICE*",
    ] {
        for path in ["/api/x", "/strict/x", "/deep/x"] {
            let r = get_as(&gw, path, user, "wonderland");
            assert_eq!(r.status, 401, "{user:?} on {path}");
        }
    }
    assert_eq!(
        backend.count(),
        before,
        "no injected request reached the backend"
    );
    assert_eq!(get_as(&gw, "/strict/x", "alice", "wonderland").status, 200);
    let rejected = gw.metric(
        "flexgw_policy_rejections_total{route=\"one-level\",policy=\"ldap-authentication\"}",
    );
    assert!(rejected >= 14.0, "{rejected}");
}

#[test]
fn a_directory_that_goes_away_refuses_requests_and_the_cache_bridges_known_users() {
    let mut slapd = Slapd::start(DIRECTORY, None);
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&routes(&backend, &slapd.url())));
    assert_eq!(get_as(&gw, "/api/x", "alice", "wonderland").status, 200);
    assert_eq!(get_as(&gw, "/fresh/x", "alice", "wonderland").status, 200);

    slapd.kill();
    // verified a moment ago: remembered (cacheTtl 60s)
    assert_eq!(get_as(&gw, "/api/x", "alice", "wonderland").status, 200);
    // never verified, a wrong password, or no cache: the directory must
    // answer, and cannot: 503, never let through
    for (path, user, password) in [
        ("/api/x", "bob", "builder"),
        ("/api/x", "alice", "not-her-password"),
        ("/fresh/x", "alice", "wonderland"),
    ] {
        let r = get_as(&gw, path, user, password);
        assert_eq!(r.status, 503, "{path} {user}");
        assert_eq!(r.header("www-authenticate"), None);
        assert!(
            r.text().contains("authentication service is unavailable"),
            "{}",
            r.text()
        );
    }

    // back: pooled connections to the old process are replaced
    slapd.restart();
    assert_eq!(get_as(&gw, "/api/x", "bob", "builder").status, 200);
    assert_eq!(get_as(&gw, "/fresh/x", "alice", "wonderland").status, 200);
}

#[test]
fn ldaps_and_starttls_verify_the_directory_certificate() {
    let ca = Ca::new();
    let dir = temp_dir("ldap-tls");
    let cert = ca.issue(&dir, "ldap", &["localhost"], None);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.to_pem().expect("pem")).expect("write ca");
    let slapd = Slapd::start(DIRECTORY, Some(&cert));
    let backend = Backend::echo();
    let url = backend.url();
    let route = |id: &str, ldap_url: String, extra: &str| {
        format!(
            "    - id: {id}
      path: \"/{id}/*\"
      upstream: {{url: \"{url}\"}}
      policies:
        - ldap-authentication:
            url: \"{ldap_url}\"
            bindDn: \"{LDAP_ADMIN}\"
            bindPassword: \"{LDAP_ADMIN_PASSWORD}\"
            searchBase: \"{PEOPLE}\"
            cacheTtl: 0s
{extra}"
        )
    };
    let ca_line = format!("            caFile: \"{}\"\n", ca_file.display());
    let ldaps = format!("ldaps://localhost:{}", slapd.tls_port);
    let plain = format!("ldap://localhost:{}", slapd.port);
    let routes = [
        route("ldaps", ldaps.clone(), &ca_line),
        route(
            "starttls",
            plain.clone(),
            &format!("{ca_line}            startTls: true\n"),
        ),
        route("untrusted", ldaps, ""),
        route("untrusted-starttls", plain, "            startTls: true\n"),
    ]
    .concat();
    let gw = Gateway::start(&config_with_routes(&routes));
    assert_eq!(get_as(&gw, "/ldaps/x", "alice", "wonderland").status, 200);
    assert_eq!(
        get_as(&gw, "/starttls/x", "alice", "wonderland").status,
        200
    );
    assert_eq!(get_as(&gw, "/ldaps/x", "alice", "nope").status, 401);
    // a certificate the gateway does not trust: no credential goes out
    assert_eq!(
        get_as(&gw, "/untrusted/x", "alice", "wonderland").status,
        503
    );
    assert_eq!(
        get_as(&gw, "/untrusted-starttls/x", "alice", "wonderland").status,
        503
    );
}

#[test]
fn flex_ldap_authentication_runs_from_a_flex_file() {
    let slapd = Slapd::start(DIRECTORY, None);
    let backend = Backend::echo();
    let policies = format!(
        "    - policyRef: {{name: ldap-authentication-flex}}
      config:
        ldapServerURL: \"{}/\"
        ldapServerUserDn: \"{LDAP_ADMIN}\"
        ldapServerUserPassword: \"{LDAP_ADMIN_PASSWORD}\"
        ldapSearchBase: \"{PEOPLE}\"
        ldapSearchFilter: \"(uid={{0}})\"
        ldapSearchInSubtree: true
",
        slapd.url()
    );
    let api = flex_api("people", "{port}", &backend.url(), &policies);
    let gw = Gateway::start_files(
        &[("api.yaml", api), ("server.yaml", SERVER_ONLY.to_string())],
        &[],
    );
    assert_eq!(get_as(&gw, "/api/x", "carol", "singer").status, 200);
    assert_eq!(get_as(&gw, "/api/x", "carol", "nope").status, 401);
    assert_eq!(gw.connect().get("/api/x").status, 401);
    let config = gw.admin("/config").text();
    assert!(
        !config.contains(LDAP_ADMIN_PASSWORD),
        "the service password is redacted"
    );
    assert!(
        config.contains("\"bindPassword\":\"<redacted>\""),
        "{config}"
    );

    // Flex 1.14's authorizationOrigin: the default written out changes
    // nothing; customExpression reads the credential from the header the
    // expression names, `Basic <base64>` or the base64 alone
    let custom = policies.replace(
        "        ldapSearchInSubtree: true\n",
        "        ldapSearchInSubtree: true\n        authorizationOrigin: customExpression\n        authorizationExpression: \"#[attributes.headers['x-credentials']]\"\n",
    );
    let explicit = policies.replace(
        "        ldapSearchInSubtree: true\n",
        "        ldapSearchInSubtree: true\n        authorizationOrigin: httpBasicAuthenticationHeader\n",
    );
    let start = |policies: &str| {
        let api = flex_api("people", "{port}", &backend.url(), policies);
        Gateway::start_files(
            &[("api.yaml", api), ("server.yaml", SERVER_ONLY.to_string())],
            &[],
        )
    };
    let gw = start(&explicit);
    assert_eq!(get_as(&gw, "/api/x", "carol", "singer").status, 200);
    assert_eq!(get_as(&gw, "/api/x", "carol", "nope").status, 401);
    let gw = start(&custom);
    let with = |value: &str| {
        gw.connect()
            .request("GET", "/api/x", &[("x-credentials", value)], b"")
    };
    let bare = basic("carol", "singer")["Basic ".len()..].to_string();
    assert_eq!(with(&basic("carol", "singer")).status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-credentials"), None, "not forwarded");
    assert_eq!(with(&bare).status, 200, "the base64 alone");
    let wrong = with(&basic("carol", "nope"));
    assert_eq!(wrong.status, 401);
    assert!(wrong
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic realm=")));
    assert_eq!(with("Bearer abc").status, 401, "another scheme");
    assert_eq!(
        get_as(&gw, "/api/x", "carol", "singer").status,
        401,
        "the Authorization header is not where the credential is"
    );
    // two copies of the credential header: refused before anything
    let twice = gw.connect().request(
        "GET",
        "/api/x",
        &[("x-credentials", &bare), ("x-credentials", &bare)],
        b"",
    );
    assert_eq!(twice.status, 400);

    // Flex's own page misspells ldapServerURL in its example: a clear error
    let dir = temp_dir("ldap-validate");
    let file = dir.join("api.yaml");
    for (broken, says) in [
        (
            policies.replace("ldapServerURL", "dapServerURL"),
            "dapServerURL: unknown field (did you mean `ldapServerURL`?)",
        ),
        // Flex 1.14's fields written wrong
        (
            custom.replace(
                "        authorizationExpression: \"#[attributes.headers['x-credentials']]\"\n",
                "",
            ),
            "authorizationOrigin customExpression needs `authorizationExpression`",
        ),
        (
            custom.replace("attributes.headers['x-credentials']", "payload.user"),
            "authorizationExpression",
        ),
    ] {
        std::fs::write(
            &file,
            flex_api("people", "8080", "http://127.0.0.1:9", &broken),
        )
        .expect("write");
        let (ok, out, err) = validate(&file);
        let all = format!("{out}{err}");
        assert!(!ok && all.contains(says), "{says}: {all}");
    }
}
