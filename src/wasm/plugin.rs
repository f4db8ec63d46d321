//! A plugin: one configured filter (module, root id, configuration) and
//! its instances — Envoy's model, one per worker thread, request contexts
//! inside them. A request is pinned to one instance for its life; each
//! callback locks that instance for its duration only (never across an
//! `.await`), so a filter's callbacks never run concurrently.
//!
//! A paused request waits on its own event channel (call responses) with
//! no lock held. Calls run on the host's background runtime. A trapped
//! instance is dropped and rebuilt on next use, at most once a second per
//! instance; the requests it held fail.

use super::engine::Compiled;
use super::instance::{Action, Fault, Instance};
use super::state::{
    CallResponse, Event, Headers, Limits, LocalReply, Outbound, PluginInfo, RequestInfo,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// A dropped instance is rebuilt no sooner than this after the last build.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// How often a paused request looks whether it was resumed by another
/// context than its own call responses.
const RECHECK: Duration = Duration::from_millis(25);

struct Slot {
    instance: Mutex<Option<Instance>>,
    /// Bumped whenever the instance is replaced (a request on the old one
    /// has lost its context).
    generation: AtomicU64,
    built_at: Mutex<Option<Instant>>,
}

pub struct Plugin {
    pub info: Arc<PluginInfo>,
    compiled: Arc<Compiled>,
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    /// The module exports body callbacks (request, response).
    bodies: (bool, bool),
}

/// A request's context in one instance.
pub struct StreamRef {
    slot: usize,
    generation: u64,
    pub ctx: u32,
    /// Call responses for this context (made with its first call).
    events: Option<UnboundedReceiver<Event>>,
}

/// What the filter decided about the request (or response) so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; the headers as the filter left them if it changed them.
    Continue(Option<Headers>),
    Respond(LocalReply),
    /// `proxy_close_stream`, or the filter never resumed: end the request.
    Close(String),
}

