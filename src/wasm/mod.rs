//! The proxy-wasm host: custom policies compiled to WebAssembly (ABI
//! 0.2.0 and 0.2.1, the Rust / Go / C++ SDKs, Flex Gateway PDK policies).
//!
//! ```text
//! engine.rs    wasmtime engine, epoch ticker, compile-once module cache
//! plugin.rs    a configured filter: its instances (one per worker), a
//!              request pinned to one, pause/resume, calls, rebuilds
//! instance.rs  one instance: store, exports, the callbacks in order
//! state.rs     what host functions act on (contexts, headers, bodies)
//! host/        the host functions by family; shared.rs: shared data,
//!              queues, metrics; abi.rs: the ABI's numbers and encodings
//! ```
//!
//! Nothing here knows Pingora: `policy/wasm.rs` turns requests into
//! header lists and verdicts into responses.

pub mod abi;
pub mod engine;
mod host;
pub mod instance;
pub mod plugin;
pub mod shared;
pub mod state;

pub use instance::{Action, Fault};
pub use plugin::{Plugin, StreamRef, Verdict};
pub use state::{FlexIdentity, Headers, Limits, LocalReply, PluginInfo, RequestInfo, Service};

/// The host's own runtime (one thread): filters' HTTP calls and ticks run
/// here, off the request path.
pub fn background() -> &'static tokio::runtime::Handle {
    use std::sync::OnceLock;
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("wasm-host".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Some(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        log::error!("wasm: cannot start the host runtime: {e}");
                        let _ = tx.send(None);
                    }
                }
            });
        match spawned.ok().and_then(|_| rx.recv().ok().flatten()) {
            Some(h) => h,
            // no thread: fall back to the caller's runtime (or panic
            // outside one, which the gateway never is)
            None => tokio::runtime::Handle::current(),
        }
    })
}

#[cfg(test)]
mod tests;
