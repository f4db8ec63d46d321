//! `tracing` (Flex's `tracing-flex`): a route's own sampling, SERVER span
//! name and labels, over the server's tracing (`spec.server.tracing`, or
//! Flex's `Configuration.spec.tracing`), which must be configured.
//!
//! ```yaml
//! - tracing:
//!     sampling: {client: 100, random: 5, overall: 100}
//!     spanName: orders
//!     labels:
//!       - {name: team, type: literal, defaultValue: payments}
//!       - {name: tenant, type: requestHeader, keyName: x-tenant, defaultValue: none}
//! ```
//!
//! The route applies it whatever the policy's place in the chain (a
//! policy before it that answers is traced by these rules too); the
//! proxy reads it from the route, so the policy itself does nothing per
//! request. A sampled parent (`traceparent`) is still followed.

use super::Policy;
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, STR};
use crate::config::model::{LabelValue, TraceOverride};
use crate::config::tracing::{LABEL_FIELDS, SAMPLING_FIELDS};
use crate::config::yaml::Node;
use serde_json::{json, Value};
use std::sync::Arc;

pub const FIELDS: &[Field] = &[
    f("sampling", Ty::Obj(SAMPLING_FIELDS))
        .doc("This route's sampling (each percentage 100 unless given)."),
    f("spanName", STR).doc("The SERVER span's name (default: `{method} {route}`)."),
    f("labels", Ty::List(&Ty::Obj(LABEL_FIELDS), false))
        .doc("Span attributes, added to the server's (a name given there is replaced)."),
];

pub type Config = TraceOverride;

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let sampling = f
        .get("sampling")
        .and_then(|n| crate::config::tracing::sampling(d, n, &join(path, "sampling")));
    let span_name = f
        .get("spanName")
        .and_then(|n| d.string(n, &join(path, "spanName")));
    let labels = match f.get("labels") {
        Some(n) => crate::config::tracing::labels(d, n, &join(path, "labels")).unwrap_or_default(),
        None => Vec::new(),
    };
    (d.errors.len() == before).then_some(TraceOverride {
        sampling,
        span_name,
        labels,
    })
}

pub fn describe(c: &Config) -> Value {
    let pct = |v: u32| f64::from(v) / 10_000.0;
    json!({
        "sampling": c.sampling.map(|s| json!({
            "client": pct(s.client), "random": pct(s.random), "overall": pct(s.overall)
        })),
        "spanName": c.span_name,
        "labels": c.labels.iter().map(|l| match &l.value {
            LabelValue::Fixed(v) => json!({"name": l.name, "value": v}),
            LabelValue::Header { name, default } =>
                json!({"name": l.name, "requestHeader": name, "defaultValue": default}),
        }).collect::<Vec<_>>(),
    })
}

/// Nothing per request: the proxy reads the route's override.
struct Tracing;

#[async_trait::async_trait]
impl Policy for Tracing {}

pub fn build(_c: &Config) -> Arc<dyn Policy> {
    Arc::new(Tracing)
}
