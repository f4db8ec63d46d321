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
fn flex_docs_spellings_user_db_and_builtin_policies_as_extensions() {
    let storage = |redis: &str| {
        format!(
            "{INSTANCE}  policies:
    - policyRef: {{name: rate-limiting-flex, kind: Extension}}
      config: {{rateLimits: [{{maximumRequests: 3, timePeriodInMilliseconds: 2000}}]}}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Configuration
metadata: {{name: storage}}
spec:
  sharedStorage:
    redis: {redis}
"
        )
    };
    // Flex's shared-storage page: `username`'s and `db`'s other spellings
    let c = load(&storage(
        "{address: \"127.0.0.1:6390\", user: ecomm-user, password: pw, DB: 7}",
    ));
    let p = &c.listeners[0].routes[0].policies;
    let PolicyConfig::RateLimit(r) = &p[0].config else {
        panic!("a built-in policy named with kind: Extension is the built-in: {p:?}")
    };
    let redis = r.redis.as_ref().expect("redis");
    assert_eq!(
        (redis.username.as_deref(), redis.db),
        (Some("ecomm-user"), 7)
    );
    let e = load_str(
        "flex.yaml",
        &storage("{address: \"127.0.0.1:6390\", user: a, username: b}"),
    )
    .expect_err("both spellings")
    .to_string();
    assert!(
        e.contains("sharedStorage.redis.user: give `username` or `user`, not both"),
        "{e}"
    );
}

/// A rate-limited API and a `Configuration` whose `sharedStorage.redis`
/// holds `redis` (its lines indented under it).
fn with_storage(redis: &str) -> String {
    format!(
        "{INSTANCE}  policies:
    - policyRef: {{name: rate-limiting-flex}}
      config: {{rateLimits: [{{maximumRequests: 3, timePeriodInMilliseconds: 2000}}]}}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Configuration
metadata: {{name: storage}}
spec:
  sharedStorage:
    redis:
{redis}"
    )
}

/// The shared storage the first route's rate limit was given.
fn limit_storage(c: &Config) -> &crate::store::RedisSettings {
    let p = &c.listeners[0].routes[0].policies;
    let PolicyConfig::RateLimit(r) = &p[0].config else {
        panic!("{p:?}")
    };
    r.redis.as_ref().expect("redis")
}

#[test]
fn flex_shared_storage_with_redis_sentinel() {
    let text = with_storage(
        "      password: data-pw
      DB: 2
      sentinel:
        addresses: [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]
        masterName: mymaster
        password: sentinel-pw
",
    );
    let c = load(&text);
    let redis = limit_storage(&c);
    let s = redis.sentinel.as_ref().expect("sentinel");
    assert_eq!(s.addresses, ["10.0.0.1:26379", "10.0.0.2:26379"]);
    assert_eq!(s.master_name, "mymaster");
    assert_eq!(s.password.as_deref(), Some("sentinel-pw"));
    assert_eq!((redis.password.as_deref(), redis.db), (Some("data-pw"), 2));
    // one of address or sentinel
    let both = text.replace(
        "      password: data-pw",
        "      address: \"127.0.0.1:6379\"",
    );
    let e = load_str("flex.yaml", &both).expect_err("both").to_string();
    assert!(
        e.contains("sharedStorage.redis.sentinel: give one of `address` (one server), `sentinel`"),
        "{e}"
    );
    let neither = text[..text.find("      sentinel:").expect("sentinel")].to_string();
    let e = load_str("flex.yaml", &neither)
        .expect_err("neither")
        .to_string();
    assert!(
        e.contains(
            "missing `address` (host:port), `sentinel` (addresses and masterName) or `cluster`"
        ),
        "{e}"
    );
}

