//! `proxy-wasm`: a custom policy compiled to WebAssembly against the
//! proxy-wasm ABI (filters built with the Rust, Go or C++ SDKs, and Flex
//! Gateway PDK policies through `kind: Extension`), run by the host in
//! `src/wasm/`.
//!
//! ```yaml
//! - proxy-wasm:
//!     module: filters/add-header.wasm   # relative to this file, or base64://...
//!     rootId: main                      # default ""
//!     config: {header: x-team, value: payments}   # plugin configuration (JSON)
//!     vmConfig: ""                      # VM configuration (string or JSON)
//!     services: {authz: "http://127.0.0.1:9000"}  # proxy_http_call upstreams
//!     failOpen: false                   # a failing filter: 500 (false) or pass
//!     instances: 2                      # default: one per CPU (worker)
//!     limits: {memory: 64MiB, callbackTimeout: 100ms, pauseTimeout: 30s,
//!              maxBodySize: 4MiB, maxCalls: 16}
//! ```
//!
//! Per request: `proxy_on_request_headers` (the filter may change the
//! request, answer it, or pause it while it calls a service), request body
//! chunks, `proxy_on_response_headers`, response body chunks (a filter
//! that pauses gets the whole body, buffered up to `maxBodySize`), then
//! done, log, delete. A filter that traps or overruns its deadline fails
//! the request with 500 (or lets it through with `failOpen`); its instance
//! is rebuilt and the gateway keeps serving.

pub use super::wasm_fields::FIELDS;
use super::wasm_fields::LIMIT_FIELDS;
use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::yaml::{Node, Value as Yaml};
use crate::exchange::Exchange;
use crate::wasm::engine::{self, Compiled};
use crate::wasm::state::{HeaderEdit, Name, Val};
use crate::wasm::{
    self, FlexIdentity, Headers, Limits, Plugin, PluginInfo, RequestInfo, StreamRef, Verdict,
};
use async_trait::async_trait;
use base64::Engine as _;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A module as configured: compiled once, compared by its hash.
#[derive(Clone)]
pub struct Module(pub Arc<Compiled>);

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Module(sha256:{})", self.0.hash)
    }
}

