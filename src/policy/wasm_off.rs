//! `proxy-wasm` in a build without the `wasm` feature: the name is known,
//! and every use of it is a config error saying why.

pub use super::wasm_fields::FIELDS;
use super::Policy;
use crate::config::decode::Decoder;
use crate::config::yaml::Node;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Config;

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    d.error(
        node.pos,
        path,
        "custom policies (proxy-wasm) need a build with the `wasm` feature (this one was built with --no-default-features)",
    );
    None
}

struct Nothing;

impl Policy for Nothing {}

pub fn build(_c: &Config) -> Arc<dyn Policy> {
    Arc::new(Nothing)
}

pub fn describe(_c: &Config) -> Value {
    Value::Null
}
