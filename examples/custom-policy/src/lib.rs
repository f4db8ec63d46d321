//! `tenant-guard`: an example custom policy for flex-gateway, written with
//! the proxy-wasm Rust SDK (Apache-2.0).
//!
//! Requests must name an allowed tenant in a header; others get 403 (a
//! JSON body of the filter's own). Allowed requests go upstream with
//! `x-tenant-verified: true`, and their responses carry `x-served-for`.
//!
//! Configuration (the policy's `config`, handed over as JSON):
//! `{"header": "x-tenant", "allowed": ["acme", "globex"]}`
//!
//! Build: `cargo build --release --target wasm32-wasip1`
//! (module: target/wasm32-wasip1/release/tenant_guard.wasm)

use proxy_wasm::traits::*;
use proxy_wasm::types::*;
use serde::Deserialize;
use std::rc::Rc;

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    allowed: Vec<String>,
}

fn default_header() -> String {
    "x-tenant".into()
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None }) });
}}

struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) => {
                self.config = Some(Rc::new(c));
                true
            }
            Err(e) => {
                // refusing the configuration makes `flex-gateway validate` fail
                log::error!("tenant-guard: bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Guard { config, tenant: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Guard {
    config: Rc<Config>,
    tenant: Option<String>,
}

impl Context for Guard {}

impl HttpContext for Guard {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let tenant = self.get_http_request_header(&self.config.header);
        match tenant {
            Some(t) if self.config.allowed.iter().any(|a| *a == t) => {
                self.set_http_request_header("x-tenant-verified", Some("true"));
                self.tenant = Some(t);
                Action::Continue
            }
            _ => {
                self.send_http_response(
                    403,
                    vec![("content-type", "application/json")],
                    Some(br#"{"error":"unknown tenant","status":403}"#),
                );
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(t) = &self.tenant {
            self.set_http_response_header("x-served-for", Some(t));
        }
        Action::Continue
    }
}
