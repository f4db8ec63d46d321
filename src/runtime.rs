//! The live state: an immutable [`Snapshot`] built from a validated config,
//! swapped whole on reload (`arc-swap`). A request loads the snapshot once in
//! `request_filter` and keeps its route (`Arc<CompiledRoute>`) to the end, so
//! it finishes on the configuration it started with.
//!
//! Listening sockets belong to the process, not the snapshot: a reload that
//! adds a port cannot bind it in-process (Pingora's services are fixed once
//! the server runs) and says so; a removed port keeps its socket but answers
//! 404 until the next binary upgrade or restart.

use crate::config::model::{Config, Route};
use crate::config::{self, ConfigErrors};
use crate::ops::metrics::{Metrics, RouteMetrics};
use crate::policy::chain::{Chain, Link};
use crate::policy::{Policy, PolicyConfig, PolicySpec};
use crate::router::Router;
use crate::upstream::Service;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::sources::{self, FileStatus, Source, State};

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A route ready to serve: its config, policy chain and upstream services.
pub struct CompiledRoute {
    pub config: Arc<Route>,
    pub id: Arc<str>,
    pub chain: Chain,
    /// The route's services with their weights (config order).
    pub services: Vec<(Arc<Service>, u32)>,
    pub metrics: RouteMetrics,
    /// Its `tracing` policy: sampling, span name and labels of its own.
    pub tracing: Option<Arc<crate::config::model::TraceOverride>>,
}

/// Who owns a policy instance (and so its state): a document, whose
/// `spec.policies` serve all its routes with one instance, or one route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Document(String),
    Route(String),
}