/// Lock, tolerating a poisoned lock (a panic elsewhere).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Plugin {
    /// A plugin with `instances` instances, the first started now (a
    /// module that cannot start is refused here, with the reason).
    pub fn new(
        compiled: Arc<Compiled>,
        info: Arc<PluginInfo>,
        instances: usize,
    ) -> Result<Plugin, Fault> {
        let slots: Vec<Arc<Slot>> = (0..instances.max(1))
            .map(|_| {
                Arc::new(Slot {
                    instance: Mutex::new(None),
                    generation: AtomicU64::new(0),
                    built_at: Mutex::new(None),
                })
            })
            .collect();
        let module = compiled.pre.module();
        let bodies = (
            module.get_export("proxy_on_request_body").is_some(),
            module.get_export("proxy_on_response_body").is_some(),
        );
        let plugin = Plugin {
            info,
            compiled,
            slots,
            next: AtomicUsize::new(0),
            bodies,
        };
        // the first instance proves the module starts with this config
        let mut first = lock(&plugin.slots[0].instance);
        plugin.build(0, &mut first)?;
        drop(first);
        Ok(plugin)
    }

    /// Start a fresh instance in `slot`.
    fn build(&self, slot: usize, place: &mut Option<Instance>) -> Result<(), Fault> {
        let s = &self.slots[slot];
        *lock(&s.built_at) = Some(Instant::now());
        s.generation.fetch_add(1, Ordering::Relaxed);
        let (mut instance, root_rx) = Instance::start(&self.compiled, self.info.clone())?;
        let outbox = instance.take_outbox();
        let root_tx = instance.root_events();
        *place = Some(instance);
        let generation = s.generation.load(Ordering::Relaxed);
        for out in outbox {
            spawn_call(out, root_tx.clone(), self.info.limits.body);
        }
        spawn_root(
            Arc::downgrade(s),
            generation,
            root_rx,
            root_tx,
            self.info.limits.body,
        );
        Ok(())
    }

    /// Lock the request's instance (building one if the slot is empty and
    /// the rebuild rate allows); `f` also gets the instance's generation.
    fn with<T>(
        &self,
        slot: usize,
        generation: Option<u64>,
        f: impl FnOnce(&mut Instance, u64) -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        let s = &self.slots[slot];
        let mut guard = lock(&s.instance);
        if let Some(g) = generation {
            if s.generation.load(Ordering::Relaxed) != g || guard.is_none() {
                return Err(Fault(
                    "the filter's instance was replaced during the request".into(),
                ));
            }
        }
        if guard.is_none() {
            let recent = lock(&s.built_at).is_some_and(|t| t.elapsed() < REBUILD_EVERY);
            if recent {
                return Err(Fault(
                    "the filter's instance failed and is being rebuilt".into(),
                ));
            }
            self.build(slot, &mut guard)?;
        }
        let Some(instance) = guard.as_mut() else {
            return Err(Fault("no instance".into()));
        };
        let r = f(instance, s.generation.load(Ordering::Relaxed));
        if instance.broken {
            log::warn!(target: "flexgw::wasm", "{}: instance {slot} dropped after a fault ({} request(s) in it fail)", self.info.name, instance.streams());
            *guard = None;
        }
        r
    }

    /// A new request context with these headers; `proxy_on_request_headers`.
    /// The verdict, or `None` while the filter pauses (see [`Plugin::settle`]).
    pub fn request_headers(
        &self,
        headers: Headers,
        info: Arc<RequestInfo>,
        end_of_stream: bool,
    ) -> Result<(StreamRef, Option<Verdict>), Fault> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut events = None;
        let (ctx, verdict, generation) = self.with(slot, None, |i, generation| {
            let ctx = i.create_stream(headers, info)?;
            let action = i.request_headers(ctx, end_of_stream)?;
            dispatch(i, ctx, &mut events, self.info.limits.body);
            let verdict = verdict(i, ctx, action == Action::Pause, true)?;
            Ok((ctx, verdict, generation))
        })?;
        let stream = StreamRef {
            slot,
            generation,
            ctx,
            events,
        };
        Ok((stream, verdict))
    }

    /// Wait (no lock held) while the filter pauses the request, delivering
    /// call responses, until it resumes or answers, or the pause limit
    /// passes.
    pub async fn settle(&self, s: &mut StreamRef) -> Result<Verdict, Fault> {
        let deadline = tokio::time::Instant::now() + self.info.limits.pause;
        loop {
            // the request's own call responses wake it at once; a resume
            // from elsewhere (the root context on a tick or a queue, with
            // `proxy_set_effective_context`) is noticed within RECHECK
            let event = next_event(&mut s.events, deadline).await;
            let ctx = s.ctx;
            let mut events = None;
            let v = self.with(s.slot, Some(s.generation), |i, _| {
                if let Some(event) = event {
                    i.deliver(event)?;
                    dispatch(i, ctx, &mut events, self.info.limits.body);
                }
                verdict(i, ctx, true, true)
            })?;
            if events.is_some() {
                s.events = events;
            }
            if let Some(v) = v {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Verdict::Close(format!(
                    "the filter paused the request and did not resume it within {} s",
                    self.info.limits.pause.as_secs()
                )));
            }
        }
    }

    /// Call responses that arrived while the request was not waiting.
    fn drain(&self, s: &mut StreamRef) -> Result<(), Fault> {
        let Some(rx) = s.events.as_mut() else {
            return Ok(());
        };
        while let Ok(event) = rx.try_recv() {
            self.with(s.slot, Some(s.generation), |i, _| i.deliver(event))?;
        }
        Ok(())
    }

    /// `proxy_on_request_body` (`request`) or `proxy_on_response_body`
    /// with the body so far; the body to send on (`None`: hold it, the
    /// filter pauses for more).
    pub fn body(
        &self,
        s: &mut StreamRef,
        chunk: &[u8],
        eos: bool,
        request: bool,
    ) -> Result<Option<Vec<u8>>, Fault> {
        if request {
            self.drain(s)?;
        }
        let limit = self.info.limits.body;
        let side = if request { "request" } else { "response" };
        self.with(s.slot, Some(s.generation), |i, _| {
            let st = i
                .stream(s.ctx)
                .ok_or_else(|| Fault("the request context is gone".into()))?;
            let buffered = if request {
                &mut st.request_body
            } else {
                &mut st.response_body
            };
            if buffered.len() + chunk.len() > limit {
                return Err(Fault(format!(
                    "the filter buffered more than {limit} bytes of {side} body"
                )));
            }
            buffered.extend_from_slice(chunk);
            let action = if request {
                i.request_body(s.ctx, eos)?
            } else {
                i.response_body(s.ctx, eos)?
            };
            let st = i
                .stream(s.ctx)
                .ok_or_else(|| Fault("the request context is gone".into()))?;
            if action == Action::Pause && !eos {
                return Ok(None);
            }
            let buffered = if request {
                &mut st.request_body
            } else {
                &mut st.response_body
            };
            Ok(Some(std::mem::take(buffered)))
        })
    }

    /// `proxy_on_response_headers`: the headers as the filter left them.
    pub fn response_headers(
        &self,
        s: &mut StreamRef,
        headers: Headers,
        status: u16,
        eos: bool,
    ) -> Result<Verdict, Fault> {
        self.drain(s)?;
        let ctx = s.ctx;
        let mut events = None;
        let v = self.with(s.slot, Some(s.generation), |i, _| {
            let st = i
                .stream(ctx)
                .ok_or_else(|| Fault("the request context is gone".into()))?;
            st.response = headers;
            st.response_code = Some(status);
            i.response_headers(ctx, eos)?;
            dispatch(i, ctx, &mut events, self.info.limits.body);
            verdict(i, ctx, false, false)
        })?;
        if events.is_some() {
            s.events = events;
        }
        Ok(v.unwrap_or(Verdict::Continue(None)))
    }

    /// The request is over: done, log, delete — or, when the filter's
    /// `proxy_on_done` returns false, log and delete once it calls
    /// `proxy_done` (its call responses still reach it meanwhile; the
    /// pause limit bounds the wait).
    pub fn finish(&self, mut s: StreamRef, status: u16) {
        let ctx = s.ctx;
        let mut events = None;
        let r = self.with(s.slot, Some(s.generation), |i, _| {
            if let Some(st) = i.stream(ctx) {
                st.response_code.get_or_insert(status);
            }
            let over = i.finish(ctx)?;
            dispatch(i, ctx, &mut events, self.info.limits.body);
            Ok(over)
        });
        if events.is_some() {
            s.events = events;
        }
        match r {
            Ok(true) => {}
            Ok(false) => linger(self.slots[s.slot].clone(), s, self.info.limits),
            Err(e) => {
                log::debug!(target: "flexgw::wasm", "{}: end of request: {e}", self.info.name)
            }
        }
    }

    /// Whether the filter has body callbacks (request, response).
    pub fn body_callbacks(&self) -> (bool, bool) {
        self.bodies
    }
}

