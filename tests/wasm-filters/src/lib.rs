//! Test filters for flex-gateway's proxy-wasm host, written against the
//! Apache-2.0 proxy-wasm Rust SDK. One module; the root id picks the
//! filter (`plugin_root_id`), so the suite builds one crate once:
//!
//! - `headers`  adds `x-wasm-seen` upstream, removes `x-remove-me`, answers
//!   `/hello` itself, adds `x-wasm-response` to responses
//! - `config`   reads its JSON config (`{"header": .., "value": ..}`) and
//!   adds that response header
//! - `body`     redacts `secret` in response bodies (buffers the body)
//! - `upper`    upper-cases request bodies (buffers the body)
//! - `auth`     asks the `authz` service; 200 lets the request through
//!   with the service's `x-user`, anything else is answered 403
//! - `counter`  counts requests in shared data (compare-and-swap) and a
//!   metric; `x-count` on the response
//! - `tick`     a 20 ms tick counts in shared data; `x-ticks` upstream
//! - `later`    pauses every request; the root context resumes them on its
//!   next tick (`proxy_set_effective_context` + continue)
//! - `props`    request properties in response headers
//! - `faults`   traps on `x-trap`, loops forever on `x-loop`
//! - `flex`     a Flex PDK-style policy (see `flex` below)
//! - `deferred` ends each request late: `proxy_on_done` calls the `audit`
//!   service and returns false; the call's response calls `proxy_done`
//!   (unless the config says `{"done": "never"}`); `proxy_on_log` counts
//!   in a metric. The root context does the same when the plugin goes.

use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    kind: String,
    config: Vec<u8>,
}

