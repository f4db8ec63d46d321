//! Tracing settings as users write them: `spec.server.tracing` of a
//! `kind: Gateway` document, Flex's `Configuration.spec.tracing` (its
//! `provider.properties`, with `sampling` and `labels` under `tracing` or
//! beside it), and the sampling and labels the `tracing` / `tracing-flex`
//! policies override per route (docs/observability.md).

use super::decode::{join, Decoder, Fields};
use super::fields::{f, Field, Ty, BOOL, DURATION, STR};
use super::model::{LabelValue, OtlpProtocol, Sampling, TraceLabel, TracingSettings};
use super::yaml::Node;
use std::time::Duration;

pub const FIELDS: &[Field] = &[
    f("endpoint", Ty::Url("the collector's URL"))
        .req()
        .doc("OTLP/HTTP: the traces URL (http://collector:4318/v1/traces); gRPC: http(s)://collector:4317."),
    f("protocol", Ty::Enum(&["http", "grpc"]))
        .default("\"http\"")
        .doc("OTLP over HTTP with protobuf, or OTLP/gRPC."),
    f("serviceName", STR).default("\"flex-gateway\""),
    f("sampling", Ty::Obj(SAMPLING_FIELDS)),
    f("labels", Ty::List(&Ty::Obj(LABEL_FIELDS), false))
        .doc("Attributes of every request's SERVER span."),
    f("headers", Ty::Dict(&Ty::Str)).doc("Headers sent to the collector (e.g. authentication)."),
    f("resourceAttributes", Ty::Dict(&Ty::Scalar)),
    f("timeout", DURATION).default("\"10s\""),
    f("maxQueueSize", Ty::Int(1, 1_000_000))
        .default("2048")
        .doc("Spans waiting for export; more are dropped (counted)."),
    f("maxExportBatchSize", Ty::Int(1, 100_000)).default("512"),
    f("scheduledDelay", DURATION)
        .default("\"1s\"")
        .doc("The longest a span waits for its batch."),
    f("responseHeader", Ty::Name("a header name"))
        .doc("Answer the request's traceparent in this response header."),
    f("policySpans", BOOL)
        .default("false")
        .doc("A child span per policy run on the request (they cost: off by default)."),
];

pub const SAMPLING_FIELDS: &[Field] = &[
    f("client", Ty::Number(0.0, 100.0))
        .default("100")
        .doc("Percent of requests with x-client-trace-id traced."),
    f("random", Ty::Number(0.0, 100.0))
        .default("100")
        .doc("Percent of the other requests (or those the client draw missed) traced."),
    f("overall", Ty::Number(0.0, 100.0))
        .default("100")
        .doc("Percent of what the draws above chose that is traced."),
];

pub const LABEL_FIELDS: &[Field] = &[
    f("name", Ty::Name("an attribute name"))
        .req()
        .doc("The span attribute's name."),
    f("type", Ty::Enum(&["literal", "environment", "requestHeader"])).req(),
    f("keyName", Ty::Name("a variable or header name"))
        .doc("The environment variable or request header (`:method`, `:path`, `:authority`, `:scheme` too)."),
    f("defaultValue", Ty::Scalar).doc("The value of a literal; else used when the source is absent."),
];

/// Flex's `Configuration.spec.tracing`.
pub const FLEX_FIELDS: &[Field] = &[
    f("provider", Ty::Obj(FLEX_PROVIDER)).req(),
    f("sampling", Ty::Obj(SAMPLING_FIELDS)),
    f("labels", Ty::List(&Ty::Obj(LABEL_FIELDS), false)),
];
const FLEX_PROVIDER: &[Field] = &[
    f("type", Ty::AnyCase(&["opentelemetry", "anypoint"])).req(),
    f("properties", Ty::Obj(FLEX_PROPERTIES)),
];
const FLEX_PROPERTIES: &[Field] = &[
    f("address", Ty::Text("the collector's address"))
        .doc("h2://collector:4317 (gRPC), http(s)://collector:4318 (OTLP/HTTP)."),
    f("serviceType", Ty::AnyCase(&["grpc", "http"])),
    f("tracesUri", Ty::Text("a path"))
        .default("\"/v1/traces\"")
        .doc("OTLP/HTTP: the path on the address."),
    f("serviceName", STR).default("\"flex-gateway\""),
    f("timeout", Ty::Duration(true)).default("\"10s\""),
    f("httpHeaders", Ty::Dict(&Ty::Str)),
    f("resourceAttributes", Ty::Dict(&Ty::Scalar)),
];

