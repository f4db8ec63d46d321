//! Threat protection: request bodies checked against structural limits as
//! they stream ([`json`], [`xml`]), before any byte of them goes upstream.
//!
//! Which bodies are checked: those whose `Content-Type` names the format
//! (`application/json`, `application/*+json`; `application/xml`,
//! `text/xml`, `application/*+xml`; any of the request's Content-Type
//! headers), and those without a `Content-Type` whose first byte past
//! whitespace opens a document of the format (`{` or `[`; `<`). Other
//! bodies pass unread. A checked body with a `Content-Encoding` other than
//! `identity` is refused (415): a compressed body cannot be checked, and
//! passing it would let any document through.
//!
//! Each chunk is checked before it is forwarded and nothing is held back
//! (the buffering bound is zero: a chunk goes upstream once it is checked).
//! At the first breach the gateway answers 400 naming the limit, the
//! chunk that broke it is never sent, and the upstream request is cut
//! short, so the backend never receives a complete request holding a
//! breach (it sees the body stop and the connection close). A body cut
//! short by the client, or not well-formed, is refused the same way.

pub mod json;
pub mod xml;

use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::Field;
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A limit: `None` when the field is `-1` (none).
pub type Limit = Option<u32>;

/// Nesting past this is refused even when the depth limit is `-1`: the
/// scanners keep a few bytes per open container, and no parser a backend
/// would use accepts more by default (Jackson: 1,000; serde_json: 128;
/// libxml2: 256).
pub const NESTING_CEILING: u32 = 1000;

/// A broken rule: the Flex field (empty: not well-formed) and what the
/// client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub rule: &'static str,
    pub message: String,
}

/// The characters of UTF-8 `bytes` (continuation bytes are part of the
/// character before them; a character cut across chunks counts once).
pub fn chars(bytes: &[u8]) -> u32 {
    let n = bytes.iter().filter(|&&b| (b as i8) >= -0x40).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A limit's field and how a breach of it reads: "an array has more
/// elements than 4 (maxArrayElementCount)".
pub struct Rule {
    pub field: &'static str,
    pub what: &'static str,
    /// After the bound: "characters", "levels", or nothing.
    pub unit: &'static str,
}

impl Rule {
    /// `n` against `limit` (none: anything passes).
    #[inline]
    pub fn check(&self, n: u32, limit: Limit) -> Result<(), Breach> {
        match limit {
            Some(max) if n > max => Err(self.breach(max)),
            _ => Ok(()),
        }
    }

    /// The breach of a bound of `max`.
    #[cold]
    #[inline(never)]
    pub fn breach(&self, max: u32) -> Breach {
        let (what, field) = (self.what, self.field);
        let message = match self.unit {
            "" => format!("{what} {max} ({field})"),
            unit => format!("{what} {max} {unit} ({field})"),
        };
        Breach {
            rule: field,
            message,
        }
    }
}

/// Read `fields` (all limits) in order: `-1` is none.
fn decode_limits<const N: usize>(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    fields: &[Field],
) -> Option<[Limit; N]> {
    let f = d.map(node, path, fields)?;
    let before = d.errors.len();
    let mut out = [None; N];
    for (slot, field) in out.iter_mut().zip(fields) {
        let crate::config::fields::Ty::Int(min, max) = field.ty else {
            continue;
        };
        if let Some(n) = f.get(field.name) {
            let v = d.int(n, &join(path, field.name), min, max);
            *slot = v.filter(|v| *v >= 0).map(|v| v as u32);
        }
    }
    (d.errors.len() == before).then_some(out)
}

fn describe_limits(fields: &[Field], limits: &[Limit]) -> Value {
    let map: Map<String, Value> = fields
        .iter()
        .zip(limits)
        .map(|(f, l)| (f.name.to_string(), l.map_or(Value::from(-1), Value::from)))
        .collect();
    Value::Object(map)
}

/// The format a policy checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json(json::Limits),
    Xml(xml::Limits),
}

impl Format {
    fn policy_name(&self) -> &'static str {
        match self {
            Format::Json(_) => "json-threat-protection",
            Format::Xml(_) => "xml-threat-protection",
        }
    }

    /// A media type (`type/subtype`, lower case) of this format.
    fn declared_by(&self, media: &str) -> bool {
        match self {
            Format::Json(_) => {
                media == "application/json"
                    || media.starts_with("application/") && media.ends_with("+json")
            }
            Format::Xml(_) => {
                media == "application/xml"
                    || media == "text/xml"
                    || media.starts_with("application/") && media.ends_with("+xml")
            }
        }
    }

    /// The first byte past whitespace of an undeclared body opens a
    /// document of this format.
    fn opens(&self, b: u8) -> bool {
        match self {
            Format::Json(_) => matches!(b, b'{' | b'['),
            Format::Xml(_) => b == b'<',
        }
    }

    fn scanner(&self) -> Scanner {
        match *self {
            Format::Json(l) => Scanner::Json(json::Scanner::new(l)),
            Format::Xml(l) => Scanner::Xml(Box::new(xml::Scanner::new(l))),
        }
    }
}

#[derive(Clone)]
enum Scanner {
    Json(json::Scanner),
    Xml(Box<xml::Scanner>),
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Breach> {
        match self {
            Scanner::Json(s) => s.feed(bytes),
            Scanner::Xml(s) => s.feed(bytes),
        }
    }

    fn finish(&mut self) -> Result<(), Breach> {
        match self {
            Scanner::Json(s) => s.finish(),
            Scanner::Xml(s) => s.finish(),
        }
    }
}

