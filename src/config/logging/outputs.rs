//! An output's type and its Fluent Bit parameters (any letter case),
//! checked and turned into a [`Sink`]: `file`, `http`, `stdout`, `syslog`.

use super::{
    DateFormat, DateKey, FileFormat, JsonFormat, LogOutput, RecordField, Sink, TemplatePiece,
};
use crate::config::decode::{join, suggest, Decoder};
use crate::config::fields::{f, Field, Ty, STR};
use crate::config::yaml::{Node, Pos, Value};
use std::path::PathBuf;

pub(super) const OUTPUT_FIELDS: &[Field] = &[
    f("name", STR).req(),
    f("type", Ty::AnyCase(TYPES)).req(),
    f("parameters", Ty::AnyCaseKeys(PARAMS))
        .doc("Fluent Bit's parameters of the type (any letter case)."),
];
/// Every type's parameters, for the JSON Schema (which type takes which is
/// `validate`'s to say).
const FLAG: Ty = Ty::Either(&[
    Ty::Bool,
    Ty::AnyCase(&["on", "off", "true", "false", "yes", "no"]),
]);
/// What [`RecordField::parse`] reads.
const RECORD_FIELDS: &[&str] = &[
    "time",
    "date",
    "timestamp",
    "logger",
    "runtime",
    "level",
    "loglevel",
    "kind",
    "message",
    "log",
];
const PARAMS: &[Field] = &[
    f("path", Ty::Text("a folder")),
    f("file", Ty::Text("a file name, or an absolute path")),
    f(
        "format",
        Ty::AnyCase(&[
            "plain",
            "json_lines",
            "template",
            "csv",
            "ltsv",
            "json",
            "json_stream",
        ]),
    ),
    f(
        "template",
        Ty::Text("text with {time} {logger} {level} {kind} {message}"),
    ),
    f("delimiter", STR),
    f("label_delimiter", STR),
    f("mkdir", FLAG),
    f("json_date_key", Ty::Scalar),
    f(
        "json_date_format",
        Ty::AnyCase(&["double", "epoch", "iso8601", "java_sql_timestamp"]),
    ),
    f("host", Ty::Text("a host name or address")),
    f("port", Ty::Int(1, 65535)),
    f("uri", Ty::Text("a path")),
    f("header", Ty::List(&Ty::Text("Name value"), true)),
    f("http_user", STR),
    f("http_passwd", STR),
    f("tls", FLAG),
    f("tls.verify", FLAG),
    f("retry_limit", Ty::Int(0, 10)),
    f("mode", Ty::AnyCase(&["udp", "tcp"])),
    f("syslog_format", Ty::AnyCase(&["rfc5424", "rfc3164"])),
    f("syslog_maxsize", Ty::Int(128, 65_000)),
    f("syslog_message_key", Ty::Enum(RECORD_FIELDS)),
    f("syslog_appname_key", Ty::Enum(RECORD_FIELDS)),
    f("syslog_facility_preset", Ty::Int(0, 23)),
    f("syslog_severity_preset", Ty::Int(0, 7)),
    f("match", Ty::Scalar),
    f("match_regex", Ty::Scalar),
    f("alias", Ty::Scalar),
    f("workers", Ty::Scalar),
];
const TYPES: &[&str] = &["file", "http", "stdout", "syslog"];

/// Fluent Bit's output types we do not write to, for a clear message.
const OTHER_TYPES: &[&str] = &[
    "azure",
    "azure_blob",
    "bigquery",
    "cloudwatch_logs",
    "counter",
    "datadog",
    "es",
    "exit",
    "flowcounter",
    "forward",
    "gelf",
    "influxdb",
    "kafka",
    "kafka-rest",
    "kinesis_firehose",
    "kinesis_streams",
    "logdna",
    "loki",
    "nats",
    "new_relic",
    "null",
    "opensearch",
    "opentelemetry",
    "plot",
    "pgsql",
    "prometheus_exporter",
    "prometheus_remote_write",
    "s3",
    "skywalking",
    "slack",
    "splunk",
    "stackdriver",
    "tcp",
    "td",
    "websocket",
];