/// A percentage (0 to 100, decimals allowed) in millionths.
fn percent(d: &mut Decoder, n: &Node, path: &str) -> Option<u32> {
    let text = d.scalar(n, path, "a percentage")?;
    let quoted = matches!(n.value, super::yaml::Value::Scalar { quoted: true, .. });
    match text.parse::<f64>() {
        Ok(p) if !quoted && (0.0..=100.0).contains(&p) => Some((p * 10_000.0).round() as u32),
        _ => {
            d.error(
                n.pos,
                path,
                format!("expected a percentage from 0 to 100, found {}", n.kind()),
            );
            None
        }
    }
}

/// `sampling: {client, random, overall}`; an absent one is 100.
pub fn sampling(d: &mut Decoder, n: &Node, path: &str) -> Option<Sampling> {
    let g = d.map(n, path, SAMPLING_FIELDS)?;
    let before = d.errors.len();
    let mut s = Sampling::default();
    for (key, slot) in [
        ("client", &mut s.client),
        ("random", &mut s.random),
        ("overall", &mut s.overall),
    ] {
        if let Some(v) = g.get(key).and_then(|n| percent(d, n, &join(path, key))) {
            *slot = v;
        }
    }
    (d.errors.len() == before).then_some(s)
}

/// `labels: [{name, type, keyName, defaultValue}]`. An `environment`
/// label is read now (at load); one whose variable is unset and that has
/// no default is left out.
pub fn labels(d: &mut Decoder, n: &Node, path: &str) -> Option<Vec<TraceLabel>> {
    let before = d.errors.len();
    let mut out: Vec<TraceLabel> = Vec::new();
    for (item, at) in d.items(n, path, false) {
        let Some(g) = d.map(item, &at, LABEL_FIELDS) else {
            continue;
        };
        let name = d
            .required(&g, "name", &at)
            .and_then(|n| d.string(n, &join(&at, "name")));
        let kind = d
            .required(&g, "type", &at)
            .and_then(|n| d.scalar(n, &join(&at, "type"), "a label type"))
            .map(str::to_string);
        let key = g
            .get("keyName")
            .and_then(|n| d.string(n, &join(&at, "keyName")));
        let default = g
            .get("defaultValue")
            .and_then(|n| d.scalar(n, &join(&at, "defaultValue"), "a value"))
            .map(str::to_string);
        let (Some(name), Some(kind)) = (name, kind) else {
            continue;
        };
        let need_key = |d: &mut Decoder| {
            if key.is_none() {
                d.error(
                    item.pos,
                    &join(&at, "keyName"),
                    format!("a {kind} label needs `keyName`"),
                );
            }
            key.clone()
        };
        let value = match kind.as_str() {
            "literal" => match &default {
                Some(v) => Some(LabelValue::Fixed(v.clone())),
                None => {
                    d.error(
                        item.pos,
                        &join(&at, "defaultValue"),
                        "a literal label needs `defaultValue` (its value)",
                    );
                    continue;
                }
            },
            "environment" => {
                let Some(var) = need_key(d) else { continue };
                std::env::var(&var).ok().or(default).map(LabelValue::Fixed)
            }
            "requestHeader" => {
                let Some(header) = need_key(d) else { continue };
                let header = header.to_ascii_lowercase();
                let pseudo = [":method", ":path", ":authority", ":scheme"];
                if !pseudo.contains(&header.as_str())
                    && http::HeaderName::from_bytes(header.as_bytes()).is_err()
                {
                    d.error(
                        item.pos,
                        &join(&at, "keyName"),
                        format!("{header:?} is not a header name"),
                    );
                    continue;
                }
                Some(LabelValue::Header {
                    name: header,
                    default,
                })
            }
            other => {
                d.error(
                    item.pos,
                    &join(&at, "type"),
                    format!("{other:?}: expected literal, environment or requestHeader"),
                );
                continue;
            }
        };
        if out.iter().any(|l| l.name == name) {
            d.error(
                item.pos,
                &join(&at, "name"),
                format!("label {name:?} is given twice"),
            );
            continue;
        }
        if let Some(value) = value {
            out.push(TraceLabel { name, value });
        }
    }
    (d.errors.len() == before).then_some(out)
}