/// The verdict on `doc` (the breached rule, or "invalid"), fed whole and
/// split in two at every byte: all of them agree, or the test fails.
#[cfg(test)]
pub(crate) fn verdict(format: Format, doc: &str) -> Result<(), &'static str> {
    let whole = {
        let mut s = format.scanner();
        s.feed(doc.as_bytes()).and_then(|()| s.finish())
    };
    for cut in 0..=doc.len() {
        let mut s = format.scanner();
        let (a, b) = doc.as_bytes().split_at(cut);
        let split = s.feed(a).and_then(|()| s.feed(b)).and_then(|()| s.finish());
        assert_eq!(split, whole, "{doc:?} cut at {cut}");
    }
    whole.map_err(|b| if b.rule.is_empty() { "invalid" } else { b.rule })
}

/// One request's body check.
#[derive(Clone)]
enum Check {
    /// No Content-Type: the first byte past whitespace decides.
    Sniffing,
    Scanning(Scanner),
}

/// The body checks of a request, by policy instance (a route may have a
/// document-level and its own policy of the same kind).
#[derive(Default, Clone)]
struct Checks(Vec<(usize, Check)>);

pub struct ThreatProtection {
    format: Format,
}

impl ThreatProtection {
    pub fn new(format: Format) -> ThreatProtection {
        ThreatProtection { format }
    }

    fn key(&self) -> usize {
        self as *const ThreatProtection as usize
    }

    fn refuse(&self, b: Breach) -> Decision {
        let kind = match self.format {
            Format::Json(_) => "JSON",
            Format::Xml(_) => "XML",
        };
        Decision::Respond(LocalResponse::new(
            400,
            format!("{kind} threat protection: {}", b.message),
        ))
    }

    /// What to do with the request's body: check it as declared, sniff it,
    /// or let it pass.
    fn plan(&self, req: &RequestHeader) -> Option<Check> {
        let mut types = req
            .headers
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .peekable();
        if types.peek().is_none() {
            return Some(Check::Sniffing);
        }
        let declared = types.any(|v| {
            let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
            let media = v.split(';').next().unwrap_or("").trim();
            self.format.declared_by(media)
        });
        declared.then(|| Check::Scanning(self.format.scanner()))
    }
}

/// The request says it has no body.
fn bodiless(req: &RequestHeader) -> bool {
    let h = &req.headers;
    !h.contains_key(http::header::TRANSFER_ENCODING)
        && h.get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
}

/// The body is encoded (compressed) in a way the check cannot read.
fn encoded(req: &RequestHeader) -> bool {
    req.headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|c| {
            let c = c.trim_ascii();
            !c.is_empty() && !c.eq_ignore_ascii_case(b"identity")
        })
}

#[async_trait]
impl Policy for ThreatProtection {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        if bodiless(req) {
            return Decision::Continue;
        }
        let Some(check) = self.plan(req) else {
            return Decision::Continue;
        };
        if encoded(req) {
            return Decision::Respond(LocalResponse::new(
                415,
                format!(
                    "{}: a request body with a Content-Encoding cannot be checked",
                    self.format.policy_name()
                ),
            ));
        }
        x.ext
            .get_or_insert_default::<Checks>()
            .0
            .push((self.key(), check));
        Decision::Continue
    }

    fn body_hooks(&self) -> (bool, bool) {
        (true, false)
    }

    fn on_request_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
    ) -> pingora::Result<Decision> {
        let key = self.key();
        let Some(checks) = x.ext.get_mut::<Checks>() else {
            return Ok(Decision::Continue);
        };
        let Some(i) = checks.0.iter().position(|(k, _)| *k == key) else {
            return Ok(Decision::Continue);
        };
        let chunk = body.as_deref().unwrap_or_default();
        let check = &mut checks.0[i].1;
        if let Check::Sniffing = check {
            match chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(&b) if self.format.opens(b) => *check = Check::Scanning(self.format.scanner()),
                Some(_) => {
                    // not this format: it passes unread
                    checks.0.swap_remove(i);
                    return Ok(Decision::Continue);
                }
                None => {}
            }
        }
        let result = match check {
            Check::Scanning(s) => {
                s.feed(chunk)
                    .and_then(|()| if end_of_stream { s.finish() } else { Ok(()) })
            }
            Check::Sniffing => Ok(()),
        };
        if end_of_stream || result.is_err() {
            checks.0.swap_remove(i);
        }
        Ok(match result {
            Ok(()) => Decision::Continue,
            Err(b) => self.refuse(b),
        })
    }
}

pub fn describe_json(c: &json::Limits) -> Value {
    describe_limits(json::FIELDS, &c.fields())
}

pub fn describe_xml(c: &xml::Limits) -> Value {
    describe_limits(xml::FIELDS, &c.fields())
}

/// The registration entry points of `json-threat-protection`.
pub mod json_policy {
    pub use super::json::{Limits as Config, FIELDS};
    use super::*;

    pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
        decode_limits(d, node, path, FIELDS).map(Config::from_fields)
    }

    pub fn build(c: &Config) -> Arc<dyn Policy> {
        Arc::new(ThreatProtection::new(Format::Json(*c)))
    }

    pub fn describe(c: &Config) -> Value {
        describe_json(c)
    }
}

/// The registration entry points of `xml-threat-protection`.
pub mod xml_policy {
    pub use super::xml::{Limits as Config, FIELDS};
    use super::*;

    pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
        decode_limits(d, node, path, FIELDS).map(Config::from_fields)
    }

    pub fn build(c: &Config) -> Arc<dyn Policy> {
        Arc::new(ThreatProtection::new(Format::Xml(*c)))
    }

    pub fn describe(c: &Config) -> Value {
        describe_xml(c)
    }
}