/// The policy instances of a snapshot, by owner and name, with the config
/// each was built from: a reload reuses an instance whose config is equal,
/// so its state (counters, caches, fetched keys) carries over.
#[derive(Default)]
pub struct Instances(HashMap<(Owner, &'static str), Built>);

/// A policy instance and the config it was built from.
type Built = (PolicyConfig, Arc<dyn Policy>);

impl Instances {
    fn get_or_build(
        &mut self,
        spec: &PolicySpec,
        route_id: &str,
        previous: Option<&Instances>,
    ) -> Arc<dyn Policy> {
        let owner = match &spec.document {
            Some(g) => Owner::Document(g.clone()),
            None => Owner::Route(route_id.to_string()),
        };
        let key = (owner, spec.name());
        if let Some((config, policy)) = self.0.get(&key) {
            if *config == spec.config {
                return policy.clone();
            }
        }
        let policy = previous
            .and_then(|p| p.0.get(&key))
            .filter(|(config, _)| *config == spec.config)
            .map(|(_, policy)| policy.clone())
            .unwrap_or_else(|| spec.config.build());
        self.0.insert(key, (spec.config.clone(), policy.clone()));
        policy
    }
}

impl CompiledRoute {
    /// Build a route; its policies come from `instances` (shared within the
    /// snapshot) or are carried over from `previous` when their config is
    /// unchanged.
    fn new(
        config: &Arc<Route>,
        instances: &mut Instances,
        previous: Option<&Instances>,
        services: &HashMap<String, Arc<Service>>,
        metrics: &Metrics,
    ) -> CompiledRoute {
        let links = config
            .policies
            .iter()
            .map(|spec| Link {
                when: spec.when.clone(),
                name: spec.name(),
                policy: instances.get_or_build(spec, &config.id, previous),
            })
            .collect();
        CompiledRoute {
            config: config.clone(),
            id: Arc::from(config.id.as_str()),
            chain: Chain::new(links),
            services: config
                .upstream
                .services
                .iter()
                .filter_map(|w| services.get(&w.name).map(|s| (s.clone(), w.weight)))
                .collect(),
            metrics: metrics.route(&config.id),
            tracing: config.policies.iter().find_map(|p| match &p.config {
                crate::policy::PolicyConfig::Tracing(t) => Some(Arc::new(t.clone())),
                _ => None,
            }),
        }
    }
}

/// The route table of one listener.
pub struct ListenerRuntime {
    pub addr: SocketAddr,
    pub limits: crate::config::ClientLimits,
    pub router: Router<Arc<CompiledRoute>>,
    /// An HTTPS listener's certificates (new handshakes use these).
    pub tls: Option<Arc<crate::tls::Contexts>>,
}

/// Everything built from one config.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub listeners: Vec<ListenerRuntime>,
    pub routes: HashMap<String, Arc<CompiledRoute>>,
    pub instances: Instances,
    /// Every upstream service by name.
    pub services: HashMap<String, Arc<Service>>,
    /// `spec.server.tracing`: kept across reloads that leave it unchanged
    /// (its exporter thread and queue with it).
    pub tracer: Option<Arc<crate::trace::Tracer>>,
}

impl Snapshot {
    pub fn build(config: Config, previous: Option<&Snapshot>, metrics: &Metrics) -> Snapshot {
        let mut routes: HashMap<String, Arc<CompiledRoute>> = HashMap::new();
        let mut instances = Instances::default();
        let old = previous.map(|p| &p.instances);
        // a service whose config is unchanged keeps its state: health,
        // counters, resolved addresses
        let services: HashMap<String, Arc<Service>> = config
            .services
            .iter()
            .map(|c| {
                let kept = previous
                    .and_then(|p| p.services.get(&c.name))
                    .filter(|s| *s.config == **c)
                    .cloned();
                let service =
                    kept.unwrap_or_else(|| Arc::new(Service::new(c.clone(), metrics.upstream())));
                (c.name.clone(), service)
            })
            .collect();
        for r in config.listeners.iter().flat_map(|l| &l.routes) {
            if !routes.contains_key(&r.id) {
                let compiled = CompiledRoute::new(r, &mut instances, old, &services, metrics);
                routes.insert(r.id.clone(), Arc::new(compiled));
            }
        }
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                tls: l.tls.as_ref().and_then(|t| {
                    // unchanged files: the contexts are carried over
                    let kept = previous
                        .and_then(|p| p.listener(l.addr))
                        .and_then(|p| p.tls.clone())
                        .filter(|c| c.config == *t);
                    kept.or_else(|| match crate::tls::Contexts::build(t) {
                        Ok(c) => Some(Arc::new(c)),
                        Err(e) => {
                            log::error!(
                                "listener {}: TLS: {e}; new handshakes keep the base certificate",
                                l.name
                            );
                            None
                        }
                    })
                }),
                addr: l.addr,
                limits: l.limits,
                router: Router::new(
                    l.routes
                        .iter()
                        .filter_map(|r| routes.get(&r.id).map(|c| (r.as_ref(), c.clone()))),
                ),
            })
            .collect();
        let tracer = config.server.tracing.as_ref().map(|t| {
            previous
                .and_then(|p| p.tracer.clone())
                .filter(|kept| kept.settings == *t)
                .unwrap_or_else(|| {
                    Arc::new(crate::trace::Tracer::new(
                        t.clone(),
                        metrics.tracing_spans.clone(),
                    ))
                })
        });
        Snapshot {
            config: Arc::new(config),
            listeners,
            routes,
            instances,
            services,
            tracer,
        }
    }

    pub fn listener(&self, addr: SocketAddr) -> Option<&ListenerRuntime> {
        self.listeners.iter().find(|l| l.addr == addr)
    }
}

/// Readiness as the admin `/ready` probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// The process-wide state shared by every service.
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    /// What `-c` named: files or conf.d directories, read in this order.
    pub config_paths: Vec<PathBuf>,
    pub metrics: Metrics,
    /// The listening sockets this process serves, fixed at start-up.
    bound: Vec<SocketAddr>,
    phase: AtomicU8,
    /// Requests being handled now (the overload limit counts these).
    pub in_flight: AtomicUsize,
    /// Serialises reloads (SIGHUP and the file watcher may race).
    reload_lock: std::sync::Mutex<()>,
    /// What the last load or reload attempt did, file by file.
    status: std::sync::Mutex<Arc<ApplyStatus>>,
}