/// `key: value` pairs (headers, resource attributes).
fn pairs(d: &mut Decoder, f: &Fields, key: &str, path: &str) -> Vec<(String, String)> {
    let Some(n) = f.get(key) else {
        return Vec::new();
    };
    let field = join(path, key);
    let Some(m) = d.map_any(n, &field) else {
        return Vec::new();
    };
    m.keys()
        .filter_map(|(k, v)| {
            Some((
                k.to_string(),
                d.scalar(v, &join(&field, k), "a string")?.to_string(),
            ))
        })
        .collect()
}

/// Headers for the collector: each a valid header (gRPC metadata is lower case).
fn headers(d: &mut Decoder, f: &Fields, key: &str, path: &str) -> Vec<(String, String)> {
    let list = pairs(d, f, key, path);
    for (k, v) in &list {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            d.error(f.pos, &join(&join(path, key), k), "not a valid header");
        }
    }
    list.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// A gRPC collector's URL: `http(s)://host:port` and nothing after it.
fn grpc_endpoint(d: &mut Decoder, n: &Node, path: &str, url: &str) -> Option<String> {
    let u: http::Uri = url.parse().ok()?;
    if !matches!(u.path(), "" | "/") || u.query().is_some() {
        d.error(
            n.pos,
            path,
            format!("{url:?}: a gRPC collector is a host and port (http://collector:4317), without a path"),
        );
        return None;
    }
    if u.port_u16().is_none() {
        d.error(
            n.pos,
            path,
            format!("{url:?}: give the gRPC collector's port (OTLP/gRPC's is 4317)"),
        );
        return None;
    }
    Some(format!("{}://{}", u.scheme_str()?, u.authority()?))
}

