//! The Flex catalog decoded: each policy under its Flex name lands on our
//! policy with Flex's defaults; Configuration keys reach the settings.

use crate::config::load_str;
use crate::config::model::Config;
use crate::policy::{PolicyConfig, PolicySpec};
use std::time::Duration;

const INSTANCE: &str = "apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {name: api}
spec:
  address: http://127.0.0.1:18999
  services:
    s: {address: http://127.0.0.1:9}
";

/// `INSTANCE` with one inline policy; its chain's policies.
fn policies(name: &str, config: &str) -> Vec<PolicySpec> {
    let text = format!(
        "{INSTANCE}  policies:\n    - policyRef: {{name: {name}}}\n      config: {config}\n"
    );
    let c = load(&text);
    c.listeners[0].routes[0].policies.clone()
}

fn load(text: &str) -> Config {
    load_str("flex.yaml", text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn spike_control_flex_takes_flex_defaults() {
    let p = policies("spike-control-flex", "{}");
    let PolicyConfig::SpikeControl(c) = &p[0].config else {
        panic!("{p:?}")
    };
    assert_eq!(
        (
            c.max_requests,
            c.period,
            c.delay,
            c.delay_attempts,
            c.queue_limit,
            c.expose_headers
        ),
        (
            1,
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
            0,
            false
        )
    );
    let p = policies(
        "spike-control-flex",
        "{maximumRequests: 5, timePeriodInMilliseconds: 500, delayTimeInMillis: 100, delayAttempts: 3, queuingLimit: 10, exposeHeaders: true}",
    );
    let PolicyConfig::SpikeControl(c) = &p[0].config else {
        panic!()
    };
    assert_eq!(
        (
            c.max_requests,
            c.period,
            c.delay,
            c.delay_attempts,
            c.queue_limit,
            c.expose_headers
        ),
        (
            5,
            Duration::from_millis(500),
            Duration::from_millis(100),
            3,
            10,
            true
        )
    );
}

#[test]
fn rate_limiting_flex_defaults_and_shared_storage() {
    let text = format!(
        "{INSTANCE}  policies:
    - policyRef: {{name: rate-limiting-flex}}
      config: {{rateLimits: [{{maximumRequests: 3, timePeriodInMilliseconds: 2000}}, {{maximumRequests: 10, timePeriodInMilliseconds: 60000}}]}}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Configuration
metadata: {{name: storage}}
spec:
  sharedStorage:
    redis: {{address: \"127.0.0.1:6390\", db: \"2\", tls: {{skipValidation: true}}}}
"
    );
    let c = load(&text);
    let p = &c.listeners[0].routes[0].policies;
    let PolicyConfig::RateLimit(r) = &p[0].config else {
        panic!("{p:?}")
    };
    assert_eq!(r.limits.len(), 2);
    assert_eq!((r.limits[0].max, r.limits[0].period_ms), (3, 2000));
    assert!(!r.expose_headers, "Flex's default: no headers");
    assert!(r.reset_in_ms && r.clusterizable);
    let redis = r
        .redis
        .as_ref()
        .expect("the Configuration's Redis reached the policy");
    assert_eq!(
        (redis.address.as_str(), redis.db, redis.tls),
        ("127.0.0.1:6390", 2, true)
    );
    assert!(
        c.notices
            .iter()
            .any(|n| n.contains("sharedStorage.redis.tls.skipValidation")),
        "{:?}",
        c.notices
    );
}

#[test]
fn authentication_and_access_policies() {
    let p = policies(
        "http-basic-authentication-flex",
        "{username: u, password: p}",
    );
    let PolicyConfig::BasicAuth(c) = &p[0].config else {
        panic!()
    };
    assert_eq!(c.users[0].username, "u");

    let p = policies(
        "oauth2-token-introspection-flex",
        "{introspectionURL: \"https://idp.test/introspect\", authorizationValue: \"Basic abc\", scopes: \"read write\", scopeValidationCriteria: OR, validatedTokenTTL: 30}",
    );
    let PolicyConfig::Introspection(c) = &p[0].config else {
        panic!()
    };
    assert_eq!(c.url, "https://idp.test/introspect");
    assert_eq!(c.scopes, ["read", "write"]);
    assert!(!c.all_scopes);
    assert_eq!(
        (c.cache_ttl, c.timeout),
        (Duration::from_secs(30), Duration::from_secs(10))
    );

    let p = policies("ip-allowlist-flex", "{ips: [\"10.0.0.0/8\", \"::1\"]}");
    assert!(matches!(p[0].config, PolicyConfig::IpAllowlist(_)));
    let p = policies("header-removal-flex", "{outboundHeaders: [server]}");
    assert!(matches!(p[0].config, PolicyConfig::HeaderRemoval(_)));
    let p = policies(
        "jwt-validation-flex",
        "{jwtKeyOrigin: jwks, jwksUrl: \"https://idp.test/jwks\", signingMethod: es, signingKeyLength: 384, jwksServiceTimeToLive: 5}",
    );
    let PolicyConfig::Jwt(c) = &p[0].config else {
        panic!()
    };
    assert_eq!(c.jwks[0].url, "https://idp.test/jwks");
    assert_eq!(c.jwks[0].algorithms, [jsonwebtoken::Algorithm::ES384]);
    assert_eq!(c.jwks_ttl, Duration::from_secs(300));
    assert!(!c.require_exp, "mandatoryExpClaim defaults to false");
    assert_eq!(c.missing_status, 400);
}

#[test]
fn selector_bindings_run_first_and_cors_before_them() {
    let text = format!(
        "{INSTANCE}  policies:
    - policyRef: {{name: http-basic-authentication-flex}}
      order: 1
      config: {{username: u, password: p}}
    - policyRef: {{name: cors-flex}}
      order: 99
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata: {{name: everyone}}
spec:
  targetRef: {{kind: Selector}}
  policyRef: {{name: ip-blocklist-flex}}
  order: 90
  config: {{ips: [192.0.2.0/24]}}
"
    );
    let c = load(&text);
    let names: Vec<&str> = c.listeners[0].routes[0]
        .policies
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(names, ["cors", "ip-blocklist", "http-basic-authentication"]);
}

#[test]
fn configuration_keys_not_implemented_are_noticed_never_silent() {
    let text = format!(
        "{INSTANCE}---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Configuration
metadata: {{name: misc}}
spec:
  forwardProxy: {{address: \"http://proxy:3128\"}}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Configuration
metadata: {{name: probes}}
spec:
  probe: {{enabled: true, port: 3001}}
"
    );
    let c = load(&text);
    assert!(
        c.notices.iter().any(|n| n.contains("spec.forwardProxy")),
        "{:?}",
        c.notices
    );
    assert_eq!(c.server.admin.map(|a| a.port()), Some(3001));
}
