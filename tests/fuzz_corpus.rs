//! The fuzz corpus as a regression test: every input under `fuzz/corpus/`
//! (seeds, and what `make fuzz` found worth keeping) goes through the same
//! checks as the cargo-fuzz targets, in the normal suite, without a
//! sanitizer build.

use std::path::Path;

fn run(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}

#[test]
fn the_config_corpus_passes() {
    assert!(run("config", crate::checks::config) > 0);
}

#[test]
fn the_path_router_corpus_passes() {
    assert!(run("path_router", crate::checks::path_router) > 0);
}

#[test]
fn the_request_head_corpus_passes() {
    assert!(run("request_head", crate::checks::request_head) > 0);
}