/// `spec.server.tracing` (docs/observability.md).
pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<TracingSettings> {
    // `${ENV}` and `file:` in the collector's headers (tokens)
    let node = d.resolve_references(node, path);
    let f = d.map(&node, path, FIELDS)?;
    let before = d.errors.len();
    let protocol = match f.get("protocol") {
        Some(n) => match d.scalar(n, &join(path, "protocol"), "http or grpc") {
            Some("http") => Some(OtlpProtocol::Http),
            Some("grpc") => Some(OtlpProtocol::Grpc),
            Some(other) => {
                d.error(
                    n.pos,
                    &join(path, "protocol"),
                    format!("{other:?}: expected http or grpc"),
                );
                None
            }
            None => None,
        },
        None => Some(OtlpProtocol::Http),
    };
    let endpoint = d.required(&f, "endpoint", path).and_then(|n| {
        let field = join(path, "endpoint");
        let url = d.http_url(n, &field, Some("http://127.0.0.1:4318/v1/traces"))?;
        match protocol {
            Some(OtlpProtocol::Grpc) => grpc_endpoint(d, n, &field, &url),
            _ => Some(url),
        }
    });
    let service_name = f
        .get("serviceName")
        .and_then(|n| d.string(n, &join(path, "serviceName")))
        .unwrap_or_else(|| "flex-gateway".to_string());
    let sampling = match f.get("sampling") {
        Some(n) => sampling(d, n, &join(path, "sampling")),
        None => Some(Sampling::default()),
    };
    let labels = match f.get("labels") {
        Some(n) => labels(d, n, &join(path, "labels")),
        None => Some(Vec::new()),
    };
    let headers = headers(d, &f, "headers", path);
    let resource = pairs(d, &f, "resourceAttributes", path);
    let duration = |d: &mut Decoder, key: &str, dflt: Duration| match f.get(key) {
        Some(n) => d.duration(n, &join(path, key), false),
        None => Some(dflt),
    };
    let timeout = duration(d, "timeout", DEFAULT_TIMEOUT);
    let delay = duration(d, "scheduledDelay", crate::trace::DEFAULT_DELAY);
    let int = |d: &mut Decoder, key: &str, dflt: i64, max: i64| match f.get(key) {
        Some(n) => d.int(n, &join(path, key), 1, max),
        None => Some(dflt),
    };
    let max_queue = int(d, "maxQueueSize", 2048, 1_000_000);
    let batch_size = int(d, "maxExportBatchSize", 512, 100_000);
    let policy_spans = match f.get("policySpans") {
        Some(n) => d.bool(n, &join(path, "policySpans")),
        None => Some(false),
    };
    let response_header = match f.get("responseHeader") {
        Some(n) => {
            crate::policy::common::header_name(d, n, &join(path, "responseHeader")).map(Some)
        }
        None => Some(None),
    };
    if d.errors.len() > before {
        return None;
    }
    Some(TracingSettings {
        endpoint: endpoint?,
        protocol: protocol?,
        service_name,
        sampling: sampling?,
        labels: labels?,
        headers,
        resource,
        timeout: timeout?,
        max_queue: max_queue? as usize,
        batch_size: batch_size? as usize,
        delay: delay?,
        response_header: response_header?,
        policy_spans: policy_spans?,
    })
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flex's `Configuration.spec.tracing`; `beside`: the `sampling` and
/// `labels` keys of the same `spec` (Flex's documents show both
/// placements). `Some(None)`: valid, nothing to export (the `anypoint`
/// provider, which needs Anypoint Platform: said in `not_applied`).
pub fn decode_flex(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    beside: (Option<&Node>, Option<&Node>),
    not_applied: &mut Vec<String>,
) -> Option<Option<TracingSettings>> {
    let node = d.resolve_references(node, path);
    let f = d.map(&node, path, FLEX_FIELDS)?;
    let before = d.errors.len();
    // one placement each
    let placed = |d: &mut Decoder, key: &str, outer: Option<&Node>| -> Option<Node> {
        match (f.get(key), outer) {
            (Some(inner), Some(o)) => {
                d.error(
                    o.pos,
                    &format!("spec.{key}"),
                    format!(
                        "`{key}` is given both here and under `tracing` ({}:{}): keep one",
                        inner.pos.line, inner.pos.col
                    ),
                );
                None
            }
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        }
    };
    let sampling_node = placed(d, "sampling", beside.0);
    let labels_node = placed(d, "labels", beside.1);
    let sampling = match &sampling_node {
        Some(n) => sampling(d, n, &join(path, "sampling")),
        None => Some(Sampling::default()),
    };
    let labels = match &labels_node {
        Some(n) => labels(d, n, &join(path, "labels")),
        None => Some(Vec::new()),
    };
    let provider_path = join(path, "provider");
    let provider = d
        .required(&f, "provider", path)
        .and_then(|n| d.map(n, &provider_path, FLEX_PROVIDER));
    let provider = provider?;
    let kind = d
        .required(&provider, "type", &provider_path)
        .and_then(|n| d.scalar(n, &join(&provider_path, "type"), "a provider type"))
        .map(str::to_ascii_lowercase);
    let props_path = join(&provider_path, "properties");
    let props = match provider.get("properties") {
        Some(n) => d.map(n, &props_path, FLEX_PROPERTIES),
        None => None,
    };
    match kind.as_deref() {
        Some("opentelemetry") => {}
        Some("anypoint") => {
            not_applied.push(format!(
                "{provider_path}.type anypoint (Anypoint Monitoring needs Connected Mode; use type opentelemetry to export traces)"
            ));
            return (d.errors.len() == before).then_some(None);
        }
        Some(other) => {
            d.error(
                provider.pos,
                &join(&provider_path, "type"),
                format!("{other:?}: expected opentelemetry or anypoint"),
            );
            return None;
        }
        None => return None,
    }
    let Some(props) = props else {
        if provider.get("properties").is_none() {
            d.error(
                provider.pos,
                &props_path,
                "an opentelemetry provider needs `properties.address` (its collector)",
            );
        }
        return None;
    };
    let service_type = props.get("serviceType").and_then(|n| {
        let at = join(&props_path, "serviceType");
        let t = d.scalar(n, &at, "grpc or http")?.to_ascii_lowercase();
        if t != "grpc" && t != "http" {
            d.error(n.pos, &at, format!("{t:?}: expected grpc or http"));
        }
        Some(t)
    });
    let address_path = join(&props_path, "address");
    let endpoint = d.required(&props, "address", &props_path).and_then(|n| {
        let text = d.string(n, &address_path)?;
        flex_endpoint(d, n, &address_path, &text, service_type.as_deref(), || {
            props
                .get("tracesUri")
                .map(|t| (t, join(&props_path, "tracesUri")))
        })
    });
    let service_name = props
        .get("serviceName")
        .and_then(|n| d.string(n, &join(&props_path, "serviceName")))
        .unwrap_or_else(|| "flex-gateway".to_string());
    let timeout = match props.get("timeout") {
        Some(n) => d.duration(n, &join(&props_path, "timeout"), true),
        None => Some(DEFAULT_TIMEOUT),
    };
    let headers = headers(d, &props, "httpHeaders", &props_path);
    let resource = pairs(d, &props, "resourceAttributes", &props_path);
    if d.errors.len() > before {
        return None;
    }
    let (endpoint, protocol) = endpoint?;
    Some(Some(TracingSettings {
        endpoint,
        protocol,
        service_name,
        sampling: sampling?,
        labels: labels?,
        headers,
        resource,
        timeout: timeout?,
        max_queue: 2048,
        batch_size: 512,
        delay: crate::trace::DEFAULT_DELAY,
        response_header: None,
        policy_spans: false,
    }))
}

/// Flex's `address` (+ `serviceType`, `tracesUri`) as our endpoint:
/// `h2://host:4317` is gRPC over cleartext HTTP/2; `http(s)://` is OTLP/HTTP
/// unless `serviceType: grpc` says gRPC; a bare `host:port` is taken as
/// `http://host:port`.
fn flex_endpoint<'n>(
    d: &mut Decoder,
    n: &Node,
    path: &str,
    address: &str,
    service_type: Option<&str>,
    traces_uri: impl FnOnce() -> Option<(&'n Node, String)>,
) -> Option<(String, OtlpProtocol)> {
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), address),
    };
    let url = match scheme.as_str() {
        "h2" | "http" => format!("http://{rest}"),
        "https" => format!("https://{rest}"),
        _ => String::new(),
    };
    let parsed = url
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.authority().is_some());
    let Some(u) = parsed else {
        d.error(
            n.pos,
            path,
            format!("{address:?} is not a collector address (examples: h2://collector:4317 for gRPC, http://collector:4318 for OTLP/HTTP)"),
        );
        return None;
    };
    let protocol = match (scheme.as_str(), service_type) {
        ("h2", Some("http")) => {
            d.error(
                n.pos,
                path,
                "h2:// is a gRPC address; give serviceType: grpc, or an http(s):// address for OTLP/HTTP",
            );
            return None;
        }
        ("h2", _) | (_, Some("grpc")) => OtlpProtocol::Grpc,
        _ => OtlpProtocol::Http,
    };
    let authority = u.authority()?.as_str();
    let scheme = u.scheme_str()?;
    match protocol {
        OtlpProtocol::Grpc => {
            grpc_endpoint(d, n, path, &url)?;
            Some((format!("{scheme}://{authority}"), protocol))
        }
        OtlpProtocol::Http => {
            let path_given = !matches!(u.path(), "" | "/");
            let traces = match traces_uri() {
                Some((t, at)) => {
                    let p = d.string(t, &at)?;
                    if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                        d.error(
                            t.pos,
                            &at,
                            format!("{p:?} is not a path (example: /v1/traces)"),
                        );
                        return None;
                    }
                    p
                }
                None if path_given => u.path_and_query()?.as_str().to_string(),
                None => "/v1/traces".to_string(),
            };
            Some((format!("{scheme}://{authority}{traces}"), protocol))
        }
    }
}