/// The next event for a waiting context, or `None` after [`RECHECK`] (or
/// at `deadline`, if sooner) without one.
async fn next_event(
    events: &mut Option<UnboundedReceiver<Event>>,
    deadline: tokio::time::Instant,
) -> Option<Event> {
    let wake = (tokio::time::Instant::now() + RECHECK).min(deadline);
    match events.as_mut() {
        Some(rx) => tokio::time::timeout_at(wake, rx.recv())
            .await
            .ok()
            .flatten(),
        None => {
            tokio::time::sleep_until(wake).await;
            None
        }
    }
}

/// Send the calls the last callback asked for (under the instance's
/// lock: spawning is all it does). A context's first call makes its
/// event channel; `events` gets the receiver when it is `ctx`'s.
fn dispatch(
    i: &mut Instance,
    ctx: u32,
    events: &mut Option<UnboundedReceiver<Event>>,
    body_limit: usize,
) {
    for out in i.take_outbox() {
        let to = match i.stream(out.context) {
            Some(st) => match &st.events {
                Some(tx) => tx.clone(),
                None if out.context == ctx => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    st.events = Some(tx.clone());
                    *events = Some(rx);
                    tx
                }
                // made for a context that is not the one running: the
                // root task delivers it
                None => i.root_events(),
            },
            None => i.root_events(),
        };
        spawn_call(out, to, body_limit);
    }
}

