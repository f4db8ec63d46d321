//! The host against hand-written modules (WebAssembly text): ABI
//! detection, missing exports and imports, runaway and trapping
//! callbacks, bad pointers, memory caps, a broken allocator.

use super::engine;
use super::instance::Instance;
use super::plugin::{Plugin, Verdict};
use super::state::{Headers, Limits, Name, PluginInfo, RequestInfo, Val};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn info(limits: Limits) -> Arc<PluginInfo> {
    Arc::new(PluginInfo {
        name: "wat".into(),
        root_id: String::new(),
        vm_id: format!("wat-{}", rand::random::<u64>()),
        vm_config: Vec::new(),
        config: b"{}".to_vec(),
        node_id: "test".into(),
        services: Default::default(),
        shared: super::shared::Shared::for_vm("wat"),
        flex: None,
        env: Vec::new(),
        limits,
    })
}

/// A proxy-wasm module: memory, allocator `alloc`, the ABI marker `abi`,
/// a request-headers callback with `body`, and `extra` items.
fn module(abi: &str, alloc: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
          (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
          (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1 {max})
          {abi_export}
          (func (export "proxy_on_memory_allocate") (param i32) (result i32) {alloc})
          (func (export "proxy_on_context_create") (param i32 i32))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body})
          (data (i32.const 16) ":path")
          {extra})"#,
        max = 2000,
        abi_export = if abi.is_empty() {
            String::new()
        } else {
            format!("(func (export \"proxy_abi_version_{abi}\"))")
        },
    );
    wat::parse_str(text).expect("valid WAT")
}

fn plugin(bytes: &[u8], limits: Limits) -> Result<Plugin, String> {
    let compiled = engine::compile(bytes)?;
    Plugin::new(compiled, info(limits), 1).map_err(|e| e.0)
}

/// A request through the filter: its verdict (`None`: paused).
fn request(p: &Plugin) -> Result<Option<Verdict>, super::Fault> {
    let headers = Headers::new(vec![(Name::Pseudo(":path"), Val::Bytes(b"/x".to_vec()))]);
    let (_s, verdict) = p.request_headers(headers, Arc::new(RequestInfo::default()), true)?;
    Ok(verdict)
}

const GO_ON: Option<Verdict> = Some(Verdict::Continue(None));

const ALLOC: &str = "(i32.const 4096)";

#[test]
fn abi_markers_are_checked_at_load() {
    let ok = module("0_2_1", ALLOC, "(i32.const 0)", "");
    assert!(engine::compile(&ok).is_ok());
    assert!(engine::compile(&module("0_2_0", ALLOC, "(i32.const 0)", "")).is_ok());
    let old = engine::compile(&module("0_1_0", ALLOC, "(i32.const 0)", ""))
        .err()
        .unwrap();
    assert!(old.contains("ABI 0.1.0"), "{old}");
    let none = engine::compile(&module("", ALLOC, "(i32.const 0)", ""))
        .err()
        .unwrap();
    assert!(none.contains("no proxy_abi_version"), "{none}");
    let junk = engine::compile(b"not wasm at all").err().unwrap();
    assert!(junk.contains("not a WebAssembly module"), "{junk}");
}

#[test]
fn missing_exports_and_unknown_imports_are_load_errors() {
    let no_ctx = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let e = engine::compile(&no_ctx).err().unwrap();
    assert!(e.contains("proxy_on_context_create"), "{e}");
    let foreign = wat::parse_str(
        r#"(module (import "env" "envoy_magic" (func (param i32)))
             (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
             (func (export "proxy_on_context_create") (param i32 i32)))"#,
    )
    .unwrap();
    let e = engine::compile(&foreign).err().unwrap();
    assert!(e.contains("envoy_magic"), "{e}");
    // an unknown WASI function is linked as a stub (ENOSYS), not refused
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
             (func (export "proxy_on_context_create") (param i32 i32)))"#,
    )
    .unwrap();
    assert!(engine::compile(&wasi).is_ok());
}