#[test]
fn shared_storage_in_a_redis_cluster() {
    let text = with_storage(
        "      password: data-pw
      cluster:
        addresses: [\"10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]
",
    );
    let e = load_str("flex.yaml", &text).expect_err("a URL").to_string();
    assert!(
        e.contains("cluster.addresses[1]: \"redis://10.0.0.2:7000\" is not host:port"),
        "{e}"
    );
    let c = load(&text.replace("redis://", ""));
    let redis = limit_storage(&c);
    assert_eq!(redis.cluster, ["10.0.0.1:7000", "10.0.0.2:7000"]);
    assert_eq!(
        (redis.address.as_str(), redis.sentinel.is_none()),
        ("", true)
    );
    assert_eq!(redis.describe(), "cluster 10.0.0.1:7000, 10.0.0.2:7000");
    for (change, message) in [
        (
            "      address: \"127.0.0.1:6379\"\n",
            "sharedStorage.redis.cluster: give one of `address` (one server), `sentinel` (which finds the master) or `cluster` (its nodes), not several",
        ),
        ("      DB: 2\n", "sharedStorage.redis.db: Redis Cluster has only database 0"),
    ] {
        let e = load_str(
            "flex.yaml",
            &text.replace("      password: data-pw\n", change),
        )
        .expect_err(message)
        .to_string();
        assert!(e.contains(message), "{e}");
    }
    let empty = text.replace("[\"10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]", "[]");
    let e = load_str("flex.yaml", &empty)
        .expect_err("empty")
        .to_string();
    assert!(
        e.contains("cluster.addresses: at least one cluster node address is required"),
        "{e}"
    );
    // database 0 written out is fine
    load(
        &text
            .replace("      password: data-pw\n", "      db: 0\n")
            .replace("redis://", ""),
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

/// `Configuration.spec.tracing` as Flex's documents write it: the gRPC
/// provider at `h2://`, OTLP/HTTP at `http://` (+ `tracesUri`), `sampling`
/// and `labels` under `tracing` or beside it (never both), `anypoint`
/// noticed; the `tracing-flex` policy on the route.
#[test]
fn flex_tracing_configuration_and_policy() {
    use crate::config::model::{LabelValue, OtlpProtocol, Sampling};
    let config = |body: &str| {
        format!(
            "{INSTANCE}  policies:
    - policyRef: {{name: tracing-flex}}
      config:
        sampling: {{client: 100, random: 5, overall: 50}}
        spanName: api-span
---
apiVersion: gateway.mulesoft.com/v1beta1
kind: Configuration
metadata: {{name: tracing}}
spec:
{body}"
        )
    };
    let grpc = "  tracing:
    provider:
      type: opentelemetry
      properties:
        address: h2://collector.example:4317
        serviceType: grpc
        serviceName: my-flex-name
        timeout: 10s
  sampling: {client: 100, random: 12.5, overall: 100}
  labels:
    - {name: c-literal-tag, type: literal, defaultValue: the-tag}
    - {name: c-header-tag, type: requestHeader, keyName: ':method', defaultValue: DEFAULT_METHOD}
";
    let c = load(&config(grpc));
    let t = c.server.tracing.clone().expect("tracing");
    assert_eq!(t.protocol, OtlpProtocol::Grpc);
    assert_eq!(t.endpoint, "http://collector.example:4317");
    assert_eq!(t.service_name, "my-flex-name");
    assert_eq!(t.timeout, Duration::from_secs(10));
    assert_eq!(
        t.sampling,
        Sampling {
            client: 1_000_000,
            random: 125_000,
            overall: 1_000_000
        }
    );
    assert_eq!(t.labels.len(), 2);
    assert_eq!(t.labels[0].value, LabelValue::Fixed("the-tag".into()));
    assert_eq!(
        t.labels[1].value,
        LabelValue::Header {
            name: ":method".into(),
            default: Some("DEFAULT_METHOD".into())
        }
    );
    let p = &c.listeners[0].routes[0].policies;
    let Some(PolicyConfig::Tracing(o)) =
        p.iter().map(|p| &p.config).find(|c| c.name() == "tracing")
    else {
        panic!("{p:?}")
    };
    assert_eq!(o.span_name.as_deref(), Some("api-span"));
    assert_eq!(
        o.sampling.map(|s| (s.random, s.overall)),
        Some((50_000, 500_000))
    );

    // OTLP/HTTP; sampling under tracing; the traces path
    let http = "  tracing:
    provider:
      type: opentelemetry
      properties:
        address: https://otlp.example:4318
        serviceType: http
        tracesUri: /otlp/v1/traces
        httpHeaders: {Authorization: Bearer x}
    sampling: {random: 1}
";
    let t = load(&config(http)).server.tracing.expect("tracing");
    assert_eq!(t.protocol, OtlpProtocol::Http);
    assert_eq!(t.endpoint, "https://otlp.example:4318/otlp/v1/traces");
    assert_eq!(t.sampling.random, 10_000);
    assert_eq!(t.headers, vec![("authorization".into(), "Bearer x".into())]);
    let bare = "  tracing:\n    provider:\n      type: opentelemetry\n      properties: {address: 'http://c:4318'}\n";
    let t = load(&config(bare)).server.tracing.expect("tracing");
    assert_eq!(t.endpoint, "http://c:4318/v1/traces");

    // anypoint: noticed, nothing exported
    let anypoint = "  tracing:\n    provider:\n      type: anypoint\n      properties: {timeout: 10s}\n    sampling: {client: 0, random: 0, overall: 0}\n";
    let c = load(&config(anypoint));
    assert!(c.server.tracing.is_none());
    assert!(
        c.notices.iter().any(|n| n.contains("anypoint")),
        "{:?}",
        c.notices
    );

    // mistakes, each named where it is
    for (body, says) in [
        (
            "  tracing:\n    provider:\n      type: opentelemetry\n      properties: {address: 'h2://c:4317', serviceType: http}\n",
            "h2:// is a gRPC address",
        ),
        (
            "  tracing:\n    provider:\n      type: opentelemetry\n      properties: {address: 'h2://c:4317/v1'}\n",
            "without a path",
        ),
        (
            "  tracing:\n    provider: {type: opentelemetry, properties: {address: 'http://c:4318'}}\n    sampling: {random: 1}\n  sampling: {random: 2}\n",
            "given both here and under `tracing`",
        ),
        ("  sampling: {random: 2}\n", "needs `tracing`"),
        (
            "  tracing:\n    provider:\n      type: opentelemetry\n      properties: {address: 'h2://collector'}\n",
            "give the gRPC collector's port",
        ),
        (
            "  tracing:\n    provider: {type: zipkin, properties: {address: 'http://c:4318'}}\n",
            "spec.tracing.provider.type",
        ),
        (
            "  tracing:\n    provider: {type: opentelemetry}\n",
            "needs `properties.address`",
        ),
        (
            "  tracing:\n    provider: {type: opentelemetry, properties: {address: 'http://c:4318'}}\n    labels: [{name: x, type: environment}]\n",
            "needs `keyName`",
        ),
        (
            "  tracing:\n    provider: {type: opentelemetry, properties: {address: 'http://c:4318'}}\n    sampling: {random: 101}\n",
            "percentage",
        ),
    ] {
        let e = load_str("flex.yaml", &config(body)).expect_err(body).to_string();
        assert!(e.contains(says), "{body}: {e}");
    }
}

/// `Configuration.spec.logging` as Flex's documents write it: Fluent
/// Bit's output types and parameters (any letter case), `file` as an
/// absolute path or `path` + `file`, outputs named by the runtime and
/// access logs; every mistake named where it is.
#[test]
fn flex_logging_outputs() {
    use crate::config::logging::{
        DateFormat, FileFormat, JsonFormat, RecordField, Sink, TemplatePiece,
    };
    let config = |body: &str| {
        format!(
            "{INSTANCE}---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Configuration
metadata: {{name: logging}}
spec:
  logging:
{body}"
        )
    };
    let all = "    outputs:
    - name: default
      type: file
      parameters:
        file: /var/log/flex/log.txt
        format: template
        template: |
          [{logger}][{level}][{kind}] {message}
    - name: folder
      type: file
      parameters: {Path: /var/log/flex, File: gw.log, Mkdir: on}
    - name: collector
      type: http
      parameters:
        host: collectors.example.com
        port: 443
        URI: /receiver/v1/http/key
        format: json_lines
        json_date_key: timestamp
        json_date_format: iso8601
        tls: On
        header: [\"X-Token abc\", \"X-Env prod\"]
        http_User: u
        http_Passwd: p4ss
    - name: rsyslog
      type: syslog
      parameters: {host: 127.0.0.1, port: 5514, mode: tcp, syslog_format: rfc3164}
    - name: console
      type: stdout
    runtimeLogs:
      logLevel: debug
      outputs: [default, rsyslog]
    accessLogs:
      outputs: [default, folder, collector, console]
";
    let c = load(&config(all));
    assert_eq!(c.log_level, Some(log::LevelFilter::Debug));
    let l = c.logging.expect("logging");
    assert_eq!(l.runtime, vec![0, 3]);
    assert_eq!(l.access, vec![0, 1, 2, 4]);
    let Sink::File {
        path,
        format: FileFormat::Template(t),
        mkdir: false,
    } = &l.outputs[0].sink
    else {
        panic!("{:?}", l.outputs[0])
    };
    assert_eq!(path.to_str(), Some("/var/log/flex/log.txt"));
    assert_eq!(t[1], TemplatePiece::Field(RecordField::Logger));
    assert_eq!(t.last(), Some(&TemplatePiece::Field(RecordField::Message)));
    let Sink::File {
        path,
        format: FileFormat::Plain,
        mkdir: true,
    } = &l.outputs[1].sink
    else {
        panic!("{:?}", l.outputs[1])
    };
    assert_eq!(path.to_str(), Some("/var/log/flex/gw.log"));
    let Sink::Http {
        url,
        format,
        date,
        headers,
        basic_auth,
        tls_verify,
        ..
    } = &l.outputs[2].sink
    else {
        panic!()
    };
    assert_eq!(
        url,
        "https://collectors.example.com:443/receiver/v1/http/key"
    );
    assert_eq!(*format, JsonFormat::Lines);
    assert!(*tls_verify);
    assert_eq!(date.key.as_deref(), Some("timestamp"));
    assert_eq!(date.format, DateFormat::Iso8601);
    assert_eq!(headers[1], ("X-Env".to_string(), "prod".to_string()));
    assert_eq!(basic_auth.as_ref().map(|a| a.1.as_str()), Some("p4ss"));
    assert!(
        c.secrets.iter().any(|s| s == "p4ss"),
        "the password is a secret"
    );
    let Sink::Syslog {
        address,
        tcp: true,
        rfc5424: false,
        ..
    } = &l.outputs[3].sink
    else {
        panic!()
    };
    assert_eq!(address, "127.0.0.1:5514");
    // Flex's older template names
    let old = "    outputs:\n    - {name: f, type: file, parameters: {path: /tmp, file: x.log, format: template, template: '[{runtime}][{loglevel}] {message}'}}\n    runtimeLogs: {outputs: f}\n";
    assert!(load(&config(old)).logging.is_some());
    // the reference guide's singular spellings
    let singular = "    outputs:\n    - {name: f, type: stdout}\n    runtimeLog: {logLevel: warn, outputs: [f]}\n    accessLog: {outputs: f}\n";
    let c = load(&config(singular));
    assert_eq!(c.log_level, Some(log::LevelFilter::Warn));
    let l = c.logging.expect("logging");
    assert_eq!((l.runtime.len(), l.access.len()), (1, 1));

    for (body, says) in [
        ("    outputs:\n    - {name: k, type: kafka, parameters: {brokers: b:9092}}\n    accessLogs: {outputs: [k]}\n",
         "Fluent Bit's \"kafka\" output is not supported"),
        ("    outputs:\n    - {name: f, type: file, parameters: {file: log.txt}}\n",
         "is relative"),
        ("    outputs:\n    - {name: f, type: file, parameters: {file: /l.txt, fromat: plain}}\n",
         "did you mean \"format\""),
        ("    outputs:\n    - {name: f, type: file, parameters: {file: /l.txt, format: template, template: '{lvl} {message}'}}\n",
         "unknown template variable {lvl}"),
        ("    outputs:\n    - {name: f, type: file, parameters: {file: /l.txt}}\n    accessLogs: {outputs: [default]}\n",
         "no output is named \"default\""),
        ("    outputs:\n    - {name: s, type: syslog, parameters: {mode: tls}}\n",
         "mode \"tls\" is not supported"),
        ("    outputs:\n    - {name: h, type: http, parameters: {format: msgpack}}\n",
         "format \"msgpack\" is not supported"),
        ("    outputs:\n    - {name: h, type: http, parameters: {tls: maybe}}\n",
         "expected on or off"),
        ("    outputs:\n    - {name: f, type: file, parameters: {file: /a}}\n    - {name: f, type: stdout}\n",
         "named twice"),
        ("    outputs:\n    - {name: f, type: stdout}\n    accessLog: {outputs: f}\n    accessLogs: {outputs: f}\n",
         "are the same setting"),
    ] {
        let e = load_str("flex.yaml", &config(body)).expect_err(body).to_string();
        assert!(e.contains(says), "{body}: {e}");
        assert!(e.contains("flex.yaml:"), "{e}");
    }
}
