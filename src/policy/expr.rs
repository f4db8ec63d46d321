//! Flex's DataWeave-style expressions (`#[...]`), the subset its policies
//! use, compiled when the configuration loads and evaluated per request:
//!
//! ```text
//! attributes.headers['NAME']   attributes.queryParams['NAME']   (or .NAME)
//! attributes.method   attributes.requestPath   attributes.remoteAddress
//! authentication.principal   authentication.clientId   vars.claimSet.CLAIM
//! attributes.statusCode (a response's)   vars.reqId   vars.apiName
//! payload   payload.field   payload['field']   (message logging only: the body)
//! 'text'  "text"  42  true  false  null
//! a ++ b              concatenation
//! a default b         b when a is null (a missing header, claim, ...)
//! a splitBy ','       a list; (…)[0] picks an item
//! [200, 404]          a list literal
//! a contains b        b is an item of list a, or a substring of text a
//! lower(a)  upper(a)  trim(a)  sizeOf(a)  uuid()  contains(a, b)
//! substringBefore / substringAfter / ...BeforeLast / ...AfterLast (a, b), or infix
//! attributes.queryString  attributes.requestUri  attributes.localAddress  attributes.scheme
//! ==  !=  <  >  <=  >=     and  or  not     if (c) a else b
//! ```
//!
//! Anything else is an error naming the part that is not supported. An
//! expression never fails at run time: what is missing is `null`.

use crate::exchange::Exchange;
use std::fmt::Write;

/// What an expression reads of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accessor {
    /// Lower-case header name.
    Header(String),
    Query(String),
    Method,
    RequestPath,
    /// `attributes.queryString`: the query, without `?` (empty when none).
    QueryString,
    /// `attributes.requestUri`: the path and the query.
    RequestUri,
    /// `attributes.localAddress`: the listener's `ip:port`.
    LocalAddress,
    /// `attributes.scheme`: `http` or `https`.
    Scheme,
    RemoteAddress,
    /// `authentication.principal` / `authentication.clientId`: the consumer.
    Principal,
    /// `vars.claimSet.<claim>`.
    Claim(String),
    /// `attributes.statusCode`: the response's status (null on the request).
    Status,
    /// `vars.reqId`: the request id (`x-request-id`).
    RequestId,
    /// `vars.apiName` / `vars.apiInstanceName`: the route's id.
    Route,
    /// `payload` (the body as text) or `payload.a.b` (a member of a JSON
    /// body): only where the parser was told a body is read.
    Payload(Vec<String>),
}

/// A body as message logging read it: at most a bound of its bytes.
#[derive(Debug, Default)]
pub struct Payload<'b> {
    pub bytes: &'b [u8],
    /// More came than `bytes` holds.
    pub truncated: bool,
    json: std::sync::OnceLock<Option<serde_json::Value>>,
}

impl Payload<'_> {
    pub fn new(bytes: &[u8], truncated: bool) -> Payload<'_> {
        Payload {
            bytes,
            truncated,
            json: Default::default(),
        }
    }

    /// The body as JSON, parsed once (none when cut short or not JSON).
    fn json(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| {
                (!self.truncated)
                    .then(|| serde_json::from_slice(self.bytes).ok())
                    .flatten()
            })
            .as_ref()
    }
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Val>),
}

impl Val {
    /// As text: `null` is empty, lists are comma-joined.
    pub fn text(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Str(s) => s.clone(),
            Val::Num(n) => num_text(*n),
            Val::Bool(b) => b.to_string(),
            Val::List(items) => items.iter().map(Val::text).collect::<Vec<_>>().join(","),
        }
    }

    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Str(s) => !s.is_empty(),
            Val::Num(n) => *n != 0.0,
            Val::List(l) => !l.is_empty(),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

fn num_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Lower,
    Upper,
    Trim,
    Size,
}

/// `dw::core::Strings`' two-argument functions (also written infix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Before,
    After,
    BeforeLast,
    AfterLast,
}

impl Cut {
    fn named(w: &str) -> Option<Cut> {
        Some(match w {
            "substringBefore" => Cut::Before,
            "substringAfter" => Cut::After,
            "substringBeforeLast" => Cut::BeforeLast,
            "substringAfterLast" => Cut::AfterLast,
            _ => return None,
        })
    }