#[test]
fn a_runaway_callback_is_stopped_at_its_deadline_and_the_instance_replaced() {
    let looping = module("0_2_1", ALLOC, "(loop $l (br $l)) (i32.const 0)", "");
    let limits = Limits {
        callback: Duration::from_millis(50),
        ..Limits::default()
    };
    let p = plugin(&looping, limits).unwrap();
    let t = Instant::now();
    let e = request(&p).unwrap_err();
    assert!(e.0.contains("deadline"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // the instance was dropped; its rebuild is rate-limited
    let e = request(&p).unwrap_err();
    assert!(e.0.contains("rebuilt"), "{e}");
}

#[test]
fn a_trap_mid_request_fails_that_request_and_a_new_instance_serves_the_next() {
    // traps when the request carries x-trap (checked via the header map)
    let body = r#"
        (if (i32.eq (call $get (i32.const 0) (i32.const 32) (i32.const 6) (i32.const 64) (i32.const 68)) (i32.const 0))
          (then unreachable))
        (i32.const 0)"#;
    let trap = module("0_2_1", ALLOC, body, r#"(data (i32.const 32) "x-trap")"#);
    let p = plugin(&trap, Limits::default()).unwrap();
    assert_eq!(request(&p).unwrap(), GO_ON);
    let headers = Headers::new(vec![(
        Name::Text("x-trap".into()),
        Val::Bytes(b"1".to_vec()),
    )]);
    let e = p
        .request_headers(headers, Arc::new(RequestInfo::default()), true)
        .err()
        .unwrap();
    assert!(e.0.contains("trapped"), "{e}");
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(request(&p).unwrap(), GO_ON);
}

#[test]
fn out_of_bounds_pointers_get_a_status_not_a_crash() {
    // proxy_log with a pointer past memory: the status is returned
    // (INVALID_MEMORY_ACCESS = 6), which the filter hands back as its action
    let body = "(call $log (i32.const 2) (i32.const 0x7fff0000) (i32.const 10))";
    let p = plugin(&module("0_2_1", ALLOC, body, ""), Limits::default()).unwrap();
    assert!(request(&p).is_ok());
    let r = Instance::start(
        &engine::compile(&module("0_2_1", ALLOC, body, "")).unwrap(),
        info(Limits::default()),
    );
    assert!(r.is_ok());
    // a return pointer out of bounds: the value cannot be written; the
    // status (6) comes back to the filter, which returns it as its action
    // (not PAUSE): the request goes on, nothing was written anywhere
    let body = "(call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 0x7ffffff0) (i32.const 68))";
    let p = plugin(&module("0_2_1", ALLOC, body, ""), Limits::default()).unwrap();
    assert_eq!(request(&p).unwrap(), GO_ON);
}

#[test]
fn an_allocator_returning_zero_fails_the_request_cleanly() {
    // asks for :path: the host must allocate 2 bytes; the allocator says 0
    let body =
        "(call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 68))";
    let p = plugin(
        &module("0_2_1", "(i32.const 0)", body, ""),
        Limits::default(),
    )
    .unwrap();
    let e = request(&p).unwrap_err();
    assert!(e.0.contains("returned 0"), "{e}");
}

#[test]
fn memory_cannot_grow_past_the_cap() {
    // grow by 100 pages (6.4 MiB) under a 2 MiB cap: memory.grow gives -1
    let body = "(if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then (return (i32.const 0)))) unreachable";
    let limits = Limits {
        memory: 2 << 20,
        ..Limits::default()
    };
    let p = plugin(&module("0_2_1", ALLOC, body, ""), limits).unwrap();
    assert_eq!(request(&p).unwrap(), GO_ON);
    // under a 64 MiB cap the same growth succeeds (and the module traps)
    let p = plugin(&module("0_2_1", ALLOC, body, ""), Limits::default()).unwrap();
    assert!(request(&p).is_err());
}

#[test]
fn a_module_that_refuses_its_configuration_does_not_start() {
    let refuse = module(
        "0_2_1",
        ALLOC,
        "(i32.const 0)",
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let e = plugin(&refuse, Limits::default()).err().unwrap();
    assert!(e.contains("refused its configuration"), "{e}");
}
