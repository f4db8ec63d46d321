//! What one instance's host functions act on: the plugin it runs (its
//! configuration, its upstream services, the data it shares with other
//! instances), its root context, and one [`Stream`] per request context
//! alive in it.
//!
//! Host functions see the state of the *effective* context (the one the
//! current callback is for, or the one `proxy_set_effective_context` chose).

use super::shared::Shared;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use wasmtime::{Memory, StoreLimits, TypedFunc};

/// A header list as a filter sees it: lower-case names (pseudo-headers
/// `:method :path :authority :scheme`, or `:status`, first), byte values,
/// in order; and the edits the filter made, in order, for the gateway to
/// replay on the real header (cheaper than comparing before and after).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Headers {
    pub pairs: Vec<(Name, Val)>,
    pub edits: Vec<HeaderEdit>,
}

/// A header name as a filter sees it: a pseudo-header, the request's own
/// (shared, not copied), or one a filter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Pseudo(&'static str),
    Header(http::HeaderName),
    Text(String),
}

impl Name {
    pub fn as_str(&self) -> &str {
        match self {
            Name::Pseudo(s) => s,
            Name::Header(h) => h.as_str(),
            Name::Text(t) => t,
        }
    }
}

/// A header value: the request's own (shared, not copied) or one a
/// filter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Header(http::HeaderValue),
    Bytes(Vec<u8>),
}

impl Val {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Val::Header(h) => h.as_bytes(),
            Val::Bytes(b) => b,
        }
    }
}

/// One change a filter made to a header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    Add(String, Vec<u8>),
    Replace(String, Vec<u8>),
    Remove(String),
    /// `proxy_set_header_map_pairs`: the whole map is `pairs` now.
    All,
}

impl Headers {
    pub fn new(pairs: Vec<(Name, Val)>) -> Headers {
        Headers {
            pairs,
            edits: Vec::new(),
        }
    }

    pub fn dirty(&self) -> bool {
        !self.edits.is_empty()
    }