/// The configuration's apply state: what serves, and what the last
/// attempt to load the files made of them.
#[derive(Debug, Clone)]
pub struct ApplyStatus {
    /// 1 for the configuration the process started with, +1 for each
    /// accepted reload.
    pub generation: u64,
    /// When the serving configuration was loaded.
    pub applied_at: SystemTime,
    /// When the last load or reload was attempted.
    pub attempted_at: SystemTime,
    /// The files of the serving configuration.
    pub serving: Vec<Source>,
    /// Every file of the last attempt (and deleted ones still serving).
    pub files: Vec<FileStatus>,
    /// Every problem of the last attempt, when it was refused.
    pub errors: Vec<config::ConfigError>,
}

impl ApplyStatus {
    /// Whether the last attempt was applied (a refused one has errors).
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Documents by state: applied, refused, pending.
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        let mut n = [0usize; 3];
        for f in &self.files {
            for d in &f.documents {
                n[*d as usize] += 1;
            }
        }
        [
            (State::Applied.as_str(), n[State::Applied as usize]),
            (State::Refused.as_str(), n[State::Refused as usize]),
            (State::Pending.as_str(), n[State::Pending as usize]),
        ]
    }
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub routes: usize,
    /// Ports in the new config that this process does not listen on.
    pub ports_needing_upgrade: Vec<SocketAddr>,
    /// Listeners this process has that the new config dropped (now 404).
    pub ports_dropped: Vec<SocketAddr>,
    pub server_settings_changed: bool,
}

impl Runtime {
    pub fn new(config: Config, sources: Vec<Source>, config_paths: &[PathBuf]) -> Arc<Runtime> {
        let metrics = Metrics::new();
        let now = SystemTime::now();
        let status = ApplyStatus {
            generation: 1,
            applied_at: now,
            attempted_at: now,
            files: sources::assess(&sources, &[], &[]),
            serving: sources,
            errors: Vec::new(),
        };
        metrics.config_state(1, unix(now), true, status.counts());
        let bound = config.listeners.iter().map(|l| l.addr).collect();
        Arc::new(Runtime {
            current: ArcSwap::from_pointee(Snapshot::build(config, None, &metrics)),
            config_paths: config_paths.to_vec(),
            metrics,
            bound,
            phase: AtomicU8::new(Phase::Starting as u8),
            in_flight: AtomicUsize::new(0),
            reload_lock: std::sync::Mutex::new(()),
            status: std::sync::Mutex::new(Arc::new(status)),
        })
    }

    /// Whether this process listens on `addr` (a listener added by a
    /// reload waits for a binary upgrade).
    pub fn binds(&self, addr: SocketAddr) -> bool {
        self.bound.contains(&addr)
    }

