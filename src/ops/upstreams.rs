//! The upstream checker, a Pingora background service: for every service
//! of the current snapshot it starts the active health checks that are
//! due and re-resolves host names every `dnsRefresh`. A service dropped by
//! a reload is no longer checked; one carried over keeps its schedule.

use crate::runtime::Runtime;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the checker looks for due work (the resolution of
/// `interval`s and `dnsRefresh`).
const TICK: Duration = Duration::from_millis(100);

pub struct Checker {
    runtime: Arc<Runtime>,
}

impl Checker {
    pub fn new(runtime: Arc<Runtime>) -> Checker {
        Checker { runtime }
    }
}

#[async_trait]
impl BackgroundService for Checker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.runtime.snapshot();
            let now = Instant::now();
            for service in snapshot.services.values() {
                service.run_checks(now);
                if service.dns_due() {
                    let s = service.clone();
                    tokio::spawn(async move {
                        if let Err(why) = s.resolve(s.config.dns_refresh).await {
                            log::warn!("service {}: {why}", s.name());
                        }
                    });
                }
            }
            drop(snapshot);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