    fn apply(self, text: &str, sep: &str) -> String {
        let at = match self {
            Cut::Before | Cut::After => text.find(sep),
            Cut::BeforeLast | Cut::AfterLast => text.rfind(sep),
        };
        match (self, at) {
            (Cut::Before | Cut::BeforeLast, Some(n)) => text[..n].to_string(),
            (Cut::After | Cut::AfterLast, Some(n)) => text[n + sep.len()..].to_string(),
            // DataWeave: not found is an empty string
            (_, None) => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum E {
    Lit(Val),
    Read(Accessor),
    Concat(Vec<E>),
    Default(Box<E>, Box<E>),
    Split(Box<E>, Box<E>),
    List(Vec<E>),
    Contains(Box<E>, Box<E>),
    Cut(Cut, Box<E>, Box<E>),
    Uuid,
    Index(Box<E>, usize),
    Call(Func, Box<E>),
    Cmp(Cmp, Box<E>, Box<E>),
    And(Box<E>, Box<E>),
    Or(Box<E>, Box<E>),
    Not(Box<E>),
    If(Box<E>, Box<E>, Box<E>),
}

/// A compiled expression (what was inside `#[...]`).
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    e: E,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.source == other.source
    }
}

impl Eq for Expr {}

/// What an expression can read for one request.
pub struct Input<'a> {
    pub method: Option<&'a str>,
    pub query: Option<&'a str>,
    pub headers: Option<&'a http::HeaderMap>,
    pub x: &'a Exchange,
    /// A response's status (its headers are then `headers`).
    pub status: Option<u16>,
    /// The body read so far, for `payload` (none: `payload` is null).
    pub payload: Option<&'a Payload<'a>>,
}

impl<'a> Input<'a> {
    /// What a request's head offers (no response status, no body).
    pub fn request(req: &'a pingora::http::RequestHeader, x: &'a Exchange) -> Input<'a> {
        Input {
            method: Some(req.method.as_str()),
            query: req.uri.query(),
            headers: Some(&req.headers),
            x,
            status: None,
            payload: None,
        }
    }
}

pub const SUPPORTED: &str = "attributes.headers['NAME'], attributes.queryParams['NAME'], attributes.method, attributes.requestPath, attributes.queryString, attributes.requestUri, attributes.localAddress, attributes.scheme, attributes.remoteAddress, authentication.principal, authentication.clientId, vars.claimSet.CLAIM, attributes.statusCode, vars.reqId, vars.apiName, payload (message logging), literals, [a, b] lists, ++, default, splitBy, contains, substringBefore/After(Last), [n], lower, upper, trim, sizeOf, uuid(), == != < > <= >=, and, or, not, if (...) ... else ...";

impl Expr {
    /// The expression inside `#[...]` (without the brackets).
    pub fn parse(text: &str) -> Result<Expr, String> {
        Expr::parse_with(text, false)
    }

