//! The Flex Gateway Local Mode front-end: `ApiInstance`, `Service`,
//! `PolicyBinding` and `Configuration` resources, decoded with every
//! problem reported (`resources.rs`), then compiled (`compile.rs`) into
//! the same documents the `kind: Gateway` front-end produces, so both
//! formats end in one model and every operational feature serves both.
//!
//! What Flex documents and how we read it: `../shared/FLEX-LOCAL-MODE.md`
//! and docs/flex-local-mode.md.

pub mod catalog;
pub mod compile;
pub mod configuration;
pub mod expr;
pub mod extension;
mod instance;
pub mod resources;

pub use compile::compile;
pub use resources::{decode_resource, Resource};

/// The resource kinds of Flex Local Mode.
pub const KINDS: &[&str] = &[
    "ApiInstance",
    "Service",
    "PolicyBinding",
    "Configuration",
    "Extension",
];

/// The API versions Flex's examples use.
pub const API_VERSIONS: &[&str] = &[
    "gateway.mulesoft.com/v1alpha1",
    "gateway.mulesoft.com/v1beta1",
];

#[cfg(test)]
mod tests;
