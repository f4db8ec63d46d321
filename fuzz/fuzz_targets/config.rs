//! The configuration loader on arbitrary text: it never panics, and every
//! error it reports points at a line and column inside the text (or at the
//! file as a whole).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // secret references would read the environment and files: keep the
    // input to what a config file says by itself
    if text.contains("${") || text.contains("file:") {
        return;
    }
    if let Err(errors) = flex_gateway::config::load_str("fuzz.yaml", text) {
        assert!(!errors.0.is_empty(), "an error result lists its errors");
        let lines = text.lines().count().max(1) + 1;
        for e in &errors.0 {
            assert_eq!(e.file, "fuzz.yaml");
            assert!(e.pos.line <= lines, "{e} is past the end ({lines} lines)");
            assert!(!e.message.is_empty(), "{e} says nothing");
        }
    }
});