/// A request context whose filter deferred its end (`proxy_on_done`
/// returned false): its call responses are delivered until the filter
/// calls `proxy_done` (then log and delete run) or the pause limit
/// passes (then they run anyway).
fn linger(slot: Arc<Slot>, mut s: StreamRef, limits: Limits) {
    super::background().spawn(async move {
        let deadline = tokio::time::Instant::now() + limits.pause;
        loop {
            let event = next_event(&mut s.events, deadline).await;
            let expired = tokio::time::Instant::now() >= deadline;
            let mut guard = lock(&slot.instance);
            if slot.generation.load(Ordering::Relaxed) != s.generation {
                return;
            }
            let Some(i) = guard.as_mut() else { return };
            let mut events = None;
            let r = (|| {
                if let Some(event) = event {
                    i.deliver(event)?;
                    dispatch(i, s.ctx, &mut events, limits.body);
                }
                i.reap()?;
                if expired {
                    i.expire(s.ctx)?;
                }
                Ok::<(), Fault>(())
            })();
            let alive = i.alive(s.ctx);
            if let Err(e) = r {
                log::warn!(target: "flexgw::wasm", "{}: deferred request context: {e}", i.plugin().name);
            }
            if i.broken {
                *guard = None;
                return;
            }
            drop(guard);
            if events.is_some() {
                s.events = events;
            }
            if !alive {
                return;
            }
        }
    });
}

impl Drop for Plugin {
    /// The plugin is replaced or removed (a reload): each instance's root
    /// context is told (`proxy_on_done`); one that defers its end keeps
    /// its instance (ticks, call responses) until it calls `proxy_done`
    /// or the pause limit passes.
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut guard = lock(&slot.instance);
            let Some(i) = guard.as_mut() else { continue };
            match i.shut_down() {
                Ok(true) => {}
                Ok(false) => shut_down_later(slot.clone(), self.info.limits.pause),
                Err(e) => {
                    log::warn!(target: "flexgw::wasm", "{}: shutting down: {e}", self.info.name)
                }
            }
        }
    }
}

/// Keep a slot (so its root task runs) until its root context calls
/// `proxy_done`, or `limit` passes.
fn shut_down_later(slot: Arc<Slot>, limit: Duration) {
    super::background().spawn(async move {
        let deadline = Instant::now() + limit;
        loop {
            tokio::time::sleep(RECHECK).await;
            let mut guard = lock(&slot.instance);
            let Some(i) = guard.as_mut() else { return };
            match i.root_over() {
                Ok(false) if Instant::now() < deadline => continue,
                Ok(false) => {
                    log::warn!(target: "flexgw::wasm", "{}: the root context did not call proxy_done within {} s of shutdown; dropped", i.plugin().name, limit.as_secs());
                }
                Ok(true) => {}
                Err(e) => log::warn!(target: "flexgw::wasm", "{}: shutting down: {e}", i.plugin().name),
            }
            *guard = None;
            return;
        }
    });
}

