//! The WebAssembly engine (wasmtime, one per process), the epoch ticker
//! that interrupts runaway callbacks, and the module cache: each distinct
//! module (by SHA-256) is compiled once, checked (ABI marker, exports,
//! every import resolvable) and kept ready to instantiate.

use super::abi::{self, Abi};
use super::host;
use super::state::HostState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module};

/// How often the epoch advances: a callback's deadline is counted in these.
pub const EPOCH: Duration = Duration::from_millis(10);

/// Instances the pooling allocator has room for (all plugins, all
/// workers, old and new during a reload); the memory a slot may grow to.
const POOL_INSTANCES: u32 = 512;
pub const MAX_MEMORY: usize = 256 << 20;

/// The process's engine (its epoch ticker starts with it).
pub fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let engine =
                build().map_err(|e| format!("cannot start the WebAssembly engine: {e}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH);
                    ticker.increment_epoch();
                })
                .map_err(|e| format!("cannot start the wasm epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn build() -> wasmtime::Result<Engine> {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.parallel_compilation(true);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_core_instances(POOL_INSTANCES)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES)
        .max_memory_size(MAX_MEMORY);
    let mut pooled = c.clone();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(e) => Ok(e),
        Err(e) => {
            // a sandbox that refuses the pool's address-space reservation
            log::warn!("wasm: the pooling allocator is unavailable ({e}); instances are allocated on demand");
            Engine::new(&c)
        }
    }
}

/// A module compiled, checked and linked, ready to instantiate.
pub struct Compiled {
    pub pre: InstancePre<HostState>,
    pub abi: Abi,
    /// SHA-256 of the module's bytes (hex).
    pub hash: String,
    pub size: usize,
}

/// Compile `bytes` (or take the compiled module from the cache).
pub fn compile(bytes: &[u8]) -> Result<Arc<Compiled>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<Compiled>>>> = OnceLock::new();
    let hash = hex(&Sha256::digest(bytes));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&hash)
        .and_then(Weak::upgrade)
    {
        return Ok(c);
    }
    let compiled = Arc::new(compile_new(bytes, hash.clone())?);
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    cache.retain(|_, w| w.strong_count() > 0);
    cache.insert(hash, Arc::downgrade(&compiled));
    Ok(compiled)
}

fn compile_new(bytes: &[u8], hash: String) -> Result<Compiled, String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly module (it does not start with \\0asm)".into());
    }
    let engine = engine()?;
    let module =
        Module::new(engine, bytes).map_err(|e| format!("the module does not compile: {e:#}"))?;
    let abi = abi::detect(module.exports().map(|e| e.name()))?;
    for (name, needed) in [
        ("memory", "its linear memory"),
        ("proxy_on_context_create", "the context callback"),
    ] {
        if module.get_export(name).is_none() {
            return Err(format!("the module does not export {name} ({needed})"));
        }
    }
    if module.get_export("proxy_on_memory_allocate").is_none()
        && module.get_export("malloc").is_none()
    {
        return Err("the module exports neither proxy_on_memory_allocate nor malloc: the host cannot hand it data".into());
    }
    let mut linker = Linker::new(engine);
    host::link(&mut linker).map_err(|e| format!("host functions: {e}"))?;
    host::wasi::link_stubs(&mut linker, &module).map_err(|e| format!("WASI stubs: {e}"))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| format!("the module imports what this host does not provide: {e:#}"))?;
    Ok(Compiled {
        pre,
        abi,
        hash,
        size: bytes.len(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
