//! Active health checks: a GET of the configured path to each target that
//! is due, with the target's Host, TLS settings and timeout; the results
//! move targets in and out of rotation (`Health`).

use super::*;

impl Service {
    /// Run the active checks that are due, each in its own task; `now`
    /// from the caller. Returns at once.
    pub fn run_checks(self: &Arc<Self>, now: Instant) {
        let Some(check) = &self.config.health_check else {
            return;
        };
        let pool = self.pool.load_full();
        for e in &pool.endpoints {
            {
                let mut next = e.next_check.lock().unwrap_or_else(|x| x.into_inner());
                if next.is_some_and(|t| now < t) || e.checking.load(Ordering::Acquire) {
                    continue;
                }
                *next = Some(now + check.interval);
            }
            e.checking.store(true, Ordering::Release);
            let (service, e) = (self.clone(), e.clone());
            tokio::spawn(async move {
                let result = service.check_once(&e).await;
                service.checked(&e, result);
                e.checking.store(false, Ordering::Release);
            });
        }
    }

    async fn check_once(&self, e: &Endpoint) -> std::result::Result<(), String> {
        let Some(check) = &self.config.health_check else {
            return Ok(());
        };
        let up = self.target(e);
        let client = match e.checker.get() {
            Some(c) => c,
            None => {
                let mut b = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(check.timeout)
                    .connect_timeout(check.timeout)
                    .pool_max_idle_per_host(0)
                    .redirect(reqwest::redirect::Policy::none());
                if up.tls {
                    let t = &self.config.tls;
                    b = b.resolve(t.sni.as_deref().unwrap_or(&up.host), e.addr);
                    if !t.verify {
                        b = b
                            .danger_accept_invalid_certs(true)
                            .danger_accept_invalid_hostnames(true);
                    }
                    if let Some(ca) = &t.ca {
                        for cert in reqwest::Certificate::from_pem_bundle(&ca.bytes)
                            .map_err(|e| e.to_string())?
                        {
                            b = b.add_root_certificate(cert);
                        }
                    }
                    if let Some((cert, key)) = &t.client {
                        let id = reqwest::Identity::from_pkcs8_pem(&cert.bytes, &key.bytes)
                            .map_err(|e| format!("client certificate for health checks: {e}"))?;
                        b = b.identity(id);
                    }
                }
                let c = b.build().map_err(|e| e.to_string())?;
                e.checker.get_or_init(|| c)
            }
        };
        let url = if up.tls {
            let host = self.config.tls.sni.as_deref().unwrap_or(&up.host);
            format!("https://{host}:{}{}{}", up.port, up.base_path, check.path)
        } else {
            format!("http://{}{}{}", e.addr, up.base_path, check.path)
        };
        let resp = client
            .get(&url)
            .header(http::header::HOST, up.authority.as_str())
            .header(http::header::USER_AGENT, "flex-gateway-health-check")
            .send()
            .await
            .map_err(|err| crate::ops::with_causes(&err))?;
        let status = resp.status().as_u16();
        let (lo, hi) = check.statuses;
        if (lo..=hi).contains(&status) {
            Ok(())
        } else {
            Err(format!("status {status} (expected {lo}-{hi})"))
        }
    }

    fn checked(&self, e: &Endpoint, result: std::result::Result<(), String>) {
        let Some(check) = &self.config.health_check else {
            return;
        };
        let changed = e.health().checked(result.is_ok(), check);
        match (changed, result) {
            (Some(false), Err(why)) => log::warn!(
                "service {}: target {} is unhealthy ({} failed checks in a row; last: {why})",
                self.config.name,
                e.addr,
                check.unhealthy_threshold
            ),
            (Some(true), _) => log::info!(
                "service {}: target {} is healthy again",
                self.config.name,
                e.addr
            ),
            _ => {}
        }
    }
}