    /// The first value of `name` (already lower-case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v.as_bytes())
    }

    pub fn add(&mut self, name: String, value: Vec<u8>) {
        self.edits
            .push(HeaderEdit::Add(name.clone(), value.clone()));
        self.pairs.push((Name::Text(name), Val::Bytes(value)));
    }

    pub fn replace(&mut self, name: String, value: Vec<u8>) {
        self.edits
            .push(HeaderEdit::Replace(name.clone(), value.clone()));
        match self.pairs.iter().position(|(k, _)| k.as_str() == name) {
            Some(i) => {
                self.pairs[i].1 = Val::Bytes(value);
                let mut j = i + 1;
                while j < self.pairs.len() {
                    if self.pairs[j].0.as_str() == name {
                        self.pairs.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.pairs.push((Name::Text(name), Val::Bytes(value))),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.edits.push(HeaderEdit::Remove(name.to_string()));
        self.pairs.retain(|(k, _)| k.as_str() != name);
    }

    pub fn set_all(&mut self, pairs: Vec<(String, Vec<u8>)>) {
        self.pairs = pairs
            .into_iter()
            .map(|(k, v)| (Name::Text(k), Val::Bytes(v)))
            .collect();
        self.edits.push(HeaderEdit::All);
    }

    /// The map serialized for a filter.
    pub fn serialize(&self) -> Vec<u8> {
        super::abi::serialize_pairs(
            self.pairs
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
        )
    }
}

/// What the gateway knows of a request, for `proxy_get_property`.
#[derive(Debug, Default, Clone)]
pub struct RequestInfo {
    pub id: String,
    pub protocol: &'static str,
    pub scheme: &'static str,
    pub source: Option<std::net::SocketAddr>,
    pub destination: Option<std::net::SocketAddr>,
    pub connection_id: u64,
    pub tls_version: Option<String>,
    pub mtls: bool,
    pub sni: Option<String>,
    pub route: Arc<str>,
    /// Unix time of the request's start, in nanoseconds.
    pub time_ns: u64,
}

/// A local answer a filter made with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Something that happened outside a callback, for a context to hear.
#[derive(Debug)]
pub enum Event {
    /// An `proxy_http_call` finished: `None` when it failed (timeout,
    /// connection refused).
    CallDone {
        token: u32,
        response: Option<CallResponse>,
    },
    /// A shared queue this instance registered has an item.
    QueueReady(u32),
}

#[derive(Debug, Default, Clone)]
pub struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// An `proxy_http_call` a callback asked for; sent after it returns.
#[derive(Debug)]
pub struct Outbound {
    pub token: u32,
    pub context: u32,
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// One request context.
pub struct Stream {
    pub request: Headers,
    pub response: Headers,
    /// The body bytes a body callback sees (buffered while it pauses).
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// `proxy_continue_stream(HTTP_REQUEST)` was called.
    pub resumed: bool,
    pub local: Option<LocalReply>,
    /// `proxy_close_stream`: end the request (a 500 unless answered).
    pub closed: bool,
    /// Properties a filter set (`proxy_set_property`), read back by it.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub info: Arc<RequestInfo>,
    pub response_code: Option<u16>,
    /// Where this stream's call results go (the request that owns it;
    /// made with its first call).
    pub events: Option<UnboundedSender<Event>>,
    /// `proxy_http_call`s not answered yet.
    pub calls: u32,
    /// Where the context stands at its end (`proxy_on_done` / `proxy_done`).
    pub ending: Ending,
}

/// A context's end: `proxy_on_done` returned false (`Deferred`: the
/// filter will call `proxy_done`), then `proxy_done` was called (`Done`:
/// log and delete it after the current callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    #[default]
    Live,
    Deferred,
    Done,
}

impl Stream {
    pub fn new(request: Headers, info: Arc<RequestInfo>) -> Stream {
        Stream {
            request,
            response: Headers::default(),
            request_body: Vec::new(),
            response_body: Vec::new(),
            resumed: false,
            local: None,
            closed: false,
            properties: HashMap::new(),
            info,
            response_code: None,
            events: None,
            calls: 0,
            ending: Ending::Live,
        }
    }
}

/// A service a filter may call with `proxy_http_call` (by its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `http://host:port` (a base path, if any, is prefixed to `:path`).
    pub url: String,
}

/// What every instance of one plugin shares: its identity, configuration,
/// services and limits.
pub struct PluginInfo {
    /// `plugin_name` (Flex: `<policy>.<namespace>.<api>`).
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub config: Vec<u8>,
    pub node_id: String,
    /// Upstream names `proxy_http_call` may use.
    pub services: RwLock<HashMap<String, Service>>,
    pub shared: Arc<Shared>,
    /// Flex PDK: the policy's name and namespace (`flex_get_policy_metadata`).
    pub flex: Option<FlexIdentity>,
    /// `flex_get_env` and WASI `environ_get`: only what the config gives.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlexIdentity {
    pub policy: String,
    pub namespace: String,
    pub api: String,
}

/// Bounds on what a filter may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance.
    pub memory: usize,
    /// Wall time of one callback before it is interrupted.
    pub callback: Duration,
    /// `proxy_http_call`s a context may have outstanding.
    pub calls: u32,
    /// A body a filter buffers (pausing), and a call response's body.
    pub body: usize,
    /// How long a paused request waits for the filter to go on.
    pub pause: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 64 << 20,
            callback: Duration::from_millis(100),
            calls: 16,
            body: 4 << 20,
            pause: Duration::from_secs(30),
        }
    }
}

/// The store data of one instance.
pub struct HostState {
    pub plugin: Arc<PluginInfo>,
    pub memory: Option<Memory>,
    pub malloc: Option<TypedFunc<i32, i32>>,
    pub limits: StoreLimits,
    /// The context host functions act on.
    pub effective: u32,
    pub root: u32,
    pub streams: HashMap<u32, Stream>,
    /// The root context's `proxy_set_tick_period_milliseconds`.
    pub tick: Option<Duration>,
    /// The response of the call being delivered to `proxy_on_http_call_response`.
    pub call_response: Option<CallResponse>,
    /// Calls asked for during the current callback.
    pub outbox: Vec<Outbound>,
    pub next_token: u32,
    /// Outstanding call token → the context that made it.
    pub calls: HashMap<u32, u32>,
    /// Where root-context events go (ticks and queue notices run there).
    pub root_events: UnboundedSender<Event>,
    /// Foreign-function arguments being handed over.
    pub ffi_args: Vec<u8>,
    /// Properties set while no request context was effective.
    pub root_properties: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// The root context's end (the plugin is being shut down).
    pub root_ending: Ending,
}

impl HostState {
    pub fn stream(&mut self) -> Option<&mut Stream> {
        self.streams.get_mut(&self.effective)
    }
}
