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
//! and the response's headers after the call); `payload` (the body) is
//! not supported and is a validate error.

use super::expr::{parse_value, Expr, Input, Piece};
use super::Policy;
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use std::sync::Arc;

pub const FIELDS: &[Field] = &[f(
    "loggingConfiguration",
    Ty::List(&Ty::Obj(ITEM_FIELDS), false),
)
.req()
.doc("What to log, item by item.")];
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

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub items: Vec<Item>,
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
            Some(_) => text(d, "message").and_then(|(t, n)| match parse_value(&t) {
                Ok(pieces) => Some(pieces),
                Err(why) => {
                    d.error(n.pos, &join(&data_path, "message"), why);
                    None
                }
            }),
            None => None,
        };
        let conditional = match text(d, "conditional") {
            Some((t, n)) => match parse_value(&t) {
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
    (d.errors.len() == before).then_some(Config { items })
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
    })
}

/// The log target of message lines.
pub const TARGET: &str = "message-logging";

struct MessageLogging {
    items: Vec<Item>,
}

impl MessageLogging {
    fn log(&self, after: bool, input: &Input) {
        for i in self
            .items
            .iter()
            .filter(|i| if after { i.after } else { i.before })
        {
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
}

#[async_trait]
impl Policy for MessageLogging {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> super::Decision {
        let input = Input {
            method: Some(req.method.as_str()),
            query: req.uri.query(),
            headers: Some(&req.headers),
            x,
            status: None,
        };
        self.log(false, &input);
        super::Decision::Continue
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        let input = Input {
            method: None,
            query: None,
            headers: Some(&resp.headers),
            x,
            status: Some(resp.status.as_u16()),
        };
        self.log(true, &input);
        Ok(())
    }
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(MessageLogging {
        items: c.items.clone(),
    })
}