/// The parameters of each type (lower case: Fluent Bit's keys are not case
/// sensitive). `match`, `alias` and `workers` are Fluent Bit's pipeline
/// settings: accepted, without meaning here.
const PIPELINE: &[&str] = &["match", "match_regex", "alias", "workers"];
const FILE_PARAMS: &[&str] = &[
    "path",
    "file",
    "format",
    "template",
    "delimiter",
    "label_delimiter",
    "mkdir",
];
const STDOUT_PARAMS: &[&str] = &["format", "json_date_key", "json_date_format"];
const HTTP_PARAMS: &[&str] = &[
    "host",
    "port",
    "uri",
    "format",
    "json_date_key",
    "json_date_format",
    "header",
    "http_user",
    "http_passwd",
    "tls",
    "tls.verify",
    "retry_limit",
];
const SYSLOG_PARAMS: &[&str] = &[
    "host",
    "port",
    "mode",
    "syslog_format",
    "syslog_maxsize",
    "syslog_message_key",
    "syslog_appname_key",
    "syslog_facility_preset",
    "syslog_severity_preset",
];

/// A parameter as written: its value's text and position.
struct Param<'n> {
    key: String,
    text: &'n str,
    pos: Pos,
    node: &'n Node,
}

/// The `parameters` mapping, keys lower-cased, checked against `known`.
fn params<'n>(
    d: &mut Decoder,
    node: Option<&'n Node>,
    at: &str,
    ty: &str,
    known: &[&str],
) -> Vec<Param<'n>> {
    let Some(node) = node else { return Vec::new() };
    let Value::Map(pairs) = &node.value else {
        d.error(
            node.pos,
            at,
            format!("expected a mapping, found {}", node.kind()),
        );
        return Vec::new();
    };
    let mut out: Vec<Param> = Vec::new();
    for (k, v) in pairs {
        let Value::Scalar { text: key, .. } = &k.value else {
            continue;
        };
        let lower = key.to_ascii_lowercase();
        let kp = join(at, key);
        if !known.contains(&lower.as_str()) && !PIPELINE.contains(&lower.as_str()) {
            let hint = suggest(&lower, known)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_else(|| format!(" ({ty} takes: {})", known.join(", ")));
            d.error(
                k.pos,
                &kp,
                format!("unknown parameter {key:?} of a {ty} output{hint}"),
            );
            continue;
        }
        if out.iter().any(|p| p.key == lower) {
            d.error(k.pos, &kp, format!("parameter {key:?} is given twice"));
            continue;
        }
        let text = match &v.value {
            Value::Scalar { text, .. } => text.as_str(),
            // `header` may be a list of "Name value"
            Value::Seq(_) if lower == "header" => "",
            _ => {
                d.error(v.pos, &kp, format!("expected a value, found {}", v.kind()));
                continue;
            }
        };
        out.push(Param {
            key: lower,
            text,
            pos: v.pos,
            node: v,
        });
    }
    out
}

fn get<'a, 'n>(ps: &'a [Param<'n>], key: &str) -> Option<&'a Param<'n>> {
    ps.iter().find(|p| p.key == key)
}

/// Fluent Bit's booleans: on/off, true/false, yes/no.
fn flag(d: &mut Decoder, p: &Param, at: &str) -> Option<bool> {
    match p.text.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Some(true),
        "off" | "false" | "no" => Some(false),
        other => {
            d.error(p.pos, at, format!("{other:?}: expected on or off"));
            None
        }
    }
}

/// A parameter that is one of `options` (any letter case); `default`
/// when it is not given.
fn choice<T: Copy>(
    d: &mut Decoder,
    ps: &[Param],
    pp: &str,
    key: &str,
    options: &[(&str, T)],
    default: T,
) -> Option<T> {
    let Some(p) = get(ps, key) else {
        return Some(default);
    };
    let v = p.text.to_ascii_lowercase();
    match options.iter().find(|(name, _)| *name == v) {
        Some((_, t)) => Some(*t),
        None => {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            d.error(
                p.pos,
                &join(pp, key),
                format!("{key} {v:?} is not supported ({})", names.join(", ")),
            );
            None
        }
    }
}

fn number(d: &mut Decoder, p: &Param, at: &str, min: u64, max: u64) -> Option<u64> {
    let quoted = matches!(p.node.value, Value::Scalar { quoted: true, .. });
    match p.text.parse::<u64>() {
        Ok(n) if !quoted && (min..=max).contains(&n) => Some(n),
        _ => {
            d.error(
                p.pos,
                at,
                format!("{:?}: expected a whole number from {min} to {max}", p.text),
            );
            None
        }
    }
}

