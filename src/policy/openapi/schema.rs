//! JSON Schema as OpenAPI 3.0 and 3.1 use it, checked against a value:
//! `type` (a list too, `null`; 3.0's `nullable`), `enum`, `const`,
//! `multipleOf`, `minimum`/`maximum` and their exclusive forms (3.0's
//! booleans, 3.1's numbers), `minLength`/`maxLength` (characters),
//! `pattern`, `format` (`date`, `date-time`, `uuid`, `email`, `ipv4`,
//! `ipv6`, `int32`, `int64`), `items`, `minItems`/`maxItems`,
//! `uniqueItems`, `properties`, `required`, `additionalProperties`,
//! `minProperties`/`maxProperties`, `allOf`/`anyOf`/`oneOf`/`not`, and
//! `$ref` within the document (`#/components/schemas/...`). Other keywords
//! are not checked (documented).
//!
//! Regular expressions are compiled once, when the document loads
//! ([`Patterns`]); a document whose pattern or `$ref` does not resolve is
//! refused then, not at the first request.

use serde_json::Value;
use std::collections::HashMap;

/// A value breaks the schema: where (a JSON pointer into the value) and
/// which keyword.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub at: String,
    pub rule: &'static str,
    pub message: String,
}

/// Every `pattern` of the document, compiled.
#[derive(Debug, Default)]
pub struct Patterns(HashMap<String, regex::Regex>);

/// How deep `$ref`s and nesting may go while checking (a recursive schema
/// checks a value as deep as the value is; this bounds a hostile one).
const MAX_DEPTH: usize = 128;

impl Patterns {
    /// Walk the whole document: compile each pattern, resolve each `$ref`.
    pub fn compile(doc: &Value) -> Result<Patterns, String> {
        let mut p = Patterns::default();
        let mut stack = vec![("#".to_string(), doc)];
        while let Some((at, v)) = stack.pop() {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(re)) = m.get("pattern") {
                        if !p.0.contains_key(re) {
                            let compiled = regex::Regex::new(re)
                                .map_err(|e| format!("{at}/pattern: {re:?} is not a regular expression we can run: {e}"))?;
                            p.0.insert(re.clone(), compiled);
                        }
                    }
                    if let Some(Value::String(r)) = m.get("$ref") {
                        resolve(doc, r).ok_or_else(|| {
                            format!("{at}/$ref: {r:?} does not resolve within the document")
                        })?;
                    }
                    for (k, c) in m {
                        stack.push((format!("{at}/{k}"), c));
                    }
                }
                Value::Array(items) => {
                    for (i, c) in items.iter().enumerate() {
                        stack.push((format!("{at}/{i}"), c));
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// A `#/a/b` reference within the document.
pub fn resolve<'d>(doc: &'d Value, r: &str) -> Option<&'d Value> {
    let pointer = r.strip_prefix('#')?;
    let pointer = percent_encoding::percent_decode_str(pointer)
        .decode_utf8()
        .ok()?;
    doc.pointer(&pointer)
}

/// Where a value is within the checked one: a JSON pointer, written out
/// only when a check fails (a passing check allocates none).
#[derive(Clone, Copy)]
enum Loc<'a> {
    Root,
    Index(&'a Loc<'a>, usize),
    Key(&'a Loc<'a>, &'a str),
}

impl Loc<'_> {
    fn render(&self) -> String {
        match self {
            Loc::Root => String::new(),
            Loc::Index(parent, i) => format!("{}/{i}", parent.render()),
            Loc::Key(parent, k) => format!(
                "{}/{}",
                parent.render(),
                k.replace('~', "~0").replace('/', "~1")
            ),
        }
    }
}

fn fail(at: &Loc, rule: &'static str, message: String) -> Result<(), Breach> {
    Err(Breach {
        at: at.render(),
        rule,
        message,
    })
}

