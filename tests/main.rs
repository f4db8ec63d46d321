//! Every integration test in one binary (one link, one compile of
//! `support`; the tests of all files share the test threads instead of
//! running file after file). `cargo test --release --test integration
//! <file>::` runs one file's tests, `... <name>` one test.
//!
//! Each test starts its own processes on free loopback ports, so tests of
//! different files run side by side as safely as those of one file.

mod support;

// the fuzz targets' checks (`make fuzz`), run over the corpus and as properties
#[path = "../fuzz/checks.rs"]
mod checks;

mod access;
mod assertions;
mod auth;
mod cache;
mod connections;
mod container;
mod ext_authz;
mod flex;
mod fuzz_corpus;
mod hardening;
mod jwt;
mod ldap;
mod logging;
mod openapi;
mod operations;
mod path_properties;
mod proxy;
mod rate_limit;
mod threat;
mod tls;
mod traffic;
mod validate;
mod walkthrough;
mod wasm;
mod websocket;
