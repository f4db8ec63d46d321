//! A bare Pingora 0.9 reverse proxy: one peer, no routing, no policies, no
//! logs: the floor flex-gateway is measured against in `benches/load.sh`
//! (target `pingora`), so the report separates Pingora's own cost from ours.
//!
//! `bare_pingora LISTEN UPSTREAM [THREADS]` (default one worker thread;
//! mimalloc, no downstream modules and the runtime flavour of
//! flex-gateway's defaults: a single-threaded runtime for one thread, work
//! stealing for more). `GET /_allocations` answers the heap allocations the
//! process has made (flex-gateway's counting allocator, as its
//! `flexgw_heap_allocations_total`), for allocations per request.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

#[global_allocator]
static GLOBAL: flex_gateway::ops::heap::Counting<mimalloc::MiMalloc> =
    flex_gateway::ops::heap::Counting(mimalloc::MiMalloc);

struct Bare(String);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    // as flex-gateway: without Pingora's default (disabled) compression
    // module, so the comparison is of the work per request alone
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, _c: &mut ()) -> Result<bool> {
        if session.req_header().uri.path() != "/_allocations" {
            return Ok(false);
        }
        let body = flex_gateway::ops::heap::allocations().to_string();
        let mut head = pingora::http::ResponseHeader::build(200, Some(2))?;
        head.insert_header("content-length", body.len())?;
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(body.into()), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.0.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: 1024,
        work_stealing: threads > 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare(upstream));
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