pub struct Checker<'d> {
    pub doc: &'d Value,
    pub patterns: &'d Patterns,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    let have = type_name(v);
    want == have || (want == "number" && have == "integer")
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A schema's keywords, read in one pass over its map (a value's check
/// then looks at fields, not at the map once per keyword).
#[derive(Default)]
struct Kw<'s> {
    reference: Option<&'s str>,
    nullable: bool,
    ty: Option<&'s Value>,
    one_of_values: Option<&'s Vec<Value>>,
    constant: Option<&'s Value>,
    all_of: Option<&'s Vec<Value>>,
    any_of: Option<&'s Vec<Value>>,
    one_of: Option<&'s Vec<Value>>,
    not: Option<&'s Value>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    /// 3.0's booleans.
    exclusive_min_flag: bool,
    exclusive_max_flag: bool,
    /// 3.1's numbers.
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    multiple_of: Option<f64>,
    format: Option<&'s str>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<&'s str>,
    items: Option<&'s Value>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    required: Option<&'s Vec<Value>>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    properties: Option<&'s serde_json::Map<String, Value>>,
    additional: Option<&'s Value>,
}

impl<'s> Kw<'s> {
    fn of(s: &'s serde_json::Map<String, Value>) -> Kw<'s> {
        let mut k = Kw::default();
        for (key, v) in s {
            match key.as_str() {
                "$ref" => k.reference = v.as_str(),
                "nullable" => k.nullable = v == &Value::Bool(true),
                "type" => k.ty = Some(v),
                "enum" => k.one_of_values = v.as_array(),
                "const" => k.constant = Some(v),
                "allOf" => k.all_of = v.as_array(),
                "anyOf" => k.any_of = v.as_array(),
                "oneOf" => k.one_of = v.as_array(),
                "not" => k.not = Some(v),
                "minimum" => k.minimum = v.as_f64(),
                "maximum" => k.maximum = v.as_f64(),
                "exclusiveMinimum" => match v {
                    Value::Bool(b) => k.exclusive_min_flag = *b,
                    _ => k.exclusive_minimum = v.as_f64(),
                },
                "exclusiveMaximum" => match v {
                    Value::Bool(b) => k.exclusive_max_flag = *b,
                    _ => k.exclusive_maximum = v.as_f64(),
                },
                "multipleOf" => k.multiple_of = v.as_f64().filter(|m| *m > 0.0),
                "format" => k.format = v.as_str(),
                "minLength" => k.min_length = v.as_u64(),
                "maxLength" => k.max_length = v.as_u64(),
                "pattern" => k.pattern = v.as_str(),
                "items" => k.items = Some(v),
                "minItems" => k.min_items = v.as_u64(),
                "maxItems" => k.max_items = v.as_u64(),
                "uniqueItems" => k.unique_items = v == &Value::Bool(true),
                "required" => k.required = v.as_array(),
                "minProperties" => k.min_properties = v.as_u64(),
                "maxProperties" => k.max_properties = v.as_u64(),
                "properties" => k.properties = v.as_object(),
                "additionalProperties" => k.additional = Some(v),
                _ => {}
            }
        }
        k
    }
}

impl Checker<'_> {
    /// The first breach of `schema` by `v` (its `at`: a JSON pointer
    /// into `v`, empty for `v` itself).
    pub fn check(&self, schema: &Value, v: &Value) -> Result<(), Breach> {
        self.check_depth(schema, v, &Loc::Root, 0)
    }