impl PartialEq for Module {
    fn eq(&self, other: &Module) -> bool {
        self.0.hash == other.0.hash
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `plugin_name` (default: the module's file name; Flex:
    /// `<policy>.<namespace>.<api>`).
    pub name: String,
    pub module: Module,
    pub root_id: String,
    pub vm_id: Option<String>,
    pub vm_config: Vec<u8>,
    pub config: Vec<u8>,
    pub fail_open: bool,
    pub services: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub instances: usize,
    pub limits: Limits,
    pub flex: Option<FlexIdentity>,
}

impl Config {
    /// Defaults for everything but the module and the name.
    pub fn new(module: Module, name: String) -> Config {
        Config {
            name,
            module,
            root_id: String::new(),
            vm_id: None,
            vm_config: Vec::new(),
            config: Vec::new(),
            fail_open: false,
            services: Vec::new(),
            env: Vec::new(),
            instances: default_instances(),
            limits: Limits::default(),
            flex: None,
        }
    }

    /// A Flex binding's API: `plugin_name` = `<policy>.<namespace>.<api>`.
    pub fn for_api(&mut self, api: &str) {
        if let Some(f) = &mut self.flex {
            f.api = api.to_string();
            self.name = format!("{}.{}.{}", f.policy, f.namespace, api);
        }
    }
}

/// The module's bytes from `module:` (a path relative to the config file,
/// or `base64://`).
pub fn read_module(d: &mut Decoder, node: &Node, path: &str) -> Option<(Vec<u8>, String)> {
    let text = d.string(node, path)?;
    if let Some(b64) = text.strip_prefix("base64://") {
        let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        return match base64::engine::general_purpose::STANDARD.decode(clean) {
            Ok(bytes) => Some((bytes, "base64".to_string())),
            Err(e) => {
                d.error(
                    node.pos,
                    path,
                    format!("base64:// module is not valid base64: {e}"),
                );
                None
            }
        };
    }
    let file = std::path::Path::new(&text);
    let full = match std::path::Path::new(&d.file).parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    };
    match std::fs::read(&full) {
        Ok(bytes) => {
            d.files.push(full.clone());
            let name = full
                .file_stem()
                .map_or_else(|| text.clone(), |s| s.to_string_lossy().into_owned());
            Some((bytes, name))
        }
        Err(e) => {
            d.error(
                node.pos,
                path,
                format!("cannot read the module {}: {e}", full.display()),
            );
            None
        }
    }
}

/// Compile `bytes` (a module that does not compile or links what the
/// host lacks is a config error with the reason).
pub fn compile(d: &mut Decoder, node: &Node, path: &str, bytes: &[u8]) -> Option<Module> {
    match engine::compile(bytes) {
        Ok(compiled) => Some(Module(compiled)),
        Err(e) => {
            d.error(node.pos, path, e);
            None
        }
    }
}

/// Start the module once with its configuration: a filter that traps on
/// start or refuses its configuration is a config error.
pub fn check(d: &mut Decoder, node: &Node, path: &str, c: &Config) -> bool {
    match wasm::instance::Instance::start(&c.module.0, Arc::new(info(c))) {
        Ok(_) => true,
        Err(e) => {
            d.error(node.pos, path, format!("the filter does not start: {e}"));
            false
        }
    }
}

/// A configuration value as the filter gets it: a string as is, anything
/// else as JSON.
fn bytes_of(node: &Node) -> Vec<u8> {
    match &node.value {
        Yaml::Scalar { text, .. } if !node.is_null() => text.clone().into_bytes(),
        _ if node.is_null() => Vec::new(),
        _ => node.to_json().to_string().into_bytes(),
    }
}

fn string_map(d: &mut Decoder, node: &Node, path: &str, urls: bool) -> Vec<(String, String)> {
    let Some(f) = d.map_any(node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in f.keys() {
        let field = join(path, k);
        if let Some(text) = d.string(v, &field) {
            if urls && !(text.starts_with("http://") || text.starts_with("https://")) {
                d.error(
                    v.pos,
                    &field,
                    format!("{text:?} is not an http:// or https:// URL"),
                );
                continue;
            }
            out.push((k.to_string(), text));
        }
    }
    out
}

fn decode_limits(d: &mut Decoder, node: &Node, path: &str) -> Limits {
    let mut l = Limits::default();
    let Some(f) = d.map(node, path, LIMIT_FIELDS) else {
        return l;
    };
    if let Some(n) = f.get("memory") {
        let field = join(path, "memory");
        if let Some(v) = d.size(n, &field) {
            if v < (1 << 20) || v > engine::MAX_MEMORY as u64 {
                d.error(
                    n.pos,
                    &field,
                    format!("between 1MiB and {}MiB", engine::MAX_MEMORY >> 20),
                );
            } else {
                l.memory = v as usize;
            }
        }
    }
    if let Some(n) = f.get("callbackTimeout") {
        if let Some(v) = d.duration(n, &join(path, "callbackTimeout"), false) {
            l.callback = v.max(engine::EPOCH);
        }
    }
    if let Some(n) = f.get("pauseTimeout") {
        if let Some(v) = d.duration(n, &join(path, "pauseTimeout"), false) {
            l.pause = v;
        }
    }
    if let Some(n) = f.get("maxBodySize") {
        if let Some(v) = d.size(n, &join(path, "maxBodySize")) {
            l.body = v as usize;
        }
    }
    if let Some(n) = f.get("maxCalls") {
        if let Some(v) = d.int(n, &join(path, "maxCalls"), 1, 1024) {
            l.calls = v as u32;
        }
    }
    l
}

/// The default instance count: one per CPU, as Pingora runs a worker per CPU.
fn default_instances() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let module_node = d.required(&f, "module", path)?;
    let module_path = join(path, "module");
    let (bytes, stem) = read_module(d, module_node, &module_path)?;
    let module = compile(d, module_node, &module_path, &bytes)?;
    let mut c = Config::new(module, stem);
    if let Some(n) = f.get("name") {
        c.name = d.string(n, &join(path, "name"))?;
    }
    if let Some(n) = f.get("rootId") {
        c.root_id = d.string(n, &join(path, "rootId"))?;
    }
    if let Some(n) = f.get("vmId") {
        c.vm_id = Some(d.string(n, &join(path, "vmId"))?);
    }
    if let Some(n) = f.get("vmConfig") {
        c.vm_config = bytes_of(n);
    }
    if let Some(n) = f.get("config") {
        c.config = bytes_of(n);
    }
    if let Some(n) = f.get("failOpen") {
        c.fail_open = d.bool(n, &join(path, "failOpen"))?;
    }
    if let Some(n) = f.get("services") {
        c.services = string_map(d, n, &join(path, "services"), true);
    }
    if let Some(n) = f.get("env") {
        c.env = string_map(d, n, &join(path, "env"), false);
    }
    if let Some(n) = f.get("instances") {
        c.instances = d.int(n, &join(path, "instances"), 1, 256)? as usize;
    }
    if let Some(n) = f.get("limits") {
        c.limits = decode_limits(d, n, &join(path, "limits"));
    }
    if d.errors.len() != before {
        return None;
    }
    check(d, module_node, &module_path, &c).then_some(c)
}

/// What every instance of the plugin shares.
pub fn info(c: &Config) -> PluginInfo {
    let vm_id = c.vm_id.clone().unwrap_or_else(|| c.module.0.hash.clone());
    PluginInfo {
        name: c.name.clone(),
        root_id: c.root_id.clone(),
        vm_id: vm_id.clone(),
        vm_config: c.vm_config.clone(),
        config: c.config.clone(),
        node_id: node_id(),
        services: RwLock::new(
            c.services
                .iter()
                .map(|(k, v)| (k.clone(), wasm::Service { url: v.clone() }))
                .collect::<HashMap<_, _>>(),
        ),
        shared: wasm::shared::Shared::for_vm(&vm_id),
        flex: c.flex.clone(),
        env: c.env.clone(),
        limits: c.limits,
    }
}

/// `node.id`: the host's name.
fn node_id() -> String {
    crate::ops::hostname().unwrap_or_else(|| "flex-gateway".into())
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    match Plugin::new(c.module.0.clone(), Arc::new(info(c)), c.instances) {
        Ok(plugin) => Arc::new(Wasm {
            plugin,
            fail_open: c.fail_open,
            name: c.name.clone(),
        }),
        Err(e) => {
            // checked at load; a start failure now (memory) fails requests
            log::error!("custom policy {}: {e}", c.name);
            Arc::new(Broken {
                fail_open: c.fail_open,
                name: c.name.clone(),
            })
        }
    }
}

pub fn describe(c: &Config) -> Value {
    json!({
        "name": c.name,
        "module": {"sha256": c.module.0.hash, "bytes": c.module.0.size, "abi": c.module.0.abi.as_str()},
        "rootId": c.root_id,
        "config": {"bytes": c.config.len()},
        "failOpen": c.fail_open,
        "services": c.services.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "instances": c.instances,
        "limits": {
            "memory": c.limits.memory,
            "callbackTimeoutMs": c.limits.callback.as_millis() as u64,
            "pauseTimeoutMs": c.limits.pause.as_millis() as u64,
            "maxBodySize": c.limits.body,
            "maxCalls": c.limits.calls,
        },
    })
}

pub struct Wasm {
    plugin: Plugin,
    fail_open: bool,
    name: String,
}

/// A plugin whose instance could not start when the config was applied.
struct Broken {
    fail_open: bool,
    name: String,
}

#[async_trait]
impl Policy for Broken {
    async fn on_request(&self, _req: &mut RequestHeader, _x: &mut Exchange) -> Decision {
        failed(&self.name, self.fail_open)
    }
}

fn failed(name: &str, fail_open: bool) -> Decision {
    if fail_open {
        Decision::Continue
    } else {
        Decision::Respond(LocalResponse::new(
            500,
            format!("the custom policy {name} failed"),
        ))
    }
}

/// The request contexts of a request, one per wasm policy of its chain
/// (shared so the exchange's extensions can hold it; only this request
/// touches it).
#[derive(Default, Clone)]
struct Streams(Arc<std::sync::Mutex<Vec<(usize, StreamRef)>>>);

/// A request context not yet handed to the exchange: finished if the
/// request goes away while the filter has it paused.
struct Pending<'p> {
    plugin: &'p Plugin,
    stream: Option<StreamRef>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            self.plugin.finish(s, 0);
        }
    }
}

