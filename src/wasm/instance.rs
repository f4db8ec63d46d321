//! One instance of a filter: its store (linear memory, host state), the
//! callbacks it exports, and the lifecycle the host drives: start (VM,
//! Flex initialisation, configure), request contexts, ticks, call
//! responses. Every callback runs under an epoch deadline; a trap marks
//! the instance broken (the pool replaces it).

use super::abi::ACTION_PAUSE;
use super::engine::{Compiled, EPOCH};
use super::state::{
    CallResponse, Ending, Event, Headers, HostState, Outbound, PluginInfo, RequestInfo, Stream,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use wasmtime::{Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults};

/// Why a callback failed: the filter trapped (or ran past its deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub String);

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type F3 = TypedFunc<(i32, i32, i32), i32>;
/// `proxy_on_http_call_response(ctx, token, headers, body size, trailers)`.
type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

struct Exports {
    context_create: TypedFunc<(i32, i32), ()>,
    vm_start: Option<TypedFunc<(i32, i32), i32>>,
    configure: Option<TypedFunc<(i32, i32), i32>>,
    flex_init: Option<TypedFunc<(), i32>>,
    request_headers: Option<F3>,
    request_body: Option<F3>,
    response_headers: Option<F3>,
    response_body: Option<F3>,
    done: Option<TypedFunc<i32, i32>>,
    log: Option<TypedFunc<i32, ()>>,
    delete: Option<TypedFunc<i32, ()>>,
    call_response: Option<CallResponseFn>,
    tick: Option<TypedFunc<i32, ()>>,
    queue_ready: Option<TypedFunc<(i32, i32), ()>>,
}

/// What a header or body callback decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

pub struct Instance {
    store: Store<HostState>,
    /// Shared so a callback can be called while the store is borrowed
    /// (cloning a `TypedFunc` clones its type: measurable per request).
    exports: Arc<Exports>,
    next_context: u32,
    deadline_ticks: u64,
    /// A callback trapped: the instance must not run again.
    pub broken: bool,
}

/// The root context's id (one root context per instance).
const ROOT: u32 = 1;

impl Instance {
    /// Instantiate and start: `_initialize`, the root context,
    /// `proxy_on_vm_start`, `flex_on_policy_initialize` (a Flex PDK
    /// policy), `proxy_on_configure`. The receiver gets root-context events.
    pub fn start(
        compiled: &Compiled,
        plugin: Arc<PluginInfo>,
    ) -> Result<(Instance, UnboundedReceiver<Event>), Fault> {
        let (root_tx, root_rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = plugin.limits;
        let engine = compiled.pre.module().engine();
        let mut store = Store::new(
            engine,
            HostState {
                plugin: plugin.clone(),
                memory: None,
                malloc: None,
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.memory)
                    .instances(1)
                    .build(),
                effective: ROOT,
                root: ROOT,
                streams: HashMap::new(),
                tick: None,
                call_response: None,
                outbox: Vec::new(),
                next_token: 0,
                calls: HashMap::new(),
                root_events: root_tx,
                ffi_args: Vec::new(),
                root_properties: HashMap::new(),
                root_ending: Ending::Live,
            },
        );
        store.limiter(|h| &mut h.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = (limits.callback.as_millis() / EPOCH.as_millis()).max(1) as u64 + 1;
        // start-up may compile lazily-initialised state: a longer deadline
        store.set_epoch_deadline(deadline_ticks * 10);
        let instance = compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| Fault(format!("instantiation failed: {e:#}")))?;
        let memory = instance.get_memory(&mut store, "memory");
        let malloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .map_err(|e| Fault(format!("the allocator export has the wrong type: {e}")))?;
        store.data_mut().memory = memory;
        store.data_mut().malloc = Some(malloc);
        macro_rules! opt {
            ($name:literal) => {
                match instance.get_func(&mut store, $name) {
                    None => None,
                    Some(f) => Some(f.typed(&store).map_err(|e| {
                        Fault(format!("export {} has the wrong signature: {e}", $name))
                    })?),
                }
            };
        }
        let exports = Exports {
            context_create: opt!("proxy_on_context_create")
                .ok_or_else(|| Fault("no proxy_on_context_create export".into()))?,
            vm_start: opt!("proxy_on_vm_start"),
            configure: opt!("proxy_on_configure"),
            flex_init: opt!("flex_on_policy_initialize"),
            request_headers: opt!("proxy_on_request_headers"),
            request_body: opt!("proxy_on_request_body"),
            response_headers: opt!("proxy_on_response_headers"),
            response_body: opt!("proxy_on_response_body"),
            done: opt!("proxy_on_done"),
            log: opt!("proxy_on_log"),
            delete: opt!("proxy_on_delete"),
            call_response: opt!("proxy_on_http_call_response"),
            tick: opt!("proxy_on_tick"),
            queue_ready: opt!("proxy_on_queue_ready"),
        };
        let init: Option<TypedFunc<(), ()>> = opt!("_initialize");
        let start: Option<TypedFunc<(), ()>> = opt!("_start");
        let main: Option<TypedFunc<(i32, i32), i32>> = opt!("main");
        let mut me = Instance {
            store,
            exports: Arc::new(exports),
            next_context: ROOT + 1,
            deadline_ticks: deadline_ticks * 10,
            broken: false,
        };
        match (init, start) {
            (Some(f), _) => {
                me.run(&f, ROOT, ())?;
                if let Some(m) = main {
                    me.run(&m, ROOT, (0, 0))?;
                }
            }
            (None, Some(f)) => me.run(&f, ROOT, ())?,
            (None, None) => {}
        }
        let e = me.exports.clone();
        me.run(&e.context_create, ROOT, (ROOT as i32, 0))?;
        if let Some(f) = &e.vm_start {
            let len = plugin.vm_config.len() as i32;
            if me.run(f, ROOT, (ROOT as i32, len))? == 0 {
                return Err(Fault("proxy_on_vm_start returned false".into()));
            }
        }
        if let Some(f) = &e.flex_init {
            if me.run(f, ROOT, ())? == 0 {
                return Err(Fault("flex_on_policy_initialize returned false".into()));
            }
        }
        if let Some(f) = &e.configure {
            let len = plugin.config.len() as i32;
            if me.run(f, ROOT, (ROOT as i32, len))? == 0 {
                return Err(Fault(
                    "the filter refused its configuration (proxy_on_configure returned false)"
                        .into(),
                ));
            }
        }
        me.deadline_ticks = deadline_ticks;
        Ok((me, root_rx))
    }

    /// Run one callback for context `ctx` under the deadline.
    fn run<P: WasmParams, Res: WasmResults>(
        &mut self,
        f: &TypedFunc<P, Res>,
        ctx: u32,
        args: P,
    ) -> Result<Res, Fault> {
        if self.broken {
            return Err(Fault("the instance is broken".into()));
        }
        self.store.data_mut().effective = ctx;
        self.store.set_epoch_deadline(self.deadline_ticks);
        f.call(&mut self.store, args).map_err(|e| {
            self.broken = true;
            let interrupted = e
                .downcast_ref::<wasmtime::Trap>()
                .is_some_and(|t| *t == wasmtime::Trap::Interrupt);
            Fault(if interrupted {
                format!(
                    "a callback ran past its deadline ({} ms) and was stopped",
                    self.store.data().plugin.limits.callback.as_millis()
                )
            } else {
                format!("the filter trapped: {e:#}")
            })
        })
    }

    pub fn plugin(&self) -> &Arc<PluginInfo> {
        &self.store.data().plugin
    }

    /// Where the root context's events go.
    pub fn root_events(&self) -> UnboundedSender<Event> {
        self.store.data().root_events.clone()
    }

    /// The tick period the root context asked for.
    pub fn tick_period(&self) -> Option<std::time::Duration> {
        self.store.data().tick
    }

    /// A new request context; its id.
    pub fn create_stream(
        &mut self,
        request: Headers,
        info: Arc<RequestInfo>,
    ) -> Result<u32, Fault> {
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(ROOT + 1);
        self.store
            .data_mut()
            .streams
            .insert(id, Stream::new(request, info));
        self.run(
            &self.exports.clone().context_create,
            id,
            (id as i32, ROOT as i32),
        )?;
        Ok(id)
    }

    pub fn stream(&mut self, ctx: u32) -> Option<&mut Stream> {
        self.store.data_mut().streams.get_mut(&ctx)
    }

    fn action(&mut self, f: Option<&F3>, ctx: u32, n: usize, eos: bool) -> Result<Action, Fault> {
        let Some(f) = f else {
            return Ok(Action::Continue);
        };
        let a = self.run(f, ctx, (ctx as i32, n as i32, i32::from(eos)))?;
        Ok(if a == ACTION_PAUSE {
            Action::Pause
        } else {
            Action::Continue
        })
    }

    pub fn request_headers(&mut self, ctx: u32, eos: bool) -> Result<Action, Fault> {
        let n = self.stream(ctx).map_or(0, |s| s.request.pairs.len());
        let e = self.exports.clone();
        self.action(e.request_headers.as_ref(), ctx, n, eos)
    }

    /// The request body so far (`stream.request_body`) is `size` bytes.
    pub fn request_body(&mut self, ctx: u32, eos: bool) -> Result<Action, Fault> {
        let n = self.stream(ctx).map_or(0, |s| s.request_body.len());
        let e = self.exports.clone();
        self.action(e.request_body.as_ref(), ctx, n, eos)
    }

    pub fn response_headers(&mut self, ctx: u32, eos: bool) -> Result<Action, Fault> {
        let n = self.stream(ctx).map_or(0, |s| s.response.pairs.len());
        let e = self.exports.clone();
        self.action(e.response_headers.as_ref(), ctx, n, eos)
    }

    pub fn response_body(&mut self, ctx: u32, eos: bool) -> Result<Action, Fault> {
        let n = self.stream(ctx).map_or(0, |s| s.response_body.len());
        let e = self.exports.clone();
        self.action(e.response_body.as_ref(), ctx, n, eos)
    }

    /// Hand an event to the context that made the call (or the root).
    pub fn deliver(&mut self, event: Event) -> Result<(), Fault> {
        match event {
            Event::CallDone { token, response } => {
                let Some(ctx) = self.store.data_mut().calls.remove(&token) else {
                    return Ok(());
                };
                if ctx != ROOT {
                    match self.stream(ctx) {
                        Some(s) => s.calls = s.calls.saturating_sub(1),
                        // the request ended: nobody to tell
                        None => return Ok(()),
                    }
                }
                let e = self.exports.clone();
                let Some(f) = &e.call_response else {
                    return Ok(());
                };
                let (n_headers, body) = match &response {
                    Some(r) => (r.headers.pairs.len().max(1), r.body.len()),
                    None => (0, 0),
                };
                self.store.data_mut().call_response =
                    Some(response.unwrap_or_else(CallResponse::default));
                let r = self.run(
                    f,
                    ctx,
                    (ctx as i32, token as i32, n_headers as i32, body as i32, 0),
                );
                self.store.data_mut().call_response = None;
                r
            }
            Event::QueueReady(id) => match &self.exports.clone().queue_ready {
                Some(f) => self.run(f, ROOT, (ROOT as i32, id as i32)),
                None => Ok(()),
            },
        }
    }

    pub fn tick(&mut self) -> Result<(), Fault> {
        match &self.exports.clone().tick {
            Some(f) => self.run(f, ROOT, ROOT as i32),
            None => Ok(()),
        }
    }

    /// The calls asked for since the last time.
    pub fn take_outbox(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.store.data_mut().outbox)
    }

    /// End a request context: `proxy_on_done`, then (unless it returned
    /// false: the filter calls `proxy_done` later, see [`Instance::reap`])
    /// `proxy_on_log` and `proxy_on_delete`. `Ok(true)`: the context is
    /// gone; `Ok(false)`: it is deferred. A fault drops it.
    pub fn finish(&mut self, ctx: u32) -> Result<bool, Fault> {
        if !self.store.data().streams.contains_key(&ctx) {
            return Ok(true);
        }
        let e = self.exports.clone();
        if let Some(f) = &e.done {
            match self.run(f, ctx, ctx as i32) {
                Ok(0) => {
                    if let Some(s) = self.stream(ctx) {
                        s.ending = Ending::Deferred;
                        // nothing is paused on it any more
                        s.local = None;
                    }
                    self.store.data_mut().effective = ROOT;
                    return Ok(false);
                }
                Ok(_) => {}
                Err(e) => {
                    self.drop_stream(ctx);
                    return Err(e);
                }
            }
        }
        self.close(ctx).map(|()| true)
    }

    /// `proxy_on_log`, `proxy_on_delete`, and the context's state dropped
    /// whatever they do.
    fn close(&mut self, ctx: u32) -> Result<(), Fault> {
        let e = self.exports.clone();
        let r = (|| {
            if let Some(f) = &e.log {
                self.run(f, ctx, ctx as i32)?;
            }
            if let Some(f) = &e.delete {
                self.run(f, ctx, ctx as i32)?;
            }
            Ok(())
        })();
        self.drop_stream(ctx);
        r
    }

    fn drop_stream(&mut self, ctx: u32) {
        let h = self.store.data_mut();
        h.streams.remove(&ctx);
        h.calls.retain(|_, c| *c != ctx);
        h.effective = ROOT;
    }

    /// Close the deferred contexts that called `proxy_done` (after the
    /// callback that called it, never from inside it).
    pub fn reap(&mut self) -> Result<(), Fault> {
        let done: Vec<u32> = self
            .store
            .data()
            .streams
            .iter()
            .filter(|(_, s)| s.ending == Ending::Done)
            .map(|(id, _)| *id)
            .collect();
        for ctx in done {
            self.close(ctx)?;
        }
        Ok(())
    }

    /// Whether a context is still alive (not closed).
    pub fn alive(&self, ctx: u32) -> bool {
        self.store.data().streams.contains_key(&ctx)
    }

    /// A deferred context whose filter never called `proxy_done` in time:
    /// closed anyway.
    pub fn expire(&mut self, ctx: u32) -> Result<(), Fault> {
        if self.alive(ctx) {
            log::warn!(target: "flexgw::wasm", "{}: a request context waited for proxy_done past its limit; closed", self.plugin().name);
            self.close(ctx)?;
        }
        Ok(())
    }

    /// The plugin is going away: the root context's `proxy_on_done`; when
    /// it returns true (or is not exported), `proxy_on_log` and
    /// `proxy_on_delete` at once (`Ok(true)`); when false, the filter is
    /// to call `proxy_done` first (`Ok(false)`; see [`Instance::root_over`]).
    pub fn shut_down(&mut self) -> Result<bool, Fault> {
        let e = self.exports.clone();
        if let Some(f) = &e.done {
            if self.run(f, ROOT, ROOT as i32)? == 0 {
                self.store.data_mut().root_ending = Ending::Deferred;
                return Ok(false);
            }
        }
        self.close_root().map(|()| true)
    }

    /// After a deferred shut-down: whether the root called `proxy_done`
    /// (then its log and delete have run).
    pub fn root_over(&mut self) -> Result<bool, Fault> {
        if self.store.data().root_ending != Ending::Done {
            return Ok(false);
        }
        self.close_root().map(|()| true)
    }

    fn close_root(&mut self) -> Result<(), Fault> {
        let e = self.exports.clone();
        if let Some(f) = &e.log {
            self.run(f, ROOT, ROOT as i32)?;
        }
        if let Some(f) = &e.delete {
            self.run(f, ROOT, ROOT as i32)?;
        }
        Ok(())
    }

    /// Request contexts alive in the instance.
    pub fn streams(&self) -> usize {
        self.store.data().streams.len()
    }
}
