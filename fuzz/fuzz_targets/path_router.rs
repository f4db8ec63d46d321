//! The path normaliser and the router on arbitrary paths: no panic; a
//! normalised path normalises to itself, has no dot segment and no empty
//! segment, and routes like its percent-encoded spelling.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::path_router(data));
