//! `message-logging` (Flex's `message-logging-flex`, same fields): log
//! lines built from the request before the upstream call
//! (`firstSection`) and from the response after it (`secondSection`),
//! when `conditional` holds, at `level`, in the runtime log.
//!
//! ```yaml
//! - message-logging:
//!     loggingConfiguration:
//!       - itemName: audit
//!         itemData:
//!           message: "#['user ' ++ (attributes.headers['x-user'] default 'anonymous') ++ ' ' ++ attributes.method]"
//!           conditional: "#[attributes.queryParams['audit'] == 'yes']"
//!           category: shop.audit
//!           level: INFO
//!           firstSection: true
//!       - itemName: status
//!         itemData: {message: "#[attributes.statusCode]", level: WARN, secondSection: true}
//! ```
//!
//! A line is `[req: <request id>] [<route>] [<item>] <category>: <message>`
//! under the log target `message-logging`, so the runtime log level
//! (`RUST_LOG`, Flex's `runtimeLogs.logLevel`) filters it as it filters
//! any other line (a DEBUG item at level info is not written, and costs
//! one comparison). They are access lines (`ops::logging::access`): to
//! stderr and Flex's `accessLogs.outputs` through bounded queues, so a
//! request never waits for the log; a full queue drops the line, counted
//! in `flexgw_log_lines_dropped_total`. Expressions are the
//! subset `src/policy/expr.rs` documents (with `attributes.statusCode`
//! and the response's headers after the call) and `payload`: the body
//! (the request's before the call, the response's after it). An item that
//! reads `payload` waits for the body's end; the body streams on unchanged
//! while a copy of its first `maxPayloadSize` bytes (64KB by default) is
//! kept for the line. A body that never ends (a local answer, a cut
//! connection) is logged with what came when the response starts or the
//! exchange ends.

use super::expr::{parse_value_with, Expr, Input, Payload, Piece};
use super::Policy;
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use std::sync::Arc;

pub const FIELDS: &[Field] = &[
    f(
        "loggingConfiguration",
        Ty::List(&Ty::Obj(ITEM_FIELDS), false),
    )
    .req()
    .doc("What to log, item by item."),
    f("maxPayloadSize", Ty::Size)
        .default("\"64KB\"")
        .doc("How much of a body `payload` reads: the first bytes, up to this (the body streams on unchanged)."),
];

/// `maxPayloadSize`'s default, and its ceiling.
const MAX_PAYLOAD: (u64, u64) = (64 * 1024, 16 * 1024 * 1024);
const ITEM_FIELDS: &[Field] = &[
    f("itemName", STR).req(),
    f("itemData", Ty::Obj(DATA_FIELDS)).req(),
];
const DATA_FIELDS: &[Field] = &[
    f("message", Ty::Text("text with #[...] expressions"))
        .req()
        .doc("The line: text and #[...] expressions."),
    f("conditional", Ty::Text("an expression #[...]")).doc("Log only when it holds."),
    f("category", STR).doc("A prefix naming what logs (a package, a class)."),
    f(
        "level",
        Ty::AnyCase(&["INFO", "WARN", "ERROR", "DEBUG", "TRACE"]),
    )
    .req(),
    f("firstSection", BOOL)
        .default("false")
        .doc("Log before the upstream call (from the request)."),
    f("secondSection", BOOL)
        .default("false")
        .doc("Log after the upstream call (from the response)."),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub message: Vec<Piece>,
    pub conditional: Option<Expr>,
    pub category: Option<String>,
    pub level: log::Level,
    pub before: bool,
    pub after: bool,
}