fn root_id() -> String {
    hostcalls::get_property(vec!["plugin_root_id"])
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `deferred`: the end of a context waits for an `audit` call.
fn audit(what: &str) -> bool {
    hostcalls::dispatch_http_call(
        "audit",
        vec![(":method", "GET"), (":path", &format!("/audit/{what}")), (":authority", "audit.local")],
        None,
        vec![],
        Duration::from_secs(10),
    )
    .is_ok()
}

fn count(metric: &str) {
    if let Ok(id) = hostcalls::define_metric(MetricType::Counter, metric) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, _body_size: usize, _trailers: usize) {
        if self.kind == "deferred" {
            count("test_filter_deferred_root_responses");
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        !(self.kind == "deferred" && audit("root"))
    }
}

impl RootContext for Root {
    fn on_log(&mut self) {
        if self.kind == "deferred" {
            count("test_filter_deferred_root_logged");
        }
    }

    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.kind = root_id();
        if self.kind == "tick" || self.kind == "later" {
            self.set_tick_period(Duration::from_millis(20));
        }
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        self.config = self.get_plugin_configuration().unwrap_or_default();
        if self.kind == "refuse" {
            return false;
        }
        if self.kind == "flex" {
            return flex::configure(&self.config);
        }
        true
    }

    fn on_tick(&mut self) {
        if self.kind == "later" {
            for id in PAUSED.with(|p| std::mem::take(&mut *p.borrow_mut())) {
                if hostcalls::set_effective_context(id).is_ok() {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-resumed-by", Some("tick"));
                    let _ = hostcalls::resume_http_request();
                }
            }
            return;
        }
        let (value, cas) = self.get_shared_data("ticks");
        let n: u64 = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let _ = self.set_shared_data("ticks", Some((n + 1).to_string().as_bytes()), cas);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            id: context_id,
            kind: self.kind.clone(),
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

thread_local! {
    /// Requests the `later` filter paused, for the root context to resume.
    static PAUSED: std::cell::RefCell<Vec<u32>> = Default::default();
}

struct Http {
    id: u32,
    kind: String,
    config: Vec<u8>,
}

fn json_field(config: &[u8], key: &str) -> Option<String> {
    // the config is small flat JSON: {"header":"x","value":"y"}
    let text = std::str::from_utf8(config).ok()?;
    let at = text.find(&format!("\"{key}\""))?;
    let rest = &text[at + key.len() + 2..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(rest[..rest.find('"')?].to_string())
}

impl Context for Http {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        match self.kind.as_str() {
            "auth" => {
                let status = self.get_http_call_response_header(":status");
                if status.as_deref() == Some("200") {
                    let user = self.get_http_call_response_header("x-user").unwrap_or_default();
                    self.set_http_request_header("x-user", Some(&user));
                    self.resume_http_request();
                } else {
                    let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
                    let reason = String::from_utf8_lossy(&body).into_owned();
                    self.send_http_response(
                        403,
                        vec![("content-type", "text/plain"), ("x-denied-by", "authz")],
                        Some(format!("denied: {reason}").as_bytes()),
                    );
                }
            }
            "flex" => flex::call_response(self, body_size),
            "deferred" => {
                count("test_filter_deferred_responses");
                if json_field(&self.config, "done").as_deref() != Some("never") {
                    self.done();
                }
            }
            _ => {}
        }
    }

    fn on_done(&mut self) -> bool {
        if self.kind != "deferred" {
            return true;
        }
        // defined now so it reads 0 until the first log
        let _ = hostcalls::define_metric(MetricType::Counter, "test_filter_deferred_logged");
        !audit(&format!("request-{}", self.id))
    }
}

impl HttpContext for Http {
    fn on_log(&mut self) {
        if self.kind == "deferred" {
            count("test_filter_deferred_logged");
        }
    }

    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        match self.kind.as_str() {
            "headers" => {
                if self.get_http_request_header(":path").as_deref() == Some("/hello") {
                    self.send_http_response(
                        200,
                        vec![("content-type", "text/plain"), ("powered-by", "proxy-wasm")],
                        Some(b"Hello from WebAssembly\n"),
                    );
                    return Action::Pause;
                }
                let seen = self.get_http_request_headers().len();
                self.set_http_request_header("x-wasm-seen", Some(&seen.to_string()));
                self.set_http_request_header("x-remove-me", None);
                info!("#{} headers seen: {seen}", self.id);
                Action::Continue
            }
            "auth" => {
                let path = self.get_http_request_header(":path").unwrap_or_default();
                let token = self.get_http_request_header("authorization").unwrap_or_default();
                match self.dispatch_http_call(
                    "authz",
                    vec![
                        (":method", "GET"),
                        (":path", &format!("/check?path={path}")),
                        (":authority", "authz.local"),
                        ("authorization", &token),
                    ],
                    None,
                    vec![],
                    Duration::from_secs(2),
                ) {
                    Ok(_) => Action::Pause,
                    Err(e) => {
                        self.send_http_response(503, vec![], Some(format!("call failed: {e:?}").as_bytes()));
                        Action::Pause
                    }
                }
            }
            "upper" => {
                self.set_http_request_header("content-length", None);
                Action::Continue
            }
            "tick" => {
                let (value, _) = self.get_shared_data("ticks");
                let n = value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
                self.set_http_request_header("x-ticks", Some(&n));
                Action::Continue
            }
            "faults" => {
                if self.get_http_request_header("x-trap").is_some() {
                    panic!("asked to trap");
                }
                if self.get_http_request_header("x-loop").is_some() {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                Action::Continue
            }
            "flex" => flex::request(self),
            "later" => {
                PAUSED.with(|p| p.borrow_mut().push(self.id));
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if self.kind != "upper" {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, size) {
            let upper = String::from_utf8_lossy(&body).to_uppercase();
            self.set_http_request_body(0, size, upper.as_bytes());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        match self.kind.as_str() {
            "headers" => self.add_http_response_header("x-wasm-response", "yes"),
            "config" => {
                let header = json_field(&self.config, "header").unwrap_or_else(|| "x-config".into());
                let value = json_field(&self.config, "value").unwrap_or_default();
                self.add_http_response_header(&header, &value);
            }
            "body" => self.set_http_response_header("content-length", None),
            "counter" => {
                let mut n = 0u64;
                for _ in 0..100 {
                    let (value, cas) = self.get_shared_data("count");
                    n = value
                        .and_then(|v| String::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                        + 1;
                    if self.set_shared_data("count", Some(n.to_string().as_bytes()), cas).is_ok() {
                        break;
                    }
                }
                if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "test_filter_requests") {
                    let _ = hostcalls::increment_metric(id, 1);
                }
                self.set_http_response_header("x-count", Some(&n.to_string()));
            }
            "props" => {
                for (header, path) in [
                    ("x-p-path", vec!["request", "path"]),
                    ("x-p-method", vec!["request", "method"]),
                    ("x-p-host", vec!["request", "host"]),
                    ("x-p-id", vec!["request", "id"]),
                    ("x-p-source", vec!["source", "address"]),
                    ("x-p-plugin", vec!["plugin_name"]),
                    ("x-p-ua", vec!["request", "headers", "user-agent"]),
                ] {
                    let v = self
                        .get_property(path)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_else(|| "-".into());
                    self.add_http_response_header(header, &v);
                }
                let code = self
                    .get_property(vec!["response", "code"])
                    .and_then(|b| b.get(..8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
                    .unwrap_or(-1);
                self.add_http_response_header("x-p-code", &code.to_string());
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if self.kind != "body" {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, size) {
            let text = String::from_utf8_lossy(&body).replace("secret", "******");
            self.set_http_response_body(0, size, text.as_bytes());
        }
        Action::Continue
    }
}

/// A policy making the calls a Flex Gateway PDK policy makes (the PDK
/// itself is not used: its licence is proprietary). Config:
/// `{"source": "http://host:port", "header": "x-name"}`.
mod flex {
    use super::*;

    thread_local! {
        static SERVICE: std::cell::RefCell<String> = Default::default();
        static INITIALIZED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn ffi(name: &str, args: &[u8]) -> Option<Vec<u8>> {
        hostcalls::call_foreign_function(name, Some(args)).ok().flatten()
    }

    /// What the PDK's generated entrypoint does: read the config and
    /// metadata, create a service for every `format: service` property.
    #[no_mangle]
    pub extern "C" fn flex_on_policy_initialize() -> bool {
        if root_id() != "flex" {
            return true;
        }
        let Some(config) = ffi("flex_get_policy_configuration", b"") else {
            return false;
        };
        let Some(meta) = ffi("flex_get_policy_metadata", b"") else {
            return false;
        };
        let name = json_field(&meta, "name").unwrap_or_default();
        let namespace = json_field(&meta, "namespace").unwrap_or_default();
        let Some(source) = json_field(&config, "source") else {
            return false;
        };
        let service = format!("{name}-source");
        let args = format!("[\"{service}\",\"{namespace}\",\"{source}\"]");
        if ffi("flex_create_service", args.as_bytes()).is_none() {
            // OK answers with empty data: None is fine, a trap is not
        }
        SERVICE.with(|s| *s.borrow_mut() = format!("{service}.{namespace}.svc"));
        INITIALIZED.with(|i| i.set(true));
        true
    }

    pub fn configure(config: &[u8]) -> bool {
        // initialisation ran before configuration, with the same config
        INITIALIZED.with(|i| i.get()) && json_field(config, "source").is_some()
    }

    pub fn request(h: &mut Http) -> Action {
        let upstream = SERVICE.with(|s| s.borrow().clone());
        let _ = hostcalls::set_property(vec!["authentication"], Some(b"{\"principal\":\"pending\"}"));
        match h.dispatch_http_call(
            &upstream,
            vec![(":method", "GET"), (":path", "/lookup"), (":authority", "source")],
            None,
            vec![],
            Duration::from_secs(2),
        ) {
            Ok(_) => Action::Pause,
            Err(e) => {
                h.send_http_response(502, vec![], Some(format!("no service {upstream}: {e:?}").as_bytes()));
                Action::Pause
            }
        }
    }

    pub fn call_response(h: &mut Http, body_size: usize) {
        let body = h.get_http_call_response_body(0, body_size).unwrap_or_default();
        let principal = String::from_utf8_lossy(&body).trim().to_string();
        let _ = hostcalls::set_property(
            vec!["authentication"],
            Some(format!("{{\"principal\":\"{principal}\"}}").as_bytes()),
        );
        let back = hostcalls::get_property(vec!["authentication"]).ok().flatten().unwrap_or_default();
        let header = json_field(&h.config, "header").unwrap_or_else(|| "x-principal".into());
        h.set_http_request_header(&header, Some(&String::from_utf8_lossy(&back)));
        let plugin = hostcalls::get_property(vec!["plugin_name"]).ok().flatten().unwrap_or_default();
        h.set_http_request_header("x-plugin-name", Some(&String::from_utf8_lossy(&plugin)));
        h.resume_http_request();
    }
}
