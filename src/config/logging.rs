//! Flex's `Configuration.spec.logging`: named `outputs` (Fluent Bit's
//! output types people use: `file`, `http`, `stdout`, `syslog`, with
//! Fluent Bit's parameter names in any letter case), and which of them
//! the runtime logs (`runtimeLogs.outputs`) and the access logs
//! (`accessLogs.outputs`: the JSON access line and message logging's
//! lines) go to. Standard error keeps every line either way, as Flex
//! keeps its standard output logs. The writers are in `ops::logging`.
//!
//! ```yaml
//! logging:
//!   outputs:
//!     - name: default
//!       type: file
//!       parameters:
//!         path: /var/log/flex-gateway
//!         file: gateway.log          # or `file: /var/log/flex-gateway/gateway.log`
//!         format: template
//!         template: "[{logger}][{level}][{kind}] {message}"
//!   runtimeLogs: {logLevel: info, outputs: [default]}
//!   accessLogs: {outputs: [default]}
//! ```

mod outputs;

use super::decode::{join, suggest, Decoder};
use super::fields::{f, Field, Ty};
use super::yaml::Node;
use std::path::PathBuf;

/// Where the log lines of each kind go, besides standard error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoggingSettings {
    pub outputs: Vec<LogOutput>,
    /// Indexes into `outputs`.
    pub runtime: Vec<usize>,
    pub access: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogOutput {
    pub name: String,
    pub sink: Sink,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    File {
        path: PathBuf,
        format: FileFormat,
        mkdir: bool,
    },
    Stdout {
        format: JsonFormat,
        date: DateKey,
    },
    Http {
        /// `http(s)://host:port/uri`
        url: String,
        tls_verify: bool,
        format: JsonFormat,
        date: DateKey,
        headers: Vec<(String, String)>,
        /// `http_User` and `http_Passwd` (a secret: never shown).
        basic_auth: Option<(String, String)>,
        /// Attempts after the first (`retry_limit`).
        retries: u32,
    },
    Syslog {
        /// `host:port`
        address: String,
        tcp: bool,
        rfc5424: bool,
        max_size: usize,
        /// The record field the message is (`syslog_message_key`).
        message: RecordField,
        /// The record field the app name is (`syslog_appname_key`).
        appname: Option<RecordField>,
        facility: u8,
        /// `syslog_severity_preset`; otherwise from the record's level.
        severity: Option<u8>,
    },
}

/// The fields of a log record (what templates and `*_key` parameters name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordField {
    Time,
    Logger,
    Level,
    Kind,
    Message,
}