    /// As [`Expr::parse`], and `payload` may be read (a policy that keeps
    /// the body for it).
    pub fn parse_with(text: &str, payload: bool) -> Result<Expr, String> {
        let tokens = lex(text)?;
        let mut p = Parser {
            t: &tokens,
            i: 0,
            payload,
        };
        let e = p.expr()?;
        if let Some(t) = p.peek() {
            return Err(format!("unexpected `{}` in `{text}`", t.text()));
        }
        Ok(Expr {
            source: text.trim().to_string(),
            e,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// A single accessor (`#[attributes.headers['x']]`), if that is all it is.
    pub fn accessor(&self) -> Option<&Accessor> {
        match &self.e {
            E::Read(a) => Some(a),
            _ => None,
        }
    }

    pub fn eval(&self, input: &Input) -> Val {
        eval(&self.e, input)
    }

    /// Whether it reads `payload` (the body).
    pub fn reads_payload(&self) -> bool {
        fn walk(e: &E) -> bool {
            match e {
                E::Lit(_) | E::Uuid => false,
                E::Read(a) => matches!(a, Accessor::Payload(_)),
                E::Concat(parts) | E::List(parts) => parts.iter().any(walk),
                E::Index(a, _) | E::Call(_, a) | E::Not(a) => walk(a),
                E::Default(a, b)
                | E::Split(a, b)
                | E::Contains(a, b)
                | E::Cut(_, a, b)
                | E::Cmp(_, a, b)
                | E::And(a, b)
                | E::Or(a, b) => walk(a) || walk(b),
                E::If(c, a, b) => walk(c) || walk(a) || walk(b),
            }
        }
        walk(&self.e)
    }
}

fn read(a: &Accessor, i: &Input) -> Val {
    let text = |s: Option<&str>| s.map_or(Val::Null, |s| Val::Str(s.to_string()));
    match a {
        Accessor::Header(h) => text(
            i.headers
                .and_then(|hs| hs.get(h.as_str()))
                .and_then(|v| v.to_str().ok()),
        ),
        Accessor::Query(q) => i
            .query
            .and_then(|qs| super::common::query_value(qs, q))
            .map_or(Val::Null, Val::Str),
        Accessor::Method => text(i.method),
        Accessor::RequestPath => Val::Str(i.x.path.clone()),
        Accessor::QueryString => Val::Str(i.query.unwrap_or_default().to_string()),
        Accessor::RequestUri => Val::Str(match i.query {
            Some(q) => format!("{}?{q}", i.x.path),
            None => i.x.path.clone(),
        }),
        Accessor::LocalAddress => i.x.local.map_or(Val::Null, |a| Val::Str(a.to_string())),
        Accessor::Scheme => Val::Str(if i.x.tls { "https" } else { "http" }.into()),
        Accessor::RemoteAddress => {
            i.x.client_ip
                .map_or(Val::Null, |ip| Val::Str(ip.to_string()))
        }
        Accessor::Principal => text(i.x.consumer.as_deref()),
        Accessor::Status => i.status.map_or(Val::Null, |s| Val::Num(f64::from(s))),
        Accessor::RequestId => Val::Str(i.x.request_id.clone()),
        Accessor::Route => Val::Str(i.x.route_id.to_string()),
        Accessor::Claim(c) => {
            i.x.claims
                .as_ref()
                .and_then(|claims| claims.get(c))
                .map_or(Val::Null, json_val)
        }
        Accessor::Payload(path) => match i.payload {
            None => Val::Null,
            Some(p) if p.bytes.is_empty() => Val::Null,
            Some(p) if path.is_empty() => Val::Str(String::from_utf8_lossy(p.bytes).into_owned()),
            Some(p) => path
                .iter()
                .try_fold(p.json(), |v, k| v.and_then(|v| v.get(k.as_str())).map(Some))
                .flatten()
                .map_or(Val::Null, json_val),
        },
    }
}

fn json_val(v: &serde_json::Value) -> Val {
    match v {
        serde_json::Value::Null => Val::Null,
        serde_json::Value::Bool(b) => Val::Bool(*b),
        serde_json::Value::Number(n) => n.as_f64().map_or(Val::Null, Val::Num),
        serde_json::Value::String(s) => Val::Str(s.clone()),
        serde_json::Value::Array(items) => Val::List(items.iter().map(json_val).collect()),
        other => Val::Str(other.to_string()),
    }
}

fn eval(e: &E, i: &Input) -> Val {
    match e {
        E::Lit(v) => v.clone(),
        E::Read(a) => read(a, i),
        E::Concat(parts) => {
            let mut out = String::new();
            for p in parts {
                let _ = write!(out, "{}", eval(p, i).text());
            }
            Val::Str(out)
        }
        E::Default(a, b) => match eval(a, i) {
            Val::Null => eval(b, i),
            v => v,
        },
        E::Split(a, sep) => match (eval(a, i), eval(sep, i)) {
            (Val::Null, _) => Val::Null,
            (v, s) => {
                let (v, s) = (v.text(), s.text());
                if s.is_empty() {
                    return Val::List(vec![Val::Str(v)]);
                }
                Val::List(
                    v.split(s.as_str())
                        .map(|p| Val::Str(p.to_string()))
                        .collect(),
                )
            }
        },
        E::List(items) => Val::List(items.iter().map(|e| eval(e, i)).collect()),
        E::Contains(a, b) => {
            let b = eval(b, i);
            Val::Bool(match eval(a, i) {
                Val::List(items) => items.iter().any(|v| same(v, &b)),
                Val::Null => false,
                a => !matches!(b, Val::Null) && a.text().contains(b.text().as_str()),
            })
        }
        E::Index(a, n) => match eval(a, i) {
            Val::List(mut items) if *n < items.len() => items.swap_remove(*n),
            _ => Val::Null,
        },
        E::Uuid => Val::Str(uuid_v4()),
        E::Cut(c, a, b) => match (eval(a, i), eval(b, i)) {
            (Val::Null, _) => Val::Null,
            (a, b) => Val::Str(c.apply(&a.text(), &b.text())),
        },
        E::Call(Func::Size, a) => match eval(a, i) {
            Val::List(items) => Val::Num(items.len() as f64),
            Val::Str(s) => Val::Num(s.chars().count() as f64),
            _ => Val::Null,
        },
        E::Call(f, a) => match eval(a, i) {
            Val::Null => Val::Null,
            v => {
                let t = v.text();
                Val::Str(match f {
                    Func::Lower => t.to_lowercase(),
                    Func::Upper => t.to_uppercase(),
                    Func::Trim => t.trim().to_string(),
                    Func::Size => unreachable!("counted above"),
                })
            }
        },
        E::Cmp(op, a, b) => {
            let (a, b) = (eval(a, i), eval(b, i));
            let ord = order(&a, &b);
            let equal = same(&a, &b);
            use std::cmp::Ordering::*;
            Val::Bool(match op {
                Cmp::Eq => equal,
                Cmp::Ne => !equal,
                Cmp::Lt => ord == Some(Less),
                Cmp::Gt => ord == Some(Greater),
                Cmp::Le => matches!(ord, Some(Less | Equal)),
                Cmp::Ge => matches!(ord, Some(Greater | Equal)),
            })
        }
        E::And(a, b) => Val::Bool(eval(a, i).truthy() && eval(b, i).truthy()),
        E::Or(a, b) => Val::Bool(eval(a, i).truthy() || eval(b, i).truthy()),
        E::Not(a) => Val::Bool(!eval(a, i).truthy()),
        E::If(c, a, b) => {
            if eval(c, i).truthy() {
                eval(a, i)
            } else {
                eval(b, i)
            }
        }
    }
}

/// A random (version 4) UUID, as DataWeave's `uuid()` writes it.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// How two values compare: numerically when both read as numbers, else
/// as text; `null` is unordered.
fn order(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    match (a.number(), b.number(), a, b) {
        (_, _, Val::Null, _) | (_, _, _, Val::Null) => None,
        (Some(x), Some(y), _, _) => x.partial_cmp(&y),
        _ => Some(a.text().cmp(&b.text())),
    }
}

/// `==`: `null` equals only `null`.
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Null, _) | (_, Val::Null) => false,
        _ => order(a, b) == Some(std::cmp::Ordering::Equal),
    }
}

