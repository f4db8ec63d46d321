//! The admin listener (default 127.0.0.1:9901): probes, metrics and the
//! effective configuration. A Pingora service like the listeners, so its
//! socket is handed over on a binary upgrade too.
//!
//! `GET /live`    200 while the process runs
//! `GET /ready`   200 once config is loaded and every listener accepts; 503 before and while draining
//! `GET /metrics` Prometheus (OpenMetrics text)
//! `GET /config`  the effective configuration as JSON (secrets redacted)

use crate::config::model::Config;
use crate::config::secrets::redact;
use crate::ops::metrics::CONTENT_TYPE;
use crate::runtime::{Phase, Runtime};
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

fn config_tree(c: &Config) -> Value {
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
                            v
                        })
                        .collect();
                    json!({
                        "id": r.id,
                        "gateway": r.gateway,
                        "paths": r.paths.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                        "methods": r.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                        "host": r.host,
                        "upstream": {
                            "url": format!("{}://{}{}", if r.upstream.tls { "https" } else { "http" }, r.upstream.authority, r.upstream.base_path),
                            "timeoutMs": r.upstream.timeout.as_millis() as u64,
                        },
                        "maxBodySize": r.max_body_size,
                        "allowEncodedSlashes": r.allow_encoded_slashes,
                        "policies": policies,
                    })
                })
                .collect();
            json!({"name": l.name, "address": l.addr.to_string(), "routes": routes})
        })
        .collect();
    let s = &c.server;
    json!({
        "gateways": c.gateways,
        "listeners": listeners,
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
            "workStealing": s.work_stealing,
            "upstreamKeepalivePool": s.upstream_keepalive_pool,
            "maxBodySize": s.max_body_size,
            "maxRequestsInFlight": s.max_requests_in_flight,
            "trustedProxies": s.trusted_proxies.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        }
    })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_reply(405, &json!({"error": "only GET", "status": 405}));
        }
        match req.uri.path() {
            "/live" => json_reply(200, &json!({"status": "live"})),
            "/ready" => match self.runtime.phase() {
                Phase::Ready => json_reply(200, &json!({"status": "ready"})),
                Phase::Starting => json_reply(503, &json!({"status": "starting"})),
                Phase::Draining => json_reply(503, &json!({"status": "draining"})),
            },
            "/metrics" => reply(
                200,
                CONTENT_TYPE,
                self.runtime.metrics.render().into_bytes(),
            ),
            "/config" => json_reply(200, &config_json(&self.runtime.snapshot().config)),
            _ => json_reply(
                404,
                &json!({"error": "not found (try /ready, /live, /metrics, /config)", "status": 404}),
            ),
        }
    }
}
