//! OTLP/HTTP with protobuf: spans encoded as an `ExportTraceServiceRequest`
//! (opentelemetry-proto's `collector/trace/v1`, `trace/v1`, `common/v1`,
//! `resource/v1`), written field by field — a few dozen lines instead of a
//! protobuf code generator in the build. The test suite decodes what is
//! sent with the official definitions (tests/otlp_receiver.py).

use super::{Kind, SpanData, Value};
use crate::proto::Writer;

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value =
/// 1; bool_value = 2; int_value = 3; double_value = 4 }`.
fn attribute(w: &mut Writer, field: u32, key: &str, value: &Value) {
    w.message(field, |kv| {
        kv.string(1, key);
        kv.message(2, |v| match value {
            Value::Str(s) => v.bytes(1, s.as_bytes()),
            Value::Bool(b) => {
                v.key(2, 0);
                v.varint(u64::from(*b));
            }
            Value::Int(i) => {
                v.key(3, 0);
                v.varint(*i as u64);
            }
        });
    });
}

/// The request body for `POST /v1/traces`: one resource (the gateway), one
/// instrumentation scope, the spans.
pub fn encode(resource: &[(String, Value)], spans: &[SpanData]) -> Vec<u8> {
    let mut w = Writer::with_capacity(256 + spans.len() * 400);
    // ExportTraceServiceRequest.resource_spans = 1
    w.message(1, |rs| {
        // ResourceSpans.resource = 1 { attributes = 1 }
        rs.message(1, |r| {
            for (k, v) in resource {
                attribute(r, 1, k, v);
            }
        });
        // ResourceSpans.scope_spans = 2
        rs.message(2, |ss| {
            // ScopeSpans.scope = 1 { name = 1; version = 2 }
            ss.message(1, |scope| {
                scope.string(1, "flex-gateway");
                scope.string(2, env!("CARGO_PKG_VERSION"));
            });
            for s in spans {
                ss.message(2, |span| encode_span(span, s));
            }
        });
    });
    w.into_inner()
}

/// `Span`: trace_id = 1, span_id = 2, trace_state = 3, parent_span_id = 4,
/// name = 5, kind = 6, start = 7, end = 8, attributes = 9, status = 15
/// { message = 2; code = 3 }, flags = 16.
fn encode_span(w: &mut Writer, s: &SpanData) {
    w.bytes(1, &s.trace_id);
    w.bytes(2, &s.span_id);
    if let Some(state) = &s.trace_state {
        w.string(3, state);
    }
    if let Some(parent) = &s.parent {
        w.bytes(4, parent);
    }
    w.string(5, &s.name);
    w.uint(
        6,
        match s.kind {
            Kind::Internal => 1,
            Kind::Server => 2,
            Kind::Client => 3,
        },
    );
    w.fixed64(7, s.start_ns);
    w.fixed64(8, s.end_ns.max(s.start_ns));
    for (k, v) in &s.attributes {
        attribute(w, 9, k, v);
    }
    for (k, v) in &s.labels {
        attribute(w, 9, k, &Value::Str(v.clone()));
    }
    if s.error {
        w.message(15, |st| st.uint(3, 2)); // STATUS_CODE_ERROR
    }
    w.fixed32(16, u32::from(s.sampled)); // the W3C trace flags
}
