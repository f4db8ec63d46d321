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
use crate::policy::Policy;
use crate::router::Router;
use crate::upstream::Target;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// A route ready to serve: its config, built policies and upstream target.
pub struct CompiledRoute {
    pub config: Arc<Route>,
    pub policies: Vec<Policy>,
    pub target: Target,
    pub metrics: RouteMetrics,
}

impl CompiledRoute {
    /// Build a route; policies whose config is unchanged from `previous`
    /// (the same route id in the last snapshot) keep their state (counters).
    pub fn new(
        config: &Arc<Route>,
        previous: Option<&CompiledRoute>,
        metrics: &Metrics,
    ) -> CompiledRoute {
        let old: &[Policy] = previous.map_or(&[], |p| &p.policies);
        CompiledRoute {
            config: config.clone(),
            policies: config
                .policies
                .iter()
                .map(|p| Policy::reuse_or_build(p, old))
                .collect(),
            target: Target::new(&config.upstream),
            metrics: metrics.route(&config.id),
        }
    }
}

/// The route table of one listener.
pub struct ListenerRuntime {
    pub addr: SocketAddr,
    pub router: Router<Arc<CompiledRoute>>,
}

/// Everything built from one config.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub listeners: Vec<ListenerRuntime>,
    pub routes: HashMap<String, Arc<CompiledRoute>>,
}

impl Snapshot {
    pub fn build(config: Config, previous: Option<&Snapshot>, metrics: &Metrics) -> Snapshot {
        let mut routes: HashMap<String, Arc<CompiledRoute>> = HashMap::new();
        for r in config.listeners.iter().flat_map(|l| &l.routes) {
            routes.entry(r.id.clone()).or_insert_with(|| {
                let old = previous
                    .and_then(|p| p.routes.get(&r.id))
                    .map(|c| c.as_ref());
                Arc::new(CompiledRoute::new(r, old, metrics))
            });
        }
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                addr: l.addr,
                router: Router::new(
                    l.routes
                        .iter()
                        .filter_map(|r| routes.get(&r.id).map(|c| (r.as_ref(), c.clone()))),
                ),
            })
            .collect();
        Snapshot {
            config: Arc::new(config),
            listeners,
            routes,
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
    pub config_path: PathBuf,
    pub metrics: Metrics,
    /// The listening sockets this process serves, fixed at start-up.
    bound: Vec<SocketAddr>,
    phase: AtomicU8,
    /// Serialises reloads (SIGHUP and the file watcher may race).
    reload_lock: std::sync::Mutex<()>,
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
    pub fn new(config: Config, config_path: &Path) -> Arc<Runtime> {
        let metrics = Metrics::new();
        let bound = config.listeners.iter().map(|l| l.addr).collect();
        Arc::new(Runtime {
            current: ArcSwap::from_pointee(Snapshot::build(config, None, &metrics)),
            config_path: config_path.to_path_buf(),
            metrics,
            bound,
            phase: AtomicU8::new(Phase::Starting as u8),
            reload_lock: std::sync::Mutex::new(()),
        })
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
        let loaded = config::load(&self.config_path);
        self.metrics.reload(loaded.is_ok());
        let config = loaded?;
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
        let next = Snapshot::build(config, Some(&old), &self.metrics);
        self.current.store(Arc::new(next));
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const CONF: &str = "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  listeners: [{name: l, port: 9000}]\n  routes:\n    - id: limited\n      path: /a\n      upstream: {url: \"http://127.0.0.1:1\"}\n      policies:\n        - rate-limiting: {maxRequests: MAX, period: 60}\n";

    fn snap(max: u32, previous: Option<&Snapshot>) -> Snapshot {
        let c = load_str("t.yaml", &CONF.replace("MAX", &max.to_string())).expect("valid");
        Snapshot::build(c, previous, &Metrics::new())
    }

    fn remaining(s: &Snapshot) -> u64 {
        let route = s.routes.get("limited").expect("route");
        let Policy::RateLimit(l) = &route.policies[0];
        l.check().1.remaining
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