impl Wasm {
    fn key(&self) -> usize {
        self as *const Wasm as usize
    }

    /// Run `f` on this policy's context of the request, if it has one.
    fn with_stream<T>(&self, x: &Exchange, f: impl FnOnce(&mut StreamRef) -> T) -> Option<T> {
        let key = self.key();
        let streams = x.ext.get::<Streams>()?;
        let mut list = streams
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.iter_mut().find(|(k, _)| *k == key).map(|(_, s)| f(s))
    }

    fn fault(&self, e: &wasm::Fault) -> Decision {
        log::warn!(target: "flexgw::wasm", "{}: {e}", self.name);
        failed(&self.name, self.fail_open)
    }
}

/// The request head as a filter sees it (names and values shared with
/// the request, not copied).
fn request_pairs(req: &RequestHeader, x: &Exchange) -> Headers {
    let mut pairs = Vec::with_capacity(req.headers.len() + 4);
    let method = http::HeaderValue::from_str(req.method.as_str())
        .unwrap_or(http::HeaderValue::from_static("GET"));
    pairs.push((Name::Pseudo(":method"), Val::Header(method)));
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    pairs.push((Name::Pseudo(":path"), Val::Bytes(path.as_bytes().to_vec())));
    let authority = super::common::request_authority(req);
    pairs.push((
        Name::Pseudo(":authority"),
        Val::Bytes(authority.as_bytes().to_vec()),
    ));
    let scheme = http::HeaderValue::from_static(if x.tls { "https" } else { "http" });
    pairs.push((Name::Pseudo(":scheme"), Val::Header(scheme)));
    for (k, v) in &req.headers {
        pairs.push((Name::Header(k.clone()), Val::Header(v.clone())));
    }
    Headers::new(pairs)
}