impl Item {
    /// Whether it logs in this section (before or after the call).
    fn logs(&self, after: bool) -> bool {
        if after {
            self.after
        } else {
            self.before
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub items: Vec<Item>,
    /// Bytes of a body `payload` reads.
    pub max_payload: u64,
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let list_path = join(path, "loggingConfiguration");
    let list = d.required(&f, "loggingConfiguration", path)?;
    let mut items = Vec::new();
    for (item, at) in d.items(list, &list_path, false) {
        let Some(g) = d.map(item, &at, ITEM_FIELDS) else {
            continue;
        };
        let name = d
            .required(&g, "itemName", &at)
            .and_then(|n| d.string(n, &join(&at, "itemName")));
        let data_path = join(&at, "itemData");
        let Some(data) = d
            .required(&g, "itemData", &at)
            .and_then(|n| d.map(n, &data_path, DATA_FIELDS))
        else {
            continue;
        };
        let text = |d: &mut Decoder, key: &str| {
            data.get(key)
                .and_then(|n| Some((d.scalar(n, &join(&data_path, key), "text")?.to_string(), n)))
        };
        let message = match d.required(&data, "message", &data_path) {
            Some(_) => text(d, "message").and_then(|(t, n)| match parse_value_with(&t, true) {
                Ok(pieces) => Some(pieces),
                Err(why) => {
                    d.error(n.pos, &join(&data_path, "message"), why);
                    None
                }
            }),
            None => None,
        };
        let conditional = match text(d, "conditional") {
            Some((t, n)) => match parse_value_with(&t, true) {
                Ok(mut p) if p.len() == 1 && matches!(p[0], Piece::Expr(_)) => match p.pop() {
                    Some(Piece::Expr(e)) => Some(e),
                    _ => None,
                },
                Ok(_) => {
                    d.error(
                        n.pos,
                        &join(&data_path, "conditional"),
                        "expected one expression #[...]",
                    );
                    None
                }
                Err(why) => {
                    d.error(n.pos, &join(&data_path, "conditional"), why);
                    None
                }
            },
            None => None,
        };
        let category = text(d, "category").map(|(t, _)| t);
        let level = d.required(&data, "level", &data_path).and_then(|n| {
            let at = join(&data_path, "level");
            match d.scalar(n, &at, "a level")?.to_ascii_uppercase().as_str() {
                "INFO" => Some(log::Level::Info),
                "WARN" | "WARNING" => Some(log::Level::Warn),
                "ERROR" => Some(log::Level::Error),
                "DEBUG" => Some(log::Level::Debug),
                "TRACE" => Some(log::Level::Trace),
                other => {
                    d.error(
                        n.pos,
                        &at,
                        format!("{other:?}: expected INFO, WARN, ERROR or DEBUG"),
                    );
                    None
                }
            }
        });
        let flag = |d: &mut Decoder, key: &str| match data.get(key) {
            Some(n) => d.bool(n, &join(&data_path, key)),
            None => Some(false),
        };
        let (first, second) = (flag(d, "firstSection"), flag(d, "secondSection"));
        if let (Some(false), Some(false)) = (first, second) {
            d.notice(
                item.pos,
                &data_path,
                "neither firstSection nor secondSection is true: this item logs nothing",
            );
        }
        if let (Some(name), Some(message), Some(level), Some(before), Some(after)) =
            (name, message, level, first, second)
        {
            items.push(Item {
                name,
                message,
                conditional,
                category,
                level,
                before,
                after,
            });
        }
    }
    let max_payload = match f.get("maxPayloadSize") {
        Some(n) => {
            let at = join(path, "maxPayloadSize");
            match d.size(n, &at)? {
                s if s > MAX_PAYLOAD.1 => {
                    d.error(
                        n.pos,
                        &at,
                        format!(
                            "{s} bytes: at most {} (16MB) of a body is kept for a log line",
                            MAX_PAYLOAD.1
                        ),
                    );
                    return None;
                }
                s => s,
            }
        }
        None => MAX_PAYLOAD.0,
    };
    (d.errors.len() == before).then_some(Config { items, max_payload })
}

pub fn describe(c: &Config) -> Value {
    json!({
        "loggingConfiguration": c.items.iter().map(|i| json!({
            "itemName": i.name,
            "level": i.level.as_str(),
            "category": i.category,
            "conditional": i.conditional.as_ref().map(|e| format!("#[{}]", e.source())),
            "firstSection": i.before,
            "secondSection": i.after,
        })).collect::<Vec<_>>(),
        "maxPayloadSize": c.max_payload,
    })
}

/// The log target of message lines.
pub const TARGET: &str = "message-logging";

struct MessageLogging {
    /// Each item, and whether it reads `payload` (the body).
    items: Vec<(Item, bool)>,
    max_payload: usize,
    /// Some item reads the request's (before) or the response's (after) body.
    payload: (bool, bool),
}

/// Which of a section's items to log now.
#[derive(Clone, Copy, PartialEq)]
enum Which {
    All,
    /// Those that do not read the body (the others wait for it).
    WithoutBody,
    OnlyBody,
}

/// A section's items that wait for the body: what they read of the head,
/// and the body's first `max_payload` bytes.
#[derive(Clone)]
struct Waiting {
    method: Option<String>,
    query: Option<String>,
    headers: http::HeaderMap,
    status: Option<u16>,
    body: Vec<u8>,
    truncated: bool,
}

impl Waiting {
    fn new(
        method: Option<String>,
        query: Option<String>,
        headers: &http::HeaderMap,
        status: Option<u16>,
    ) -> Waiting {
        Waiting {
            method,
            query,
            headers: headers.clone(),
            status,
            body: Vec::new(),
            truncated: false,
        }
    }

    fn keep(&mut self, chunk: &[u8], max: usize) {
        let room = max.saturating_sub(self.body.len());
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.truncated |= chunk.len() > room;
    }
}

/// Per request: the request's and the response's waiting items.
#[derive(Default, Clone)]
struct Pending {
    request: Option<Waiting>,
    response: Option<Waiting>,
}

impl MessageLogging {
    fn log(&self, after: bool, which: Which, input: &Input) {
        for (i, _) in self.items.iter().filter(|(i, body)| {
            i.logs(after)
                && match which {
                    Which::All => true,
                    Which::WithoutBody => !body,
                    Which::OnlyBody => *body,
                }
        }) {
            // filtered as any line is, before any work
            if !log::log_enabled!(target: TARGET, i.level) {
                continue;
            }
            if let Some(c) = &i.conditional {
                if !c.eval(input).truthy() {
                    continue;
                }
            }
            let mut message = String::new();
            for p in &i.message {
                match p {
                    Piece::Text(t) => message.push_str(t),
                    Piece::Expr(e) => message.push_str(&e.eval(input).text()),
                }
            }
            let category = i
                .category
                .as_deref()
                .map(|c| format!("{c}: "))
                .unwrap_or_default();
            let line = format!(
                "[req: {}] [{}] [{}] {category}{message}",
                input.x.request_id, input.x.route_id, i.name
            );
            crate::ops::logging::access(i.level, TARGET, line);
        }
    }

    /// Whether a section has an item reading the body that the log
    /// level lets through (else nothing is kept for it).
    fn waits(&self, after: bool) -> bool {
        self.items
            .iter()
            .any(|(i, body)| *body && i.logs(after) && log::log_enabled!(target: TARGET, i.level))
    }

    /// The section's items that waited for the body, with what came of it.
    fn log_waiting(&self, after: bool, w: &Waiting, x: &Exchange) {
        let payload = Payload::new(&w.body, w.truncated);
        let input = Input {
            method: w.method.as_deref(),
            query: w.query.as_deref(),
            headers: Some(&w.headers),
            x,
            status: w.status,
            payload: Some(&payload),
        };
        self.log(after, Which::OnlyBody, &input);
    }

    /// Keeps a body chunk for the waiting items; at the body's end (or
    /// when `end` is forced) logs them.
    fn body(&self, after: bool, chunk: Option<&bytes::Bytes>, end: bool, x: &mut Exchange) {
        let Some(pending) = x.ext.get_mut::<Pending>() else {
            return;
        };
        let slot = if after {
            &mut pending.response
        } else {
            &mut pending.request
        };
        let Some(w) = slot.as_mut() else {
            return;
        };
        if let Some(c) = chunk {
            w.keep(c, self.max_payload);
        }
        if end {
            if let Some(w) = slot.take() {
                self.log_waiting(after, &w, x);
            }
        }
    }

    fn section(&self, after: bool) -> Which {
        match (after, self.payload) {
            (false, (true, _)) | (true, (_, true)) => Which::WithoutBody,
            _ => Which::All,
        }
    }
}

#[async_trait]
impl Policy for MessageLogging {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> super::Decision {
        let input = Input::request(req, x);
        self.log(false, self.section(false), &input);
        if self.payload.0 && self.waits(false) {
            x.ext.get_or_insert_default::<Pending>().request = Some(Waiting::new(
                Some(req.method.to_string()),
                req.uri.query().map(str::to_string),
                &req.headers,
                None,
            ));
        }
        super::Decision::Continue
    }

    fn body_hooks(&self) -> (bool, bool) {
        self.payload
    }

    fn on_request_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
    ) -> pingora::Result<super::Decision> {
        self.body(false, body.as_ref(), end_of_stream, x);
        Ok(super::Decision::Continue)
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        // the request's items log before the response's, with the body
        // read so far (an upstream may answer before reading it all)
        self.body(false, None, true, x);
        let input = Input {
            method: None,
            query: None,
            headers: Some(&resp.headers),
            x,
            status: Some(resp.status.as_u16()),
            payload: None,
        };
        self.log(true, self.section(true), &input);
        if self.payload.1 && self.waits(true) {
            x.ext.get_or_insert_default::<Pending>().response = Some(Waiting::new(
                None,
                None,
                &resp.headers,
                Some(resp.status.as_u16()),
            ));
        }
        Ok(())
    }

    fn on_response_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
    ) -> pingora::Result<()> {
        self.body(true, body.as_ref(), end_of_stream, x);
        Ok(())
    }

    fn on_logging(&self, x: &Exchange, _status: u16) {
        // what never saw its body's end (a local answer, a cut
        // connection) is logged with what came: nothing is lost
        if let Some(p) = x.ext.get::<Pending>() {
            if let Some(w) = &p.request {
                self.log_waiting(false, w, x);
            }
            if let Some(w) = &p.response {
                self.log_waiting(true, w, x);
            }
        }
    }
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    let items: Vec<(Item, bool)> = c
        .items
        .iter()
        .map(|i| {
            let body = i
                .message
                .iter()
                .any(|p| matches!(p, Piece::Expr(e) if e.reads_payload()))
                || i.conditional.as_ref().is_some_and(Expr::reads_payload);
            (i.clone(), body)
        })
        .collect();
    let reads = |after: bool| items.iter().any(|(i, body)| *body && i.logs(after));
    Arc::new(MessageLogging {
        payload: (reads(false), reads(true)),
        items,
        max_payload: usize::try_from(c.max_payload).unwrap_or(usize::MAX),
    })
}