    /// The configuration's apply state now.
    pub fn apply_status(&self) -> Arc<ApplyStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record a load attempt's outcome, in the status and the metrics.
    fn record(&self, sources: Vec<Source>, errors: Option<&ConfigErrors>) {
        let mut slot = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        let mut next = (**slot).clone();
        next.attempted_at = now;
        match errors {
            Some(errors) => {
                next.files = sources::assess(&sources, &errors.0, &next.serving);
                next.errors = errors.0.clone();
            }
            None => {
                next.generation += 1;
                next.applied_at = now;
                next.files = sources::assess(&sources, &[], &[]);
                next.serving = sources;
                next.errors = Vec::new();
            }
        }
        self.metrics
            .config_state(next.generation, unix(now), next.ok(), next.counts());
        *slot = Arc::new(next);
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Load the config again and swap it in, or keep the current one and
    /// return every problem. Counted in the reload metric either way.
    pub fn reload(&self) -> Result<ReloadSummary, ConfigErrors> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (loaded, sources) = config::load::load_sources(&self.config_paths);
        self.metrics.reload(loaded.is_ok());
        let config = match loaded {
            Ok(config) => config,
            Err(errors) => {
                self.record(sources, Some(&errors));
                return Err(errors);
            }
        };
        let old = self.current.load_full();
        let bound = &self.bound;
        let summary = ReloadSummary {
            routes: config.listeners.iter().map(|l| l.routes.len()).sum(),
            ports_needing_upgrade: config
                .listeners
                .iter()
                .map(|l| l.addr)
                .filter(|a| !bound.contains(a))
                .collect(),
            ports_dropped: bound
                .iter()
                .copied()
                .filter(|a| !config.listeners.iter().any(|l| l.addr == *a))
                .collect(),
            server_settings_changed: config.server != old.config.server,
        };
        // a socket whose listener the config dropped finds no route table
        // in the snapshot and answers 404; a new listener's table waits for
        // a process that binds it
        let level = config.log_level;
        crate::ops::logging::apply_outputs(config.logging.as_ref());
        let next = Snapshot::build(config, Some(&old), &self.metrics);
        self.current.store(Arc::new(next));
        self.record(sources, None);
        // Flex's runtimeLogs.logLevel, unless RUST_LOG fixed the level
        if let Some(now) = crate::ops::logging::apply_level(level) {
            log::warn!("log level now {}", now.as_str().to_ascii_lowercase());
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const CONF: &str = "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  listeners: [{name: l, port: 9000}]\n  routes:\n    - id: limited\n      path: /a\n      upstream: {url: \"http://127.0.0.1:1\"}\n      policies:\n        - rate-limiting: {maxRequests: MAX, period: 1h}\n";

    fn snap(max: u32, previous: Option<&Snapshot>) -> Snapshot {
        let c = load_str("t.yaml", &CONF.replace("MAX", &max.to_string())).expect("valid");
        Snapshot::build(c, previous, &Metrics::new())
    }

    /// Send one request through the route's chain; X-RateLimit-Remaining.
    fn remaining(s: &Snapshot) -> u64 {
        let route = s.routes.get("limited").expect("route");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut req = pingora::http::RequestHeader::build("GET", b"/a", None).unwrap();
        let mut x = crate::exchange::Exchange::new();
        let mut ran = crate::policy::chain::Ran::default();
        let _ = rt.block_on(route.chain.on_request(&mut req, &mut x, &mut ran, None));
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        route
            .chain
            .on_response(&mut resp, &mut x, ran, crate::policy::chain::Side::All)
            .unwrap();
        resp.headers["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn document_policies_are_one_instance_and_unchanged_ones_are_carried_over() {
        let text = |secret: &str| {
            format!("apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: g}}\nspec:\n  listeners: [{{name: l, port: 9000}}]\n  policies:\n    - api-key: {{keys: [k1]}}\n  routes:\n    - id: a\n      path: /a\n      upstream: {{url: \"http://127.0.0.1:1\"}}\n      policies:\n        - http-basic-authentication: {{users: [{{username: u, password: {secret}}}]}}\n    - id: b\n      path: /b\n      upstream: {{url: \"http://127.0.0.1:1\"}}\n")
        };
        let build = |secret: &str, prev: Option<&Snapshot>| {
            Snapshot::build(
                load_str("t.yaml", &text(secret)).expect("valid"),
                prev,
                &Metrics::new(),
            )
        };
        let policies = |s: &Snapshot, id: &str| -> Vec<Arc<dyn Policy>> {
            s.routes[id].chain.policies().cloned().collect()
        };
        let first = build("p1", None);
        let (a, b) = (policies(&first, "a"), policies(&first, "b"));
        assert_eq!((a.len(), b.len()), (2, 1));
        assert!(
            Arc::ptr_eq(&a[0], &b[0]),
            "one api-key instance for the document"
        );
        let same = build("p1", Some(&first));
        assert!(
            Arc::ptr_eq(&policies(&same, "a")[1], &a[1]),
            "unchanged: carried over"
        );
        assert!(Arc::ptr_eq(&policies(&same, "b")[0], &b[0]));
        let changed = build("p2", Some(&same));
        assert!(
            !Arc::ptr_eq(&policies(&changed, "a")[1], &a[1]),
            "changed: rebuilt"
        );
        assert!(
            Arc::ptr_eq(&policies(&changed, "a")[0], &a[0]),
            "the other is kept"
        );
    }

    #[test]
    fn counters_survive_an_unchanged_policy_and_reset_on_a_changed_one() {
        let first = snap(10, None);
        assert_eq!(remaining(&first), 9);
        assert_eq!(remaining(&first), 8);
        let same = snap(10, Some(&first));
        assert_eq!(remaining(&same), 7, "unchanged policy keeps its counter");
        let changed = snap(20, Some(&same));
        assert_eq!(remaining(&changed), 19, "a changed policy starts afresh");
    }
}