/// Where the request stands after a callback: answered, closed,
/// resumed (or it did not pause), or still paused (`None`).
fn verdict(
    i: &mut Instance,
    ctx: u32,
    paused: bool,
    request: bool,
) -> Result<Option<Verdict>, Fault> {
    let Some(st) = i.stream(ctx) else {
        return Err(Fault("the request context is gone".into()));
    };
    if let Some(reply) = st.local.take() {
        return Ok(Some(Verdict::Respond(reply)));
    }
    if st.closed {
        return Ok(Some(Verdict::Close("the filter closed the stream".into())));
    }
    if paused && !st.resumed {
        return Ok(None);
    }
    st.resumed = false;
    let headers = if request {
        &mut st.request
    } else {
        &mut st.response
    };
    if !headers.dirty() {
        return Ok(Some(Verdict::Continue(None)));
    }
    // the edits go to the gateway; the filter keeps the current pairs
    let edits = std::mem::take(&mut headers.edits);
    let all = edits
        .iter()
        .any(|e| matches!(e, super::state::HeaderEdit::All));
    let pairs = if all {
        headers.pairs.clone()
    } else {
        Vec::new()
    };
    Ok(Some(Verdict::Continue(Some(Headers { pairs, edits }))))
}

/// The root context's life: ticks, and the events for it (call
/// responses, queue notices), until its instance is replaced.
fn spawn_root(
    slot: Weak<Slot>,
    generation: u64,
    mut events: UnboundedReceiver<Event>,
    tx: UnboundedSender<Event>,
    body_limit: usize,
) {
    super::background().spawn(async move {
        loop {
            let period = {
                let Some(s) = slot.upgrade() else { return };
                if s.generation.load(Ordering::Relaxed) != generation {
                    return;
                }
                let guard = lock(&s.instance);
                match guard.as_ref() {
                    Some(i) => i.tick_period(),
                    None => return,
                }
            };
            let event = match period {
                Some(p) => tokio::time::timeout(p, events.recv()).await.ok(),
                // no ticks: wake now and then to notice the instance went
                None => tokio::time::timeout(Duration::from_secs(1), events.recv())
                    .await
                    .ok(),
            };
            if matches!(event, Some(None)) {
                return;
            }
            let Some(s) = slot.upgrade() else { return };
            if s.generation.load(Ordering::Relaxed) != generation {
                return;
            }
            let mut guard = lock(&s.instance);
            let Some(i) = guard.as_mut() else { return };
            let r = match event {
                Some(Some(e)) => i.deliver(e),
                _ if period.is_some() => i.tick(),
                _ => Ok(()),
            }
            .and_then(|()| i.reap());
            if let Err(e) = r {
                log::warn!(target: "flexgw::wasm", "{}: root context: {e}", i.plugin().name);
            }
            let outbox = i.take_outbox();
            if i.broken {
                *guard = None;
                return;
            }
            drop(guard);
            for out in outbox {
                spawn_call(out, tx.clone(), body_limit);
            }
        }
    });
}

/// Send one call on the background runtime; its response (or failure)
/// goes to `to`.
fn spawn_call(out: Outbound, to: UnboundedSender<Event>, body_limit: usize) {
    super::background().spawn(async move {
        let token = out.token;
        let response = match send(out, body_limit).await {
            Ok(r) => Some(r),
            Err(e) => {
                log::debug!(target: "flexgw::wasm", "http call {token} failed: {e}");
                None
            }
        };
        let _ = to.send(Event::CallDone { token, response });
    });
}

async fn send(out: Outbound, body_limit: usize) -> Result<CallResponse, String> {
    use std::sync::OnceLock;
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap_or_default()
    });
    let method = reqwest::Method::from_bytes(out.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client
        .request(method, &out.url)
        .timeout(out.timeout.max(Duration::from_millis(1)));
    for (k, v) in &out.headers {
        req = req.header(k.as_str(), v.as_slice());
    }
    if !out.body.is_empty() {
        req = req.body(out.body);
    }
    let mut resp = req.send().await.map_err(|e| e.to_string())?;
    use super::state::{Name, Val};
    let mut pairs = vec![(
        Name::Pseudo(":status"),
        Val::Bytes(resp.status().as_u16().to_string().into_bytes()),
    )];
    for (k, v) in resp.headers() {
        pairs.push((
            Name::Text(k.as_str().to_string()),
            Val::Bytes(v.as_bytes().to_vec()),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > body_limit {
            return Err(format!("the response body is over {body_limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(CallResponse {
        headers: Headers::new(pairs),
        body,
    })
}