fn response_pairs(resp: &ResponseHeader) -> Headers {
    let mut pairs = Vec::with_capacity(resp.headers.len() + 1);
    let status = http::HeaderValue::from_str(resp.status.as_str())
        .unwrap_or(http::HeaderValue::from_static("200"));
    pairs.push((Name::Pseudo(":status"), Val::Header(status)));
    for (k, v) in &resp.headers {
        pairs.push((Name::Header(k.clone()), Val::Header(v.clone())));
    }
    Headers::new(pairs)
}

fn internal(why: String) -> Box<pingora::Error> {
    pingora::Error::explain(pingora::ErrorType::HTTPStatus(500), why)
}

/// A header name and value a filter set, as HTTP; `None` (logged) when
/// either is not valid.
fn header(name: &str, k: &str, v: &[u8]) -> Option<(http::HeaderName, http::HeaderValue)> {
    match (
        http::HeaderName::from_bytes(k.as_bytes()),
        http::HeaderValue::from_bytes(v),
    ) {
        (Ok(n), Ok(v)) => Some((n, v)),
        _ => {
            log::warn!(target: "flexgw::wasm", "{name}: header {k:?} (or its value) is not valid HTTP: not set");
            None
        }
    }
}

/// A filter's change to one header, for a request or response head.
enum Edit {
    Remove(http::HeaderName),
    /// Replace every value (`append`: add one).
    Set(http::HeaderName, http::HeaderValue, bool),
}

/// The regular headers' edits of `h` (pseudo-headers are the caller's):
/// replayed in order; a whole-map replacement (`proxy_set_header_map_pairs`)
/// becomes: remove every header, then add its pairs.
fn edits(name: &str, old: &http::HeaderMap, h: &Headers) -> Vec<Edit> {
    let mut out = Vec::with_capacity(h.edits.len());
    if h.edits.iter().any(|e| matches!(e, HeaderEdit::All)) {
        out.extend(old.keys().map(|k| Edit::Remove(k.clone())));
        for (k, v) in h.pairs.iter().filter(|(k, _)| !k.as_str().starts_with(':')) {
            if let Some((n, v)) = header(name, k.as_str(), v.as_bytes()) {
                out.push(Edit::Set(n, v, true));
            }
        }
        return out;
    }
    for e in &h.edits {
        match e {
            HeaderEdit::Add(k, v) | HeaderEdit::Replace(k, v) if !k.starts_with(':') => {
                if let Some((n, v)) = header(name, k, v) {
                    out.push(Edit::Set(n, v, matches!(e, HeaderEdit::Add(..))));
                }
            }
            HeaderEdit::Remove(k) if !k.starts_with(':') => {
                if let Ok(n) = http::HeaderName::from_bytes(k.as_bytes()) {
                    out.push(Edit::Remove(n));
                }
            }
            _ => {}
        }
    }
    out
}

/// The final value of pseudo-header `name`, if the filter set it.
fn pseudo<'h>(h: &'h Headers, name: &str) -> Option<&'h [u8]> {
    let all = h.edits.iter().any(|e| matches!(e, HeaderEdit::All));
    let set = h.edits.iter().any(|e| match e {
        HeaderEdit::Add(k, _) | HeaderEdit::Replace(k, _) => k == name,
        _ => false,
    });
    if all {
        return h.get(name);
    }
    set.then(|| {
        h.edits.iter().rev().find_map(|e| match e {
            HeaderEdit::Add(k, v) | HeaderEdit::Replace(k, v) if k == name => Some(v.as_slice()),
            _ => None,
        })
    })
    .flatten()
}