impl RecordField {
    /// Template variables and `*_key` values: ours, and Flex's older names
    /// (`runtime` for the logger, `loglevel` for the level).
    pub fn parse(name: &str) -> Option<RecordField> {
        Some(match name {
            "time" | "date" | "timestamp" => RecordField::Time,
            "logger" | "runtime" => RecordField::Logger,
            "level" | "loglevel" => RecordField::Level,
            "kind" => RecordField::Kind,
            "message" | "log" => RecordField::Message,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "time, logger, level, kind, message";

    pub fn key(self) -> &'static str {
        match self {
            RecordField::Time => "time",
            RecordField::Logger => "logger",
            RecordField::Level => "level",
            RecordField::Kind => "kind",
            RecordField::Message => "message",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePiece {
    Text(String),
    Field(RecordField),
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileFormat {
    /// One JSON object per line (Fluent Bit's `plain`): our default.
    Plain,
    Template(Vec<TemplatePiece>),
    Csv(String),
    Ltsv {
        delimiter: String,
        label: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonFormat {
    /// One JSON object per line (`json_lines`, `json_stream`).
    Lines,
    /// A JSON array per batch (`json`).
    Array,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DateKey {
    /// `json_date_key` (`date`); `None` when set to `false`.
    pub key: Option<String>,
    pub format: DateFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    Double,
    Epoch,
    Iso8601,
    JavaSqlTimestamp,
}

pub const FIELDS: &[Field] = &[
    f("outputs", Ty::List(&Ty::Obj(outputs::OUTPUT_FIELDS), false))
        .doc("Named outputs: file, http, stdout or syslog (Fluent Bit's types and parameters)."),
    f("runtimeLogs", Ty::Obj(RUNTIME_FIELDS)),
    f("accessLogs", Ty::Obj(ACCESS_FIELDS)).doc("The access log and message logging's lines."),
    f("runtimeLog", Ty::Obj(RUNTIME_FIELDS))
        .doc("`runtimeLogs`, as Flex's reference guide spells it."),
    f("accessLog", Ty::Obj(ACCESS_FIELDS))
        .doc("`accessLogs`, as Flex's reference guide spells it."),
];
const RUNTIME_FIELDS: &[Field] = &[
    f(
        "logLevel",
        Ty::AnyCase(&["trace", "debug", "info", "warn", "warning", "error", "off"]),
    )
    .default("\"info\""),
    f("outputs", Ty::List(&NAME, true)).doc("Names of `outputs` the runtime logs go to."),
];
const ACCESS_FIELDS: &[Field] =
    &[f("outputs", Ty::List(&NAME, true)).doc("Names of `outputs` the access logs go to.")];
const NAME: Ty = Ty::Text("an output's name");
/// What `logging` decodes to; the log level is read by the caller.
pub fn decode(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    level: &mut Option<log::LevelFilter>,
) -> Option<LoggingSettings> {
    let g = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let mut out = LoggingSettings::default();
    if let Some(list) = g.get("outputs") {
        let at = join(path, "outputs");
        for (item, ip) in d.items(list, &at, false) {
            if let Some(o) = outputs::output(d, item, &ip) {
                if out.outputs.iter().any(|p| p.name == o.name) {
                    d.error(item.pos, &ip, format!("output {:?} is named twice", o.name));
                }
                out.outputs.push(o);
            }
        }
    }
    let names: Vec<String> = out.outputs.iter().map(|o| o.name.clone()).collect();
    let refs = |d: &mut Decoder, n: Option<&Node>, at: &str| -> Vec<usize> {
        let Some(n) = n else { return Vec::new() };
        let mut found = Vec::new();
        for (item, ip) in d.items(n, at, true) {
            let Some(name) = d.string(item, &ip) else {
                continue;
            };
            match names.iter().position(|o| *o == name) {
                Some(i) if !found.contains(&i) => found.push(i),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = names.iter().map(String::as_str).collect();
                    let hint = match suggest(&name, &known) {
                        Some(s) => format!(" (did you mean {s:?}?)"),
                        None if known.is_empty() => " (`logging.outputs` declares none)".into(),
                        None => format!(" (declared: {})", known.join(", ")),
                    };
                    d.error(item.pos, &ip, format!("no output is named {name:?}{hint}"));
                }
            }
        }
        found
    };
    // Flex's reference guide writes them in the singular
    let spelt = |d: &mut Decoder, key: &'static str, alias: &'static str| match (
        g.get(key),
        g.get(alias),
    ) {
        (Some(_), Some(a)) => {
            d.error(
                a.pos,
                &join(path, alias),
                format!("`{alias}` and `{key}` are the same setting: give one"),
            );
            None
        }
        (Some(n), None) => Some((n, key)),
        (None, Some(n)) => Some((n, alias)),
        (None, None) => None,
    };
    let runtime = spelt(d, "runtimeLogs", "runtimeLog");
    let access = spelt(d, "accessLogs", "accessLog");
    if let Some((r, key)) = runtime {
        let rp = join(path, key);
        if let Some(rf) = d.map(r, &rp, RUNTIME_FIELDS) {
            out.runtime = refs(d, rf.get("outputs"), &join(&rp, "outputs"));
            if let Some(l) = rf.get("logLevel") {
                *level = log_level(d, l, &join(&rp, "logLevel"));
            }
        }
    }
    if let Some((a, key)) = access {
        let ap = join(path, key);
        if let Some(af) = d.map(a, &ap, ACCESS_FIELDS) {
            out.access = refs(d, af.get("outputs"), &join(&ap, "outputs"));
        }
    }
    for (i, o) in out.outputs.iter().enumerate() {
        if !out.runtime.contains(&i) && !out.access.contains(&i) {
            d.notice(
                node.pos,
                path,
                format!(
                    "output {:?} is declared but neither runtimeLogs nor accessLogs names it",
                    o.name
                ),
            );
        }
    }
    (d.errors.len() == before).then_some(out)
}

fn log_level(d: &mut Decoder, l: &Node, lp: &str) -> Option<log::LevelFilter> {
    let level = d.scalar(l, lp, "a log level")?.to_ascii_lowercase();
    Some(match level.as_str() {
        "trace" => log::LevelFilter::Trace,
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" | "warning" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        "off" => log::LevelFilter::Off,
        other => {
            d.error(
                l.pos,
                lp,
                format!("{other:?}: expected trace, debug, info, warn, error or off"),
            );
            return None;
        }
    })
}

/// What `/config` shows of the outputs (never the HTTP password).
pub fn describe(s: &LoggingSettings) -> serde_json::Value {
    let outputs: Vec<serde_json::Value> = s
        .outputs
        .iter()
        .map(|o| {
            let (ty, target) = match &o.sink {
                Sink::File { path, .. } => ("file", path.display().to_string()),
                Sink::Stdout { .. } => ("stdout", "stdout".to_string()),
                Sink::Http { url, .. } => ("http", url.clone()),
                Sink::Syslog { address, tcp, .. } => (
                    "syslog",
                    format!("{}://{address}", if *tcp { "tcp" } else { "udp" }),
                ),
            };
            serde_json::json!({"name": o.name, "type": ty, "target": target})
        })
        .collect();
    let names =
        |ix: &[usize]| -> Vec<&str> { ix.iter().map(|i| s.outputs[*i].name.as_str()).collect() };
    serde_json::json!({
        "outputs": outputs,
        "runtimeLogs": names(&s.runtime),
        "accessLogs": names(&s.access),
    })
}