pub(super) fn output(d: &mut Decoder, node: &Node, at: &str) -> Option<LogOutput> {
    let g = d.map(node, at, OUTPUT_FIELDS)?;
    let name_node = d.required(&g, "name", at)?;
    let name = d.string(name_node, &join(at, "name"))?;
    let ty_node = d.required(&g, "type", at)?;
    let tp = join(at, "type");
    let ty = d
        .scalar(ty_node, &tp, "an output type")?
        .to_ascii_lowercase();
    let pp = join(at, "parameters");
    let before = d.errors.len();
    let sink = match ty.as_str() {
        "file" => {
            let ps = params(d, g.get("parameters"), &pp, "file", FILE_PARAMS);
            file(d, &ps, &pp, node.pos)
        }
        "stdout" => {
            let ps = params(d, g.get("parameters"), &pp, "stdout", STDOUT_PARAMS);
            let format = json_format(d, &ps, &pp);
            let date = date_key(d, &ps, &pp);
            Some(Sink::Stdout { format, date })
        }
        "http" => {
            let ps = params(d, g.get("parameters"), &pp, "http", HTTP_PARAMS);
            http(d, &ps, &pp)
        }
        "syslog" => {
            let ps = params(d, g.get("parameters"), &pp, "syslog", SYSLOG_PARAMS);
            syslog(d, &ps, &pp)
        }
        other => {
            let why = if OTHER_TYPES.contains(&other) {
                format!("Fluent Bit's {other:?} output is not supported")
            } else {
                format!("unknown output type {other:?}")
            };
            d.error(
                ty_node.pos,
                &tp,
                format!(
                    "{why} (supported: {}; ship to anything else from a file or syslog output)",
                    TYPES.join(", ")
                ),
            );
            None
        }
    };
    let sink = sink.filter(|_| d.errors.len() == before)?;
    Some(LogOutput { name, sink })
}

/// `path` (a folder) + `file` (a name), Fluent Bit's form, or `file` as an
/// absolute path, Flex's docs' form.
fn file(d: &mut Decoder, ps: &[Param], pp: &str, pos: Pos) -> Option<Sink> {
    let dir = get(ps, "path").map(|p| PathBuf::from(p.text));
    let path = match (dir, get(ps, "file")) {
        (Some(dir), Some(f)) if !f.text.is_empty() => dir.join(f.text),
        (None, Some(f)) if f.text.starts_with('/') => PathBuf::from(f.text),
        (None, Some(f)) => {
            d.error(
                f.pos,
                &join(pp, "file"),
                format!(
                    "{:?} is relative: give an absolute path, or the folder as `path`",
                    f.text
                ),
            );
            return None;
        }
        (Some(dir), None) => dir.join("flex-gateway.log"),
        _ => {
            d.error(
                pos,
                pp,
                "a file output needs `file` (an absolute path) or `path` and `file`",
            );
            return None;
        }
    };
    if !path.is_absolute() {
        d.error(
            pos,
            &join(pp, "path"),
            format!("{} is relative: give an absolute path", path.display()),
        );
        return None;
    }
    let mkdir = match get(ps, "mkdir") {
        Some(p) => flag(d, p, &join(pp, "mkdir"))?,
        None => false,
    };
    let delimiter = |d: &mut Decoder, key: &str, default: &str| -> String {
        match get(ps, key) {
            None => default.to_string(),
            Some(p) => match p.text.to_ascii_lowercase().as_str() {
                "space" => " ".into(),
                "comma" => ",".into(),
                "tab" => "\t".into(),
                _ if !p.text.is_empty() => p.text.to_string(),
                _ => {
                    d.error(p.pos, &join(pp, key), "must not be empty");
                    default.to_string()
                }
            },
        }
    };
    let fp = join(pp, "format");
    let format = match get(ps, "format").map(|p| (p, p.text.to_ascii_lowercase())) {
        None => FileFormat::Plain,
        Some((_, f)) if f == "plain" || f == "json_lines" => FileFormat::Plain,
        Some((_, f)) if f == "template" => {
            let t = get(ps, "template").map(|p| (p.text, p.pos));
            FileFormat::Template(template(d, t, &join(pp, "template"))?)
        }
        Some((_, f)) if f == "csv" => FileFormat::Csv(delimiter(d, "delimiter", ",")),
        Some((_, f)) if f == "ltsv" => FileFormat::Ltsv {
            delimiter: delimiter(d, "delimiter", "\t"),
            label: delimiter(d, "label_delimiter", ":"),
        },
        Some((p, f)) => {
            d.error(
                p.pos,
                &fp,
                format!("file format {f:?} is not supported (plain, template, csv, ltsv)"),
            );
            return None;
        }
    };
    if get(ps, "template").is_some() && !matches!(format, FileFormat::Template(_)) {
        let p = get(ps, "template").map(|p| p.pos).unwrap_or(pos);
        d.error(
            p,
            &join(pp, "template"),
            "a template needs `format: template`",
        );
    }
    Some(Sink::File {
        path,
        format,
        mkdir,
    })
}

