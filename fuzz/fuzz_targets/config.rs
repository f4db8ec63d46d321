//! The configuration loader on arbitrary text: it never panics, and every
//! error it reports points at a line and column inside the text (or at the
//! file as a whole).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config(data));
