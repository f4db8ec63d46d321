//! The admin listener (default 127.0.0.1:9901): probes, metrics and the
//! effective configuration. A Pingora service like the listeners, so its
//! socket is handed over on a binary upgrade too.
//!
//! `GET /live`    200 while the process runs
//! `GET /ready`   200 once config is loaded and every listener accepts; 503 before and while draining.
//!                A refused reload leaves it 200 (the last good config serves);
//!                `?allowPolicyErrors=false` makes it 503 while the files on disk are refused
//! `GET /metrics` Prometheus (OpenMetrics text)
//! `GET /config`  the effective configuration as JSON (secrets redacted), with
//!                the apply state: generation, each source file's state, hash and errors

use crate::config::model::{Balance, ClientLimits, Config, HashOn, ServiceConfig};
use crate::config::secrets::redact;
use crate::config::tls::{ListenerTls, TlsVersion};
use crate::ops::metrics::CONTENT_TYPE;
use crate::runtime::{unix, ApplyStatus, Phase, Runtime};
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct AdminApp {
    runtime: Arc<Runtime>,
}

impl AdminApp {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        AdminApp { runtime }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(status: u16, v: &Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

/// The configuration as JSON. Policies print `"<redacted>"` for their
/// secrets (passwords, keys); beyond that, any string holding a value read
/// from a `${ENV}` or `file:` reference is redacted here.
pub fn config_json(c: &Config) -> Value {
    let mut v = config_tree(c);
    scrub(&mut v, &c.secrets);
    v
}

fn scrub(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => {
            let clean = redact(std::mem::take(s), secrets);
            *s = clean;
        }
        Value::Array(items) => items.iter_mut().for_each(|i| scrub(i, secrets)),
        Value::Object(map) => map.values_mut().for_each(|i| scrub(i, secrets)),
        _ => {}
    }
}

/// The configuration as JSON before the references' secret values are
/// redacted (policies redact their own secrets): for `plan`, which compares
/// two and shows only whether a secret changed.
pub fn config_tree(c: &Config) -> Value {
    let listeners: Vec<Value> = c
        .listeners
        .iter()
        .map(|l| {
            let routes: Vec<Value> = l
                .routes
                .iter()
                .map(|r| {
                    let policies: Vec<Value> = r
                        .policies
                        .iter()
                        .map(|p| {
                            let mut v = json!({p.name(): p.config.describe(), "order": p.order});
                            if let Some(doc) = &p.document {
                                v["document"] = json!(doc);
                            }
                            if let Some(w) = &p.when {
                                v["rules"] = w.rules.describe();
                            }
                            v
                        })
                        .collect();
                    let mut route = json!({
                        "id": r.id,
                        "gateway": r.gateway,
                        "paths": r.paths.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                        "methods": r.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                        "host": r.host,
                        "upstream": {
                            "services": r.upstream.services.iter().map(|s| json!({"name": s.name, "weight": s.weight})).collect::<Vec<_>>(),
                            "connectTimeoutMs": r.upstream.timeouts.connect.as_millis() as u64,
                            "readTimeoutMs": r.upstream.timeouts.read.as_millis() as u64,
                            "writeTimeoutMs": r.upstream.timeouts.write.as_millis() as u64,
                            "requestTimeoutMs": r.upstream.timeouts.request.map(|t| t.as_millis() as u64),
                            "retries": {
                                "maxRetries": r.upstream.retries.max,
                                "connectFailure": r.upstream.retries.connect_failure,
                                "statuses": r.upstream.retries.statuses,
                                "timeout": r.upstream.retries.timeout,
                            },
                        },
                        "maxBodySize": r.max_body_size,
                        "allowEncodedSlashes": r.allow_encoded_slashes,
                        "allowPathParameters": r.allow_path_parameters,
                        "policies": policies,
                    });
                    if let Some(f) = &r.flex {
                        // a Flex route: regex rules under its instance's base path
                        route["flex"] = json!({
                            "basePath": f.base_path,
                            "rules": f.rules.describe(),
                            "destinationPath": f.destination_path,
                        });
                    }
                    route
                })
                .collect();
            json!({
                "name": l.name,
                "address": l.addr.to_string(),
                "h2c": l.h2c,
                "limits": limits_json(&l.limits),
                "tls": l.tls.as_ref().map(tls_json),
                "routes": routes,
            })
        })
        .collect();
    let services: Vec<Value> = c.services.iter().map(|s| service_json(s)).collect();
    let s = &c.server;
    json!({
        "gateways": c.gateways,
        "listeners": listeners,
        "services": services,
        "logging": c.logging.as_ref().map(crate::config::logging::describe),
        "server": {
            "threads": s.threads,
            "pidFile": s.pid_file,
            "upgradeSocket": s.upgrade_socket,
            "gracePeriodSeconds": s.grace_period.as_secs(),
            "shutdownTimeoutSeconds": s.shutdown_timeout.as_secs(),
            "errorLog": s.error_log,
            "accessLog": s.access_log,
            "admin": s.admin.map(|a| a.to_string()),
            "watchConfig": s.watch_config,
            "workStealing": s.work_stealing(),
            "upstreamKeepalivePool": s.upstream_keepalive_pool,
            "maxBodySize": s.max_body_size,
            "maxRequestsInFlight": s.max_requests_in_flight,
            "upstreamTimeouts": {
                "timeoutMs": s.upstream_timeouts.timeout.map(|t| t.as_millis() as u64),
                "connectTimeoutMs": s.upstream_timeouts.connect.map(|t| t.as_millis() as u64),
                "readTimeoutMs": s.upstream_timeouts.read.map(|t| t.as_millis() as u64),
                "requestTimeoutMs": s.upstream_timeouts.request.map(|t| t.as_millis() as u64),
            },
            "sharedStorage": s.shared_storage.as_ref().map(|r| json!({
                "redis": {"address": r.address, "db": r.db, "tls": r.tls, "timeoutMs": r.timeout.as_millis() as u64,
                          "username": r.username, "password": r.password.as_ref().map(|_| crate::policy::REDACTED),
                          "sentinel": r.sentinel.as_ref().map(|s| json!({
                              "addresses": s.addresses, "masterName": s.master_name, "username": s.username,
                              "password": s.password.as_ref().map(|_| crate::policy::REDACTED)})),
                          "cluster": (!r.cluster.is_empty()).then(|| json!({"addresses": r.cluster}))},
            })),
            "trustedProxies": s.trusted_proxies.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "tracing": s.tracing.as_ref().map(|t| json!({
                "endpoint": t.endpoint,
                "serviceName": t.service_name,
                "protocol": match t.protocol {
                    crate::config::model::OtlpProtocol::Http => "http",
                    crate::config::model::OtlpProtocol::Grpc => "grpc",
                },
                "sampling": {"client": f64::from(t.sampling.client) / 10_000.0,
                             "random": f64::from(t.sampling.random) / 10_000.0,
                             "overall": f64::from(t.sampling.overall) / 10_000.0},
                "labels": crate::policy::tracing::describe(&crate::config::model::TraceOverride {
                    labels: t.labels.clone(),
                    ..Default::default()
                })["labels"],
                // header values are credentials
                "headers": t.headers.iter().map(|(k, _)| (k.clone(), Value::from(crate::policy::REDACTED))).collect::<serde_json::Map<_, _>>(),
                "resourceAttributes": t.resource.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
                "timeoutMs": t.timeout.as_millis() as u64,
                "maxQueueSize": t.max_queue,
                "maxExportBatchSize": t.batch_size,
                "scheduledDelayMs": t.delay.as_millis() as u64,
                "responseHeader": t.response_header.as_ref().map(|h| h.as_str()),
                "policySpans": t.policy_spans,
            })),
        }
    })
}

fn limits_json(l: &ClientLimits) -> Value {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    json!({
        "maxHeaderSize": l.max_header_bytes,
        "maxHeaders": l.max_headers,
        "maxUriLength": l.max_uri_bytes,
        "maxResponseHeaderSize": l.max_response_header_bytes,
        "headerTimeoutMs": ms(l.header_timeout),
        "handshakeTimeoutMs": ms(l.handshake_timeout),
        "keepaliveTimeoutMs": ms(l.keepalive_timeout),
        "bodyTimeoutMs": ms(l.body_timeout),
        "upgradeIdleTimeoutMs": ms(l.upgrade_idle_timeout),
        "maxConcurrentStreams": l.max_concurrent_streams,
        "maxConnections": l.max_connections,
        "maxConnectionsPerClient": l.max_connections_per_client,
        "underscoresInHeaders": l.underscores.as_str(),
    })
}

fn tls_json(t: &ListenerTls) -> Value {
    let version = |v: TlsVersion| match v {
        TlsVersion::Tls12 => "1.2",
        TlsVersion::Tls13 => "1.3",
    };
    let mut alpn = Vec::new();
    if t.h2 {
        alpn.push("h2");
    }
    if t.h1 {
        alpn.push("http/1.1");
    }
    json!({
        "certificates": t.certificates.iter().map(|c| json!({
            "cert": c.cert.source,
            "key": c.key.source,
            "names": c.names,
            // of the certificate (public), so a renewal shows as a change
            "certSha256": crate::config::sources::sha256(&c.cert.bytes),
        })).collect::<Vec<_>>(),
        "minVersion": version(t.min_version),
        "maxVersion": version(t.max_version),
        "alpn": alpn,
        "ciphers": t.ciphers,
        "ciphersuites": t.ciphersuites,
        "clientCertificates": t.clients.as_ref().map(|c| json!({
            "ca": c.ca.source,
            "required": c.required,
            "forwardHeader": c.forward_header.as_ref().map(|h| h.as_str()),
        })),
    })
}

fn service_json(s: &ServiceConfig) -> Value {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let balance = match &s.balance {
        Balance::RoundRobin => json!("round-robin"),
        Balance::Random => json!("random"),
        Balance::LeastRequests => json!("least-requests"),
        Balance::Hash(on) => json!({"hash": match on {
            HashOn::Header(h) => format!("header:{h}"),
            HashOn::Cookie(c) => format!("cookie:{c}"),
            HashOn::ClientIp => "client-ip".to_string(),
        }}),
    };
    let c = &s.circuit;
    json!({
        "name": s.name,
        "targets": s.targets.iter().map(|t| json!({"url": t.upstream.to_string(), "weight": t.weight})).collect::<Vec<_>>(),
        "loadBalancing": balance,
        "healthCheck": s.health_check.as_ref().map(|h| json!({
            "path": h.path,
            "intervalMs": ms(h.interval),
            "timeoutMs": ms(h.timeout),
            "expectedStatus": format!("{}-{}", h.statuses.0, h.statuses.1),
            "healthyThreshold": h.healthy_threshold,
            "unhealthyThreshold": h.unhealthy_threshold,
        })),
        "passiveHealthCheck": s.passive.map(|p| json!({
            "consecutiveFailures": p.consecutive_failures,
            "ejectionTimeMs": ms(p.ejection),
            "maxEjectionTimeMs": ms(p.max_ejection),
        })),
        "failOpen": s.fail_open,
        "http2": s.http2,
        "dnsRefreshMs": ms(s.dns_refresh),
        "tls": {
            "verify": s.tls.verify,
            "ca": s.tls.ca,
            "clientCertificate": s.tls.client.as_ref().map(|(c, _)| c),
            "sni": s.tls.sni,
        },
        "circuitBreaker": {
            "maxConnections": c.max_connections,
            "maxPendingRequests": c.max_pending,
            "maxRequests": c.max_requests,
            "maxRetries": c.max_retries,
            "errors": c.errors.map(|e| json!({
                "failureThreshold": e.failures,
                "failureWindowMs": ms(e.window),
                "openTimeMs": ms(e.open_for),
            })),
        },
    })
}

/// `?allowPolicyErrors=false` (Flex's name) or `?allowConfigErrors=false`:
/// readiness fails while the configuration on disk is refused.
fn strict(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            matches!(
                kv.split_once('='),
                Some(("allowPolicyErrors" | "allowConfigErrors", "false"))
            )
        })
    })
}