    fn check_depth(&self, schema: &Value, v: &Value, at: &Loc, depth: usize) -> Result<(), Breach> {
        if depth > MAX_DEPTH {
            return fail(at, "depth", format!("nested deeper than {MAX_DEPTH}"));
        }
        let s = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return fail(at, "false", "no value is allowed here".into()),
            Value::Object(s) => s,
            _ => return Ok(()),
        };
        let k = Kw::of(s);
        if let Some(r) = k.reference {
            // OpenAPI 3.0: $ref's siblings are ignored; 3.1 applies both
            let target = resolve(self.doc, r).unwrap_or(&Value::Bool(true));
            self.check_depth(target, v, at, depth + 1)?;
        }
        if v.is_null() && k.nullable {
            return Ok(());
        }
        match k.ty {
            Some(Value::String(t)) if !type_matches(t, v) => {
                return fail(at, "type", format!("{} is not of type {t}", show(v)));
            }
            Some(Value::Array(ts))
                if !ts
                    .iter()
                    .any(|t| t.as_str().is_some_and(|t| type_matches(t, v))) =>
            {
                let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
                return fail(
                    at,
                    "type",
                    format!("{} is not of type {}", show(v), names.join(" or ")),
                );
            }
            _ => {}
        }
        if let Some(options) = k.one_of_values {
            if !options.contains(v) {
                return fail(
                    at,
                    "enum",
                    format!("{} is not one of the allowed values", show(v)),
                );
            }
        }
        if let Some(c) = k.constant {
            if c != v {
                return fail(at, "const", format!("{} is not {}", show(v), show(c)));
            }
        }
        match v {
            Value::Number(n) => number(&k, n.as_f64().unwrap_or(0.0), at)?,
            Value::String(text) => self.string(&k, text, at)?,
            Value::Array(items) => self.array(&k, items, at, depth)?,
            Value::Object(m) => self.object(&k, m, at, depth)?,
            _ => {}
        }
        for sub in k.all_of.into_iter().flatten() {
            self.check_depth(sub, v, at, depth + 1)?;
        }
        if let Some(any) = k.any_of {
            if !any
                .iter()
                .any(|sub| self.check_depth(sub, v, at, depth + 1).is_ok())
            {
                return fail(at, "anyOf", "matches none of the allowed schemas".into());
            }
        }
        if let Some(one) = k.one_of {
            let n = one
                .iter()
                .filter(|sub| self.check_depth(sub, v, at, depth + 1).is_ok())
                .count();
            if n != 1 {
                return fail(
                    at,
                    "oneOf",
                    format!("matches {n} of the schemas, not exactly one"),
                );
            }
        }
        if let Some(not) = k.not {
            if self.check_depth(not, v, at, depth + 1).is_ok() {
                return fail(at, "not", "matches a schema it must not".into());
            }
        }
        Ok(())
    }

    fn string(&self, k: &Kw, text: &str, at: &Loc) -> Result<(), Breach> {
        let len = || text.chars().count() as u64;
        if let Some(m) = k.min_length {
            if len() < m {
                return fail(at, "minLength", format!("shorter than {m} characters"));
            }
        }
        if let Some(m) = k.max_length {
            if len() > m {
                return fail(at, "maxLength", format!("longer than {m} characters"));
            }
        }
        if let Some(p) = k.pattern {
            if let Some(re) = self.patterns.0.get(p) {
                if !re.is_match(text) {
                    return fail(at, "pattern", format!("does not match {p:?}"));
                }
            }
        }
        let ok = match k.format {
            Some("date") => is_date(text),
            Some("date-time") => is_date_time(text),
            Some("uuid") => is_uuid(text),
            Some("email") => is_email(text),
            Some("ipv4") => text.parse::<std::net::Ipv4Addr>().is_ok(),
            Some("ipv6") => text.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => true,
        };
        if !ok {
            return fail(
                at,
                "format",
                format!(
                    "{} is not a valid {}",
                    show(&Value::String(text.into())),
                    k.format.unwrap_or_default()
                ),
            );
        }
        Ok(())
    }

    fn array(&self, k: &Kw, items: &[Value], at: &Loc, depth: usize) -> Result<(), Breach> {
        if let Some(m) = k.min_items {
            if (items.len() as u64) < m {
                return fail(at, "minItems", format!("fewer than {m} items"));
            }
        }
        if let Some(m) = k.max_items {
            if items.len() as u64 > m {
                return fail(at, "maxItems", format!("more than {m} items"));
            }
        }
        if k.unique_items {
            for (i, a) in items.iter().enumerate() {
                if items[..i].contains(a) {
                    return fail(
                        at,
                        "uniqueItems",
                        format!("item {i} repeats an earlier one"),
                    );
                }
            }
        }
        if let Some(schema) = k.items {
            for (i, item) in items.iter().enumerate() {
                self.check_depth(schema, item, &Loc::Index(at, i), depth + 1)?;
            }
        }
        Ok(())
    }

    fn object(
        &self,
        k: &Kw,
        m: &serde_json::Map<String, Value>,
        at: &Loc,
        depth: usize,
    ) -> Result<(), Breach> {
        for name in k.required.into_iter().flatten().filter_map(Value::as_str) {
            if !m.contains_key(name) {
                return fail(at, "required", format!("{name:?} is required"));
            }
        }
        if let Some(n) = k.min_properties {
            if (m.len() as u64) < n {
                return fail(at, "minProperties", format!("fewer than {n} properties"));
            }
        }
        if let Some(n) = k.max_properties {
            if m.len() as u64 > n {
                return fail(at, "maxProperties", format!("more than {n} properties"));
            }
        }
        for (name, v) in m {
            let here = Loc::Key(at, name);
            match k.properties.and_then(|p| p.get(name)) {
                Some(schema) => self.check_depth(schema, v, &here, depth + 1)?,
                None => match k.additional {
                    Some(Value::Bool(false)) => {
                        return fail(
                            at,
                            "additionalProperties",
                            format!("{name:?} is not an allowed property"),
                        );
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.check_depth(extra, v, &here, depth + 1)?
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

fn number(k: &Kw, n: f64, at: &Loc) -> Result<(), Breach> {
    if let Some(m) = k.minimum {
        if n < m || (k.exclusive_min_flag && n == m) {
            return fail(
                at,
                "minimum",
                format!("{n} is less than the minimum of {m}"),
            );
        }
    }
    if let Some(m) = k.maximum {
        if n > m || (k.exclusive_max_flag && n == m) {
            return fail(
                at,
                "maximum",
                format!("{n} is greater than the maximum of {m}"),
            );
        }
    }
    if let Some(m) = k.exclusive_minimum {
        if n <= m {
            return fail(
                at,
                "exclusiveMinimum",
                format!("{n} is not greater than {m}"),
            );
        }
    }
    if let Some(m) = k.exclusive_maximum {
        if n >= m {
            return fail(at, "exclusiveMaximum", format!("{n} is not less than {m}"));
        }
    }
    if let Some(m) = k.multiple_of {
        let q = n / m;
        if (q - q.round()).abs() > 1e-9 {
            return fail(at, "multipleOf", format!("{n} is not a multiple of {m}"));
        }
    }
    match k.format {
        Some("int32")
            if n.fract() != 0.0 || !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&n) =>
        {
            fail(at, "format", format!("{n} is not an int32"))
        }
        Some("int64")
            if n.fract() != 0.0
                || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n) =>
        {
            fail(at, "format", format!("{n} is not an int64"))
        }
        _ => Ok(()),
    }
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD` (RFC 3339 full-date).
fn is_date(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    if p.len() != 3 || !digits(p[0], 4) || !digits(p[1], 2) || !digits(p[2], 2) {
        return false;
    }
    let (y, m, d): (u32, u32, u32) = (
        p[0].parse().unwrap_or(0),
        p[1].parse().unwrap_or(0),
        p[2].parse().unwrap_or(0),
    );
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 date-time: `2026-12-04T15:16:59Z`, fractions and offsets.
fn is_date_time(s: &str) -> bool {
    let Some((date, time)) = s.split_once(['T', 't']) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, None)
    } else if let Some(i) = time.rfind(['+', '-']) {
        (&time[..i], Some(&time[i + 1..]))
    } else {
        return false;
    };
    let clock = clock.split_once('.').map_or(clock, |(c, frac)| {
        if digits(frac, frac.len()) && !frac.is_empty() {
            c
        } else {
            "x"
        }
    });
    let hms: Vec<&str> = clock.split(':').collect();
    let two = |t: &str, max: u32| digits(t, 2) && t.parse::<u32>().is_ok_and(|n| n <= max);
    let clock_ok = hms.len() == 3 && two(hms[0], 23) && two(hms[1], 59) && two(hms[2], 60);
    let offset_ok = offset.is_none_or(|o| {
        let hm: Vec<&str> = o.split(':').collect();
        hm.len() == 2 && two(hm[0], 23) && two(hm[1], 59)
    });
    clock_ok && offset_ok
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, v: Value) -> Result<(), Breach> {
        let mut doc = json!({"components": {"schemas": {"Qty": {"type": "integer", "minimum": 1},
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}}}}}});
        doc["x-checked"] = schema.clone();
        let patterns = Patterns::compile(&doc).unwrap();
        Checker {
            doc: &doc,
            patterns: &patterns,
        }
        .check(&schema, &v)
    }

    fn rule(schema: Value, v: Value) -> &'static str {
        check(schema, v).unwrap_err().rule
    }

    #[test]
    fn keywords() {
        assert!(check(json!({"type": "integer"}), json!(3)).is_ok());
        assert!(check(json!({"type": "number"}), json!(3)).is_ok());
        assert_eq!(rule(json!({"type": "integer"}), json!(3.5)), "type");
        assert_eq!(rule(json!({"type": "string"}), json!(null)), "type");
        assert!(check(json!({"type": "string", "nullable": true}), json!(null)).is_ok());
        assert!(check(json!({"type": ["string", "null"]}), json!(null)).is_ok());
        assert_eq!(rule(json!({"enum": ["a", "b"]}), json!("c")), "enum");
        assert_eq!(rule(json!({"minimum": 1}), json!(0)), "minimum");
        assert_eq!(
            rule(json!({"minimum": 1, "exclusiveMinimum": true}), json!(1)),
            "minimum"
        );
        assert_eq!(
            rule(json!({"exclusiveMaximum": 10}), json!(10)),
            "exclusiveMaximum"
        );
        assert_eq!(rule(json!({"multipleOf": 0.5}), json!(1.25)), "multipleOf");
        assert_eq!(rule(json!({"maxLength": 3}), json!("abcd")), "maxLength");
        assert!(
            check(json!({"maxLength": 3}), json!("äöü")).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(
            rule(json!({"pattern": "^[A-Z]{3}-\\d+$"}), json!("ab-1")),
            "pattern"
        );
        assert_eq!(
            rule(json!({"format": "date"}), json!("2026-02-30")),
            "format"
        );
        assert!(check(
            json!({"format": "date-time"}),
            json!("2026-12-04T15:16:59.5+01:00")
        )
        .is_ok());
        assert_eq!(
            rule(json!({"format": "date-time"}), json!("2026-12-04 15:16")),
            "format"
        );
        assert_eq!(
            rule(json!({"format": "uuid"}), json!("not-a-uuid")),
            "format"
        );
        assert_eq!(
            rule(json!({"format": "int32"}), json!(3_000_000_000i64)),
            "format"
        );
        assert_eq!(
            rule(json!({"type": "array", "maxItems": 1}), json!([1, 2])),
            "maxItems"
        );
        assert_eq!(
            rule(json!({"uniqueItems": true}), json!([1, 1])),
            "uniqueItems"
        );
        assert_eq!(rule(json!({"required": ["id"]}), json!({})), "required");
        assert_eq!(
            rule(
                json!({"properties": {"a": {}}, "additionalProperties": false}),
                json!({"b": 1})
            ),
            "additionalProperties"
        );
        assert_eq!(
            rule(
                json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
                json!(true)
            ),
            "anyOf"
        );
        assert_eq!(
            rule(
                json!({"oneOf": [{"type": "number"}, {"type": "integer"}]}),
                json!(1)
            ),
            "oneOf"
        );
        assert_eq!(rule(json!({"not": {"type": "null"}}), json!(null)), "not");
        assert_eq!(
            rule(
                json!({"allOf": [{"type": "integer"}, {"maximum": 2}]}),
                json!(3)
            ),
            "maximum"
        );
    }

    #[test]
    fn refs_and_pointers() {
        let e = check(
            json!({"type": "object", "properties": {"items": {"type": "array", "items": {"properties": {"qty": {"$ref": "#/components/schemas/Qty"}}}}}}),
            json!({"items": [{"qty": 2}, {"qty": 0}]}),
        )
        .unwrap_err();
        assert_eq!((e.at.as_str(), e.rule), ("/items/1/qty", "minimum"));
        // a recursive schema checks as deep as the value, bounded
        let mut deep = json!({});
        for _ in 0..200 {
            deep = json!({"next": deep});
        }
        assert_eq!(
            rule(json!({"$ref": "#/components/schemas/Node"}), deep),
            "depth"
        );
        assert!(Patterns::compile(&json!({"$ref": "#/nowhere"})).is_err());
        assert!(Patterns::compile(&json!({"pattern": "(unclosed"})).is_err());
    }
}