/// The filter removed `Content-Length` (it will change the body's length,
/// as the SDK examples do) and left no other framing: the body goes on
/// chunked (HTTP/2 drops the header), never delimited by closing.
fn unframed(had_length: bool, now: &http::HeaderMap) -> bool {
    had_length
        && !now.contains_key(http::header::CONTENT_LENGTH)
        && !now.contains_key(http::header::TRANSFER_ENCODING)
}

fn is_body_framing(name: &http::HeaderName) -> bool {
    *name == http::header::CONTENT_LENGTH || *name == http::header::TRANSFER_ENCODING
}

/// A filter's changes to the request body's framing, for the upstream
/// request (the downstream request keeps the client's framing).
#[derive(Clone)]
struct UpstreamFraming(Arc<Vec<Edit>>);

macro_rules! replay {
    ($head:expr, $edit:expr) => {
        match $edit {
            Edit::Remove(n) => {
                $head.remove_header(n);
            }
            Edit::Set(n, v, true) => {
                $head.append_header(n.clone(), v.clone())?;
            }
            Edit::Set(n, v, false) => $head.insert_header(n.clone(), v.clone())?,
        }
    };
}

impl Wasm {
    /// A request (or response) body chunk through the filter: passed on,
    /// replaced, or held while the filter pauses for the rest.
    fn body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
        request: bool,
    ) -> pingora::Result<()> {
        let chunk = body.take().unwrap_or_default();
        let result = self.with_stream(x, |s| self.plugin.body(s, &chunk, end_of_stream, request));
        let Some(result) = result else {
            *body = Some(chunk);
            return Ok(());
        };
        match result {
            Ok(Some(out)) if !out.is_empty() => *body = Some(out.into()),
            Ok(_) => {}
            Err(e) if self.fail_open => {
                log::warn!(target: "flexgw::wasm", "{}: {e}", self.name);
                *body = Some(chunk);
            }
            Err(e) => return Err(internal(format!("{}: {e}", self.name))),
        }
        Ok(())
    }

    /// Put the filter's request head on the request.
    fn apply_request(
        &self,
        req: &mut RequestHeader,
        x: &mut Exchange,
        h: &Headers,
    ) -> pingora::Result<()> {
        if let Some(m) = pseudo(h, ":method") {
            if m != req.method.as_str().as_bytes() {
                let method = http::Method::from_bytes(m).map_err(|_| {
                    internal(format!("{}: :method {m:?} is not a method", self.name))
                })?;
                req.set_method(method);
            }
        }
        if let Some(p) = pseudo(h, ":path") {
            let current = req.uri.path_and_query().map_or("/", |p| p.as_str());
            if p != current.as_bytes() {
                let uri = std::str::from_utf8(p)
                    .ok()
                    .filter(|p| p.starts_with('/'))
                    .and_then(|p| p.parse::<http::Uri>().ok())
                    .ok_or_else(|| internal(format!("{}: :path is not a valid path", self.name)))?;
                x.upstream_path = Some(uri.path().to_string());
                req.set_uri(uri);
            }
        }
        if let Some(a) = pseudo(h, ":authority") {
            if a != super::common::request_authority(req).as_bytes() {
                let v = http::HeaderValue::from_bytes(a)
                    .map_err(|_| internal(format!("{}: :authority is not valid", self.name)))?;
                req.insert_header(http::header::HOST, v)?;
            }
        }
        // the client's body is read by the request's own framing: changes
        // to it are for the upstream request only
        let mut framing = Vec::new();
        for e in edits(&self.name, &req.headers, h) {
            let (Edit::Remove(n) | Edit::Set(n, ..)) = &e;
            if is_body_framing(n) {
                framing.push(e);
                continue;
            }
            replay!(req, &e);
        }
        if !framing.is_empty() {
            x.ext.insert(UpstreamFraming(Arc::new(framing)));
        }
        Ok(())
    }

    fn apply_response(&self, resp: &mut ResponseHeader, h: &Headers) -> pingora::Result<()> {
        if let Some(s) = pseudo(h, ":status") {
            let status = std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|s| (200..=599).contains(s));
            match status {
                Some(st) if st != resp.status.as_u16() => resp.set_status(st)?,
                Some(_) => {}
                None => return Err(internal(format!("{}: :status is not a status", self.name))),
            }
        }
        let had_length = resp.headers.contains_key(http::header::CONTENT_LENGTH);
        for e in edits(&self.name, &resp.headers, h) {
            replay!(resp, &e);
        }
        if unframed(had_length, &resp.headers) {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(())
    }
}