/// The apply state as `/config` shows it (errors redacted like the rest).
pub fn status_json(status: &ApplyStatus, c: &Config) -> Value {
    let redact_all = |m: String| redact(m, &c.secrets);
    json!({
        "generation": status.generation,
        "appliedAt": unix(status.applied_at),
        "lastReload": {
            "at": unix(status.attempted_at),
            "result": if status.ok() { "applied" } else { "refused" },
            "errors": status.errors.iter().map(|e| redact_all(e.to_string())).collect::<Vec<_>>(),
        },
        "files": status.files.iter().map(|f| f.to_json(&redact_all)).collect::<Vec<_>>(),
    })
}

/// Live state of every upstream service: targets, health, counters.
fn upstreams_json(runtime: &Runtime) -> Value {
    let snapshot = runtime.snapshot();
    let now = std::time::Instant::now();
    let mut names: Vec<&String> = snapshot.services.keys().collect();
    names.sort();
    let services: Vec<Value> = names
        .into_iter()
        .map(|n| snapshot.services[n].report(now))
        .collect();
    json!({ "services": services })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_reply(405, &json!({"error": "only GET", "status": 405}));
        }
        match req.uri.path() {
            // Flex's probe paths too
            "/live" | "/probes/liveness" => json_reply(200, &json!({"status": "live"})),
            "/ready" | "/probes/readiness" => match self.runtime.phase() {
                Phase::Ready if strict(req.uri.query()) && !self.runtime.apply_status().ok() => {
                    json_reply(
                        503,
                        &json!({"status": "config refused", "detail": "the last reload was refused; the previous configuration serves (see /config)"}),
                    )
                }
                Phase::Ready => json_reply(200, &json!({"status": "ready"})),
                Phase::Starting => json_reply(503, &json!({"status": "starting"})),
                Phase::Draining => json_reply(503, &json!({"status": "draining"})),
            },
            "/metrics" => {
                let now = std::time::Instant::now();
                for service in self.runtime.snapshot().services.values() {
                    service.export_gauges(now);
                }
                reply(
                    200,
                    CONTENT_TYPE,
                    self.runtime.metrics.render().into_bytes(),
                )
            }
            "/upstreams" => json_reply(200, &upstreams_json(&self.runtime)),
            "/config" => {
                let snapshot = self.runtime.snapshot();
                let mut v = config_json(&snapshot.config);
                // which listeners this process serves (a new one waits
                // for a binary upgrade)
                if let Some(ls) = v["listeners"].as_array_mut() {
                    for l in ls {
                        let bound = l["address"]
                            .as_str()
                            .and_then(|a| a.parse().ok())
                            .is_some_and(|a| self.runtime.binds(a));
                        l["serving"] = json!(bound);
                    }
                }
                let status = status_json(&self.runtime.apply_status(), &snapshot.config);
                if let (Value::Object(map), Value::Object(extra)) = (&mut v, status) {
                    map.extend(extra);
                }
                json_reply(200, &v)
            }
            _ => json_reply(
                404,
                &json!({"error": "not found (try /ready, /live, /metrics, /config, /upstreams)", "status": 404}),
            ),
        }
    }
}