// --- lexing and parsing ---------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Num(n) => num_text(*n),
            Tok::Sym(s) => s.to_string(),
        }
    }
}

const SYMBOLS: &[&str] = &[
    "++", "==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ".", ",",
];

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = text[i + 1..]
                .find(c)
                .ok_or_else(|| format!("unclosed string in `{text}`"))?;
            out.push(Tok::Str(text[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else if c.is_ascii_digit() {
            let end = text[i..]
                .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
                .map_or(text.len(), |e| i + e);
            let n = text[i..end]
                .parse()
                .map_err(|_| format!("`{}` is not a number", &text[i..end]))?;
            out.push(Tok::Num(n));
            i = end;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = text[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'))
                .map_or(text.len(), |e| i + e);
            out.push(Tok::Ident(text[i..end].to_string()));
            i = end;
        } else if let Some(s) = SYMBOLS.iter().find(|s| text[i..].starts_with(*s)) {
            out.push(Tok::Sym(s));
            i += s.len();
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(format!(
                "`{ch}` is not supported in expressions (supported: {SUPPORTED})"
            ));
        }
    }
    Ok(out)
}

struct Parser<'t> {
    t: &'t [Tok],
    i: usize,
    /// `payload` may be read.
    payload: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Ident(x)) => Some(x.as_str()),
            _ => None,
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == w)
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.is_sym(s) {
            self.i += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                Some(t) => format!("expected `{s}`, found `{}`", t.text()),
                None => format!("expected `{s}` at the end"),
            })
        }
    }

    fn expr(&mut self) -> Result<E, String> {
        if self.is_word("if") {
            self.i += 1;
            self.expect_sym("(")?;
            let c = self.expr()?;
            self.expect_sym(")")?;
            let a = self.expr()?;
            if !self.is_word("else") {
                return Err("`if (...) a` needs `else b`".into());
            }
            self.i += 1;
            let b = self.expr()?;
            return Ok(E::If(Box::new(c), Box::new(a), Box::new(b)));
        }
        self.or()
    }

    fn or(&mut self) -> Result<E, String> {
        let mut a = self.and()?;
        while self.is_word("or") {
            self.i += 1;
            a = E::Or(Box::new(a), Box::new(self.and()?));
        }
        Ok(a)
    }

    fn and(&mut self) -> Result<E, String> {
        let mut a = self.not()?;
        while self.is_word("and") {
            self.i += 1;
            a = E::And(Box::new(a), Box::new(self.not()?));
        }
        Ok(a)
    }

    fn not(&mut self) -> Result<E, String> {
        if self.is_word("not") {
            self.i += 1;
            return Ok(E::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<E, String> {
        let a = self.concat()?;
        let op = match self.peek() {
            Some(Tok::Sym("==")) => Cmp::Eq,
            Some(Tok::Sym("!=")) => Cmp::Ne,
            Some(Tok::Sym("<")) => Cmp::Lt,
            Some(Tok::Sym(">")) => Cmp::Gt,
            Some(Tok::Sym("<=")) => Cmp::Le,
            Some(Tok::Sym(">=")) => Cmp::Ge,
            _ => return Ok(a),
        };
        self.i += 1;
        Ok(E::Cmp(op, Box::new(a), Box::new(self.concat()?)))
    }

    fn concat(&mut self) -> Result<E, String> {
        let first = self.infix()?;
        let mut parts = vec![first];
        while self.is_sym("++") {
            self.i += 1;
            parts.push(self.infix()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one")
        } else {
            E::Concat(parts)
        })
    }

    fn infix(&mut self) -> Result<E, String> {
        let mut a = self.postfix()?;
        loop {
            if self.is_word("default") {
                self.i += 1;
                a = E::Default(Box::new(a), Box::new(self.postfix()?));
            } else if self.is_word("splitBy") {
                self.i += 1;
                a = E::Split(Box::new(a), Box::new(self.postfix()?));
            } else if self.is_word("contains") {
                self.i += 1;
                a = E::Contains(Box::new(a), Box::new(self.postfix()?));
            } else if let Some(c) = self.peek_word().and_then(Cut::named) {
                self.i += 1;
                a = E::Cut(c, Box::new(a), Box::new(self.postfix()?));
            } else {
                return Ok(a);
            }
        }
    }

    fn postfix(&mut self) -> Result<E, String> {
        let mut a = self.primary()?;
        while self.is_sym("[") {
            self.i += 1;
            let n = match self.peek() {
                Some(Tok::Num(n)) if n.fract() == 0.0 && *n >= 0.0 => *n as usize,
                _ => return Err("an index is a whole number: (…)[0]".into()),
            };
            self.i += 1;
            self.expect_sym("]")?;
            a = E::Index(Box::new(a), n);
        }
        Ok(a)
    }

    fn primary(&mut self) -> Result<E, String> {
        let Some(t) = self.peek().cloned() else {
            return Err("the expression ends too early".into());
        };
        self.i += 1;
        match t {
            Tok::Str(s) => Ok(E::Lit(Val::Str(s))),
            Tok::Num(n) => Ok(E::Lit(Val::Num(n))),
            Tok::Sym("(") => {
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("[") => {
                let mut items = Vec::new();
                while !self.is_sym("]") {
                    items.push(self.expr()?);
                    if !self.is_sym("]") {
                        self.expect_sym(",")?;
                    }
                }
                self.i += 1;
                Ok(E::List(items))
            }
            Tok::Ident(w) => match w.as_str() {
                "true" => Ok(E::Lit(Val::Bool(true))),
                "false" => Ok(E::Lit(Val::Bool(false))),
                "null" => Ok(E::Lit(Val::Null)),
                "lower" | "upper" | "trim" | "sizeOf" if self.is_sym("(") => {
                    self.i += 1;
                    let a = self.expr()?;
                    self.expect_sym(")")?;
                    let f = match w.as_str() {
                        "lower" => Func::Lower,
                        "upper" => Func::Upper,
                        "sizeOf" => Func::Size,
                        _ => Func::Trim,
                    };
                    Ok(E::Call(f, Box::new(a)))
                }
                "uuid" if self.is_sym("(") => {
                    self.i += 1;
                    self.expect_sym(")")?;
                    Ok(E::Uuid)
                }
                "contains" if self.is_sym("(") => {
                    let (a, b) = self.two_args()?;
                    Ok(E::Contains(Box::new(a), Box::new(b)))
                }
                _ if self.is_sym("(") && Cut::named(&w).is_some() => {
                    let (a, b) = self.two_args()?;
                    let c = Cut::named(&w).expect("checked");
                    Ok(E::Cut(c, Box::new(a), Box::new(b)))
                }
                _ if self.is_sym("(") => Err(format!(
                    "`{w}(...)` is not supported in expressions (supported: {SUPPORTED})"
                )),
                _ => self.path(w),
            },
            other => Err(format!("unexpected `{}`", other.text())),
        }
    }

    /// `(a, b)`.
    fn two_args(&mut self) -> Result<(E, E), String> {
        self.expect_sym("(")?;
        let a = self.expr()?;
        self.expect_sym(",")?;
        let b = self.expr()?;
        self.expect_sym(")")?;
        Ok((a, b))
    }

    /// `a.b.c`, `a.b['c']`: one of the known accessors.
    fn path(&mut self, first: String) -> Result<E, String> {
        let mut segs = vec![first];
        loop {
            if self.is_sym(".") {
                self.i += 1;
                match self.peek().cloned() {
                    Some(Tok::Ident(w)) => {
                        self.i += 1;
                        segs.push(w);
                    }
                    _ => return Err(format!("a name must follow `{}.`", segs.join("."))),
                }
            } else if self.is_sym("[") && matches!(self.t.get(self.i + 1), Some(Tok::Str(_))) {
                let Some(Tok::Str(s)) = self.t.get(self.i + 1).cloned() else {
                    unreachable!("checked above")
                };
                self.i += 2;
                self.expect_sym("]")?;
                segs.push(s);
            } else {
                break;
            }
        }
        let whole = segs.join(".");
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let a = match s.as_slice() {
            ["attributes", "headers", h] => Accessor::Header(h.to_ascii_lowercase()),
            ["attributes", "queryParams", q] => Accessor::Query(q.to_string()),
            ["attributes", "method"] => Accessor::Method,
            ["attributes", "requestPath"] => Accessor::RequestPath,
            ["attributes", "queryString"] => Accessor::QueryString,
            ["attributes", "requestUri"] => Accessor::RequestUri,
            ["attributes", "localAddress"] => Accessor::LocalAddress,
            ["attributes", "scheme"] => Accessor::Scheme,
            ["attributes", "remoteAddress"] => Accessor::RemoteAddress,
            ["authentication", "principal" | "clientId"] => Accessor::Principal,
            ["vars", "claimSet", c] => Accessor::Claim(c.to_string()),
            ["attributes", "statusCode"] => Accessor::Status,
            ["vars", "reqId"] => Accessor::RequestId,
            ["vars", "apiName" | "apiInstanceName"] => Accessor::Route,
            ["payload", rest @ ..] if self.payload => {
                Accessor::Payload(rest.iter().map(|k| k.to_string()).collect())
            }
            ["payload", ..] => {
                return Err(format!(
                    "`{whole}` (the body) is read only by message logging (supported here: {SUPPORTED})"
                ))
            }
            _ => {
                return Err(format!(
                    "`{whole}` is not supported in expressions (supported: {SUPPORTED})"
                ))
            }
        };
        Ok(E::Read(a))
    }
}

/// A value with `#[...]` expressions among literal text: the pieces.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}

pub fn parse_value(text: &str) -> Result<Vec<Piece>, String> {
    parse_value_with(text, false)
}

/// As [`parse_value`]; `payload` may be read when `payload` is true.
pub fn parse_value_with(text: &str, payload: bool) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[") {
        if i > 0 {
            out.push(Piece::Text(rest[..i].to_string()));
        }
        let body = &rest[i + 2..];
        let end = closing(body).ok_or_else(|| format!("unclosed `#[` in {text:?}"))?;
        out.push(Piece::Expr(Expr::parse_with(&body[..end], payload)?));
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// The `]` closing an expression, skipping nested brackets and strings.
pub(crate) fn closing(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn run(expr: &str) -> Val {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", " Acme ".parse().unwrap());
        headers.insert("x-forwarded-for", "10.0.0.1, 10.0.0.2".parse().unwrap());
        let mut x = Exchange::new();
        x.path = "/orders/7".into();
        x.client_ip = Some("192.0.2.7".parse().unwrap());
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"sub":"u1","level":3,"roles":["a","b"]}"#).unwrap();
        x.claims = Some(Arc::new(claims));
        let body = Payload::new(br#"{"id":7,"item":{"sku":"A-1"},"tags":["x","y"]}"#, false);
        let input = Input {
            method: Some("GET"),
            query: Some("page=2&q=a+b"),
            headers: Some(&headers),
            x: &x,
            status: None,
            payload: Some(&body),
        };
        Expr::parse_with(expr, true)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .eval(&input)
    }

    fn s(v: &str) -> Val {
        Val::Str(v.into())
    }

    #[test]
    fn lists_and_contains() {
        // Flex's default responseExpression for http-caching-flex
        let cached = "[200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501] contains attributes.statusCode";
        let e = Expr::parse(cached).unwrap();
        let x = Exchange::new();
        let with = |status| Input {
            method: None,
            query: None,
            headers: None,
            x: &x,
            status,
            payload: None,
        };
        assert_eq!(e.eval(&with(Some(404))), Val::Bool(true));
        assert_eq!(e.eval(&with(Some(500))), Val::Bool(false));
        assert_eq!(e.eval(&with(None)), Val::Bool(false));
        assert_eq!(
            run("['GET', 'HEAD'] contains attributes.method"),
            Val::Bool(true)
        );
        assert_eq!(
            run("attributes.requestPath contains 'ders/'"),
            Val::Bool(true)
        );
        assert_eq!(run("attributes.requestPath contains 'x'"), Val::Bool(false));
        assert_eq!(
            run("attributes.headers.missing contains 'x'"),
            Val::Bool(false)
        );
        assert_eq!(run("[]"), Val::List(vec![]));
        assert!(Expr::parse("[1, 2").is_err());
        // the rest of Flex's DataWeave subset
        assert_eq!(run("attributes.queryString"), s("page=2&q=a+b"));
        assert_eq!(run("attributes.requestUri"), s("/orders/7?page=2&q=a+b"));
        assert_eq!(run("attributes.scheme"), s("http"));
        assert_eq!(run("sizeOf(attributes.requestPath)"), Val::Num(9.0));
        assert_eq!(
            run("sizeOf(attributes.requestPath splitBy '/')"),
            Val::Num(3.0)
        );
        assert_eq!(
            run("contains(attributes.requestPath, '/7')"),
            Val::Bool(true)
        );
        assert_eq!(
            run("substringAfter(attributes.requestPath, '/')"),
            s("orders/7")
        );
        assert_eq!(run("attributes.requestPath substringAfterLast '/'"), s("7"));
        assert_eq!(run("substringBefore('a.b.c', '.')"), s("a"));
        assert_eq!(run("substringBeforeLast('a.b.c', '.')"), s("a.b"));
        assert_eq!(run("substringAfter('abc', 'x')"), s(""));
        let (a, b) = (run("uuid()").text(), run("uuid()").text());
        assert!(a.len() == 36 && a != b && a.as_bytes()[14] == b'4', "{a}");
        assert!(Expr::parse("[1 2]").is_err());
    }

    #[test]
    fn accessors() {
        assert_eq!(run("attributes.headers['X-Tenant']"), s(" Acme "));
        assert_eq!(run("attributes.headers.missing"), Val::Null);
        assert_eq!(run("attributes.queryParams['q']"), s("a b"));
        assert_eq!(run("attributes.method"), s("GET"));
        assert_eq!(run("attributes.requestPath"), s("/orders/7"));
        assert_eq!(run("attributes.remoteAddress"), s("192.0.2.7"));
        assert_eq!(run("vars.claimSet.sub"), s("u1"));
        assert_eq!(run("authentication.principal"), Val::Null);
        assert_eq!(run("payload.id"), Val::Num(7.0));
        assert_eq!(run("payload.item['sku']"), s("A-1"));
        assert_eq!(run("payload.tags[1]"), s("y"));
        assert_eq!(run("payload.none.deeper"), Val::Null);
        assert!(run("payload").text().starts_with(r#"{"id":7,"#));
    }

    #[test]
    fn payload_cut_short_or_not_json_is_text_only() {
        let x = Exchange::new();
        let eval = |body: &Payload, e: &str| {
            let input = Input {
                method: None,
                query: None,
                headers: None,
                x: &x,
                status: None,
                payload: Some(body),
            };
            Expr::parse_with(e, true).unwrap().eval(&input)
        };
        let cut = Payload::new(br#"{"id":7}"#, true);
        assert_eq!(eval(&cut, "payload.id"), Val::Null);
        assert_eq!(eval(&cut, "payload"), s(r#"{"id":7}"#));
        let text = Payload::new(b"id=7", false);
        assert_eq!(eval(&text, "payload.id"), Val::Null);
        assert_eq!(
            eval(&Payload::default(), "payload default 'none'"),
            s("none")
        );
        assert!(Expr::parse_with("lower(payload.a) == 'x'", true)
            .unwrap()
            .reads_payload());
        assert!(!Expr::parse_with("attributes.method", true)
            .unwrap()
            .reads_payload());
    }

    #[test]
    fn operators() {
        assert_eq!(
            run("'t-' ++ trim(lower(attributes.headers['x-tenant']))"),
            s("t-acme")
        );
        assert_eq!(
            run("attributes.headers['x-none'] default 'anon'"),
            s("anon")
        );
        assert_eq!(
            run("trim((attributes.headers['x-forwarded-for'] splitBy ',')[1])"),
            s("10.0.0.2")
        );
        assert_eq!(run("upper(attributes.method) == 'GET'"), Val::Bool(true));
        assert_eq!(
            run("vars.claimSet.level >= 3 and not (attributes.method != 'GET')"),
            Val::Bool(true)
        );
        assert_eq!(run("vars.claimSet.level < 3 or false"), Val::Bool(false));
        assert_eq!(
            run("if (vars.claimSet.level > 2) 'gold' else 'basic'"),
            s("gold")
        );
        assert_eq!(run("vars.claimSet.roles").text(), "a,b");
    }

    #[test]
    fn outside_the_subset_is_an_error_naming_the_part() {
        let e = Expr::parse("now()").unwrap_err();
        assert!(e.contains("`now(...)`"), "{e}");
        let e = Expr::parse("payload.id").unwrap_err();
        assert!(
            e.contains("`payload.id`") && e.contains("message logging"),
            "{e}"
        );
        let e = Expr::parse("if (true) 'a'").unwrap_err();
        assert!(e.contains("else"), "{e}");
        assert!(Expr::parse("attributes.method ~= 'x'").is_err());
        assert!(parse_value("#[attributes.method")
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn values_mix_text_and_expressions() {
        let p = parse_value("Bearer #['v=' ++ vars.claimSet.sub] end").unwrap();
        assert_eq!(p.len(), 3);
        assert!(matches!(&p[0], Piece::Text(t) if t == "Bearer "));
        assert!(matches!(&p[2], Piece::Text(t) if t == " end"));
    }
}
