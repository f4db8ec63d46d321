//! Host names of targets: resolved in the background every `dnsRefresh`
//! (never per request), each address a target; RFC 6761 names answered
//! without asking DNS.

use super::*;

/// The address of a name as RFC 6761 fixes it, without asking DNS.
pub(super) fn special(host: &str, port: u16) -> Option<std::result::Result<SocketAddr, String>> {
    let name = host.trim_end_matches('.');
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(Ok(SocketAddr::new(ip, port)));
    }
    if name == "invalid" || name.ends_with(".invalid") {
        return Some(Err(format!(
            "{name}: the .invalid domain never resolves (RFC 6761)"
        )));
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)));
    }
    None
}

impl Service {
    /// Some target is a host name (re-resolved every `dnsRefresh`).
    pub fn has_names(&self) -> bool {
        self.config
            .targets
            .iter()
            .any(|t| special(&t.upstream.host, t.upstream.port).is_none())
    }

    /// Host names are due for resolution (none running, the last one
    /// older than `dnsRefresh`).
    pub fn dns_due(&self) -> bool {
        self.has_names()
            && self
                .resolving
                .try_lock()
                .is_ok_and(|last| last.is_none_or(|t| t.elapsed() >= self.config.dns_refresh))
    }

    /// Resolve host names now, unless a resolution ran within `fresh`.
    /// Endpoints whose address stays keep their state. A name that does not
    /// resolve keeps its last addresses (none, before its first success).
    pub async fn resolve(&self, fresh: Duration) -> std::result::Result<(), String> {
        let mut last = self.resolving.lock().await;
        if last.is_some_and(|t| t.elapsed() < fresh) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let old = self.pool.load_full();
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        let mut problem = None;
        for (i, t) in self.config.targets.iter().enumerate() {
            let (host, port) = (&t.upstream.host, t.upstream.port);
            let addrs: Vec<SocketAddr> = match special(host, port) {
                Some(Ok(addr)) => vec![addr],
                Some(Err(why)) => {
                    problem = Some(why);
                    continue;
                }
                None => match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(found) => {
                        let mut v: Vec<SocketAddr> = found.collect();
                        v.sort();
                        v.dedup();
                        if v.is_empty() {
                            problem = Some(format!("{host} resolved to no address"));
                        }
                        v
                    }
                    Err(e) => {
                        problem = Some(format!("cannot resolve upstream host {host}: {e}"));
                        let kept: Vec<SocketAddr> = old
                            .endpoints
                            .iter()
                            .filter(|e| e.target == i)
                            .map(|e| e.addr)
                            .collect();
                        if !kept.is_empty() {
                            log::warn!(
                                "service {}: {}; keeping its last addresses",
                                self.config.name,
                                problem.as_deref().unwrap_or_default()
                            );
                        }
                        kept
                    }
                },
            };
            for addr in addrs {
                let kept = old
                    .endpoints
                    .iter()
                    .find(|e| e.target == i && e.addr == addr)
                    .cloned();
                endpoints.push(kept.unwrap_or_else(|| Arc::new(Endpoint::new(addr, i, t.weight))));
            }
        }
        let same = endpoints.len() == old.endpoints.len()
            && endpoints
                .iter()
                .zip(&old.endpoints)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let error = problem.clone().filter(|_| endpoints.is_empty());
        if !same || !old.resolved || error != old.error {
            for gone in old
                .endpoints
                .iter()
                .filter(|e| !endpoints.iter().any(|n| Arc::ptr_eq(n, e)))
            {
                let labels = self.labels(gone);
                self.metrics.target_up.remove(&labels);
                self.metrics.target_healthy.remove(&labels);
            }
            let order = Order::new(&endpoints, &self.config.balance);
            self.pool.store(Arc::new(Pool {
                endpoints,
                order,
                resolved: true,
                error,
            }));
        }
        match problem {
            Some(why) if self.pool.load().endpoints.is_empty() => Err(why),
            _ => Ok(()),
        }
    }

    /// Resolve now when no resolution ever ran (the first request after
    /// start or reload, before the checker got to it).
    pub async fn ensure_resolved(&self) -> Result<()> {
        if !self.pool.load().resolved {
            self.resolve(self.config.dns_refresh)
                .await
                .or_else(|why| Error::e_explain(RESOLVE_ERROR, why))?;
        }
        let pool = self.pool.load();
        match (&pool.error, pool.endpoints.is_empty()) {
            (Some(why), true) => Error::e_explain(RESOLVE_ERROR, why.clone()),
            _ => Ok(()),
        }
    }
}