/// The filter's local answer as the gateway's response.
fn local_reply(reply: wasm::LocalReply) -> LocalResponse {
    let mut r = LocalResponse::new(reply.status, reply.details);
    r.body = Some(bytes::Bytes::from(reply.body));
    for (k, v) in reply.headers {
        if k.starts_with(':') {
            continue;
        }
        r.headers
            .push((k.into(), String::from_utf8_lossy(&v).into_owned()));
    }
    r
}

/// What the request tells properties (`request.*`, `source.*`, ...).
fn request_info(req: &RequestHeader, x: &Exchange) -> RequestInfo {
    RequestInfo {
        id: x.request_id.clone(),
        protocol: match req.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        scheme: if x.tls { "https" } else { "http" },
        source: x.peer,
        destination: x.local,
        connection_id: 0,
        tls_version: None,
        mtls: x.client_cert_subject.is_some(),
        sni: None,
        route: x.route_id.clone(),
        time_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

#[async_trait]
impl Policy for Wasm {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let headers = request_pairs(req, x);
        let info = Arc::new(request_info(req, x));
        let (stream, verdict) =
            match self
                .plugin
                .request_headers(headers, info, super::common::headers_end_stream(req))
            {
                Ok(r) => r,
                Err(e) => return self.fault(&e),
            };
        let mut pending = Pending {
            plugin: &self.plugin,
            stream: Some(stream),
        };
        let verdict = match (verdict, pending.stream.as_mut()) {
            (Some(v), _) => Ok(v),
            (None, Some(s)) => self.plugin.settle(s).await,
            (None, None) => Err(wasm::Fault("no request context".into())),
        };
        // the exchange holds the context now: the logging hook ends it
        if let Some(s) = pending.stream.take() {
            x.ext
                .get_or_insert_default::<Streams>()
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((self.key(), s));
        }
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => return self.fault(&e),
        };
        match verdict {
            Verdict::Continue(None) => Decision::Continue,
            Verdict::Continue(Some(h)) => match self.apply_request(req, x, &h) {
                Ok(()) => Decision::Continue,
                Err(e) => self.fault(&wasm::Fault(e.to_string())),
            },
            Verdict::Respond(reply) => Decision::Respond(local_reply(reply)),
            Verdict::Close(why) => self.fault(&wasm::Fault(why)),
        }
    }

    fn body_hooks(&self) -> (bool, bool) {
        self.plugin.body_callbacks()
    }

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        let Some(UpstreamFraming(framing)) = x.ext.remove::<UpstreamFraming>() else {
            return Ok(());
        };
        let had_length = up.headers.contains_key(http::header::CONTENT_LENGTH);
        for e in framing.iter() {
            replay!(up, e);
        }
        if unframed(had_length, &up.headers) {
            up.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(())
    }

    fn on_request_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
    ) -> pingora::Result<Decision> {
        self.body(body, end_of_stream, x, true)
            .map(|()| Decision::Continue)
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        let status = resp.status.as_u16();
        let headers = response_pairs(resp);
        let result = self.with_stream(x, |s| {
            self.plugin.response_headers(s, headers, status, false)
        });
        let Some(result) = result else {
            return Ok(());
        };
        match result {
            Ok(Verdict::Continue(Some(h))) => self.apply_response(resp, &h),
            Ok(Verdict::Continue(None)) => Ok(()),
            Ok(Verdict::Respond(_)) => {
                log::warn!(target: "flexgw::wasm", "{}: a local response from the response headers callback is not supported: ignored", self.name);
                Ok(())
            }
            Ok(Verdict::Close(why)) => Err(internal(format!("{}: {why}", self.name))),
            Err(e) if self.fail_open => {
                log::warn!(target: "flexgw::wasm", "{}: {e}", self.name);
                Ok(())
            }
            Err(e) => Err(internal(format!("{}: {e}", self.name))),
        }
    }

    fn on_response_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
    ) -> pingora::Result<()> {
        self.body(body, end_of_stream, x, false)
    }

    fn on_logging(&self, x: &Exchange, status: u16) {
        let key = self.key();
        if let Some(streams) = x.ext.get::<Streams>() {
            let mut list = streams
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|(k, _)| *k == key);
            *list = others;
            drop(list);
            for (_, s) in mine {
                self.plugin.finish(s, status);
            }
        }
    }
}