/// `{field}` variables in text; Fluent Bit's default is `{time} {message}`.
fn template(d: &mut Decoder, t: Option<(&str, Pos)>, at: &str) -> Option<Vec<TemplatePiece>> {
    let (text, pos) = t.unwrap_or(("{time} {message}", Pos::default()));
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(TemplatePiece::Text(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            d.error(pos, at, format!("{text:?}: a `{{` is not closed"));
            return None;
        };
        let name = &rest[open + 1..open + close];
        match RecordField::parse(name.trim()) {
            Some(f) => out.push(TemplatePiece::Field(f)),
            None => {
                d.error(
                    pos,
                    at,
                    format!(
                        "unknown template variable {{{name}}} (variables: {})",
                        RecordField::NAMES
                    ),
                );
                return None;
            }
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(TemplatePiece::Text(rest.to_string()));
    }
    Some(out)
}

/// `format` of stdout and http: json_lines (our default), json_stream, json.
fn json_format(d: &mut Decoder, ps: &[Param], pp: &str) -> JsonFormat {
    let formats = [
        ("json_lines", JsonFormat::Lines),
        ("json_stream", JsonFormat::Lines),
        ("json", JsonFormat::Array),
    ];
    choice(d, ps, pp, "format", &formats, JsonFormat::Lines).unwrap_or(JsonFormat::Lines)
}

fn date_key(d: &mut Decoder, ps: &[Param], pp: &str) -> DateKey {
    let key = match get(ps, "json_date_key") {
        None => Some("date".to_string()),
        Some(p) if matches!(p.text.to_ascii_lowercase().as_str(), "false" | "off") => None,
        Some(p) if p.text.is_empty() => {
            d.error(p.pos, &join(pp, "json_date_key"), "must not be empty");
            None
        }
        Some(p) => Some(p.text.to_string()),
    };
    let formats = [
        ("double", DateFormat::Double),
        ("epoch", DateFormat::Epoch),
        ("iso8601", DateFormat::Iso8601),
        ("java_sql_timestamp", DateFormat::JavaSqlTimestamp),
    ];
    let format = choice(d, ps, pp, "json_date_format", &formats, DateFormat::Double)
        .unwrap_or(DateFormat::Double);
    DateKey { key, format }
}

fn http(d: &mut Decoder, ps: &[Param], pp: &str) -> Option<Sink> {
    let tls = match get(ps, "tls") {
        Some(p) => flag(d, p, &join(pp, "tls"))?,
        None => false,
    };
    let tls_verify = match get(ps, "tls.verify") {
        Some(p) => flag(d, p, &join(pp, "tls.verify"))?,
        None => true,
    };
    let host = get(ps, "host").map(|p| p.text).unwrap_or("127.0.0.1");
    if host.is_empty() || host.contains(['/', ' ']) {
        let pos = get(ps, "host").map(|p| p.pos).unwrap_or_default();
        d.error(
            pos,
            &join(pp, "host"),
            format!("{host:?} is not a host name or address"),
        );
        return None;
    }
    let port = match get(ps, "port") {
        Some(p) => number(d, p, &join(pp, "port"), 1, 65535)?,
        None if tls => 443,
        None => 80,
    };
    let uri = get(ps, "uri").map(|p| p.text).unwrap_or("/");
    if !uri.starts_with('/') {
        let pos = get(ps, "uri").map(|p| p.pos).unwrap_or_default();
        d.error(pos, &join(pp, "uri"), format!("{uri:?} must start with /"));
        return None;
    }
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!(
        "{}://{bracketed}:{port}{uri}",
        if tls { "https" } else { "http" }
    );
    if url.parse::<http::Uri>().is_err() {
        d.error(Pos::default(), pp, format!("{url:?} is not a valid URL"));
        return None;
    }
    let mut headers = Vec::new();
    if let Some(h) = get(ps, "header") {
        let hp = join(pp, "header");
        for (item, ip) in d.items(h.node, &hp, true) {
            let Some(text) = d.string(item, &ip) else {
                continue;
            };
            match text.trim().split_once([' ', ':']) {
                Some((k, v))
                    if http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                        && http::HeaderValue::from_str(v.trim()).is_ok() =>
                {
                    headers.push((k.to_string(), v.trim().to_string()))
                }
                _ => d.error(
                    item.pos,
                    &ip,
                    format!("{text:?}: expected \"Header-Name value\""),
                ),
            }
        }
    }
    let basic_auth = match (get(ps, "http_user"), get(ps, "http_passwd")) {
        (Some(u), p) => Some((
            u.text.to_string(),
            p.map(|p| p.text.to_string()).unwrap_or_default(),
        )),
        (None, Some(p)) => {
            d.error(
                p.pos,
                &join(pp, "http_Passwd"),
                "a password needs `http_User`",
            );
            return None;
        }
        (None, None) => None,
    };
    if let Some((_, p)) = &basic_auth {
        if !p.is_empty() {
            d.secrets.push(p.clone());
        }
    }
    let retries = match get(ps, "retry_limit") {
        Some(p) if matches!(p.text.to_ascii_lowercase().as_str(), "false" | "no_limits") => {
            d.error(p.pos, &join(pp, "retry_limit"), "unlimited retries are not supported: a line is dropped after retry_limit retries (at most 10)");
            return None;
        }
        Some(p) => number(d, p, &join(pp, "retry_limit"), 0, 10)? as u32,
        None => 1,
    };
    Some(Sink::Http {
        url,
        tls_verify,
        format: json_format(d, ps, pp),
        date: date_key(d, ps, pp),
        headers,
        basic_auth,
        retries,
    })
}

fn syslog(d: &mut Decoder, ps: &[Param], pp: &str) -> Option<Sink> {
    let host = get(ps, "host").map(|p| p.text).unwrap_or("127.0.0.1");
    let port = match get(ps, "port") {
        Some(p) => number(d, p, &join(pp, "port"), 1, 65535)?,
        None => 514,
    };
    let tcp = choice(d, ps, pp, "mode", &[("udp", false), ("tcp", true)], false)?;
    let rfc5424 = choice(
        d,
        ps,
        pp,
        "syslog_format",
        &[("rfc5424", true), ("rfc3164", false)],
        true,
    )?;
    let max_size = match get(ps, "syslog_maxsize") {
        Some(p) => number(d, p, &join(pp, "syslog_maxsize"), 128, 65_000)? as usize,
        None if tcp => 65_000,
        None => 2048,
    };
    let field = |d: &mut Decoder, key: &str| -> Option<Option<RecordField>> {
        let Some(p) = get(ps, key) else {
            return Some(None);
        };
        match RecordField::parse(p.text) {
            Some(f) => Some(Some(f)),
            None => {
                d.error(
                    p.pos,
                    &join(pp, key),
                    format!(
                        "{:?} is not a field of a log record ({})",
                        p.text,
                        RecordField::NAMES
                    ),
                );
                None
            }
        }
    };
    let message = field(d, "syslog_message_key")?.unwrap_or(RecordField::Message);
    let appname = field(d, "syslog_appname_key")?;
    let facility = match get(ps, "syslog_facility_preset") {
        Some(p) => number(d, p, &join(pp, "syslog_facility_preset"), 0, 23)? as u8,
        None => 1,
    };
    let severity = match get(ps, "syslog_severity_preset") {
        Some(p) => Some(number(d, p, &join(pp, "syslog_severity_preset"), 0, 7)? as u8),
        None => None,
    };
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(Sink::Syslog {
        address: format!("{bracketed}:{port}"),
        tcp,
        rfc5424,
        max_size,
        message,
        appname,
        facility,
        severity,
    })
}

#[cfg(test)]
mod tests {
    /// The schema's parameter table names every parameter a type takes.
    #[test]
    fn the_schema_knows_every_parameter() {
        let all = [
            super::FILE_PARAMS,
            super::STDOUT_PARAMS,
            super::HTTP_PARAMS,
            super::SYSLOG_PARAMS,
            super::PIPELINE,
        ];
        for name in all.iter().flat_map(|l| l.iter()) {
            assert!(super::PARAMS.iter().any(|f| f.name == *name), "{name}");
        }
        assert_eq!(
            super::PARAMS.len(),
            all.iter()
                .flat_map(|l| l.iter())
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
    }
}
