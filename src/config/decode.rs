//! Turning position-carrying YAML nodes into typed values, collecting every
//! problem instead of stopping at the first.
//!
//! Each accessor takes the node and its field path (`spec.routes[1].upstream.url`)
//! and returns `None` after recording an error that names file, line, column,
//! field and what was expected.

use super::fields::{Field, Known};
use super::yaml::{Node, Pos, Value};
use std::fmt;
use std::time::Duration;

/// One problem in the configuration, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub pos: Pos,
    /// Field path, e.g. `spec.routes[1].upstream.url`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.col)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a load, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The fields of a mapping, after unknown and duplicate keys were reported.
pub struct Fields<'n> {
    pub pos: Pos,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, v)| *k == key && !v.is_null())
            .map(|(_, v)| *v)
    }

    pub fn keys(&self) -> impl Iterator<Item = (&'n str, &'n Node)> + '_ {
        self.entries.iter().copied()
    }
}

/// Collects errors for one file.
pub struct Decoder {
    pub file: String,
    pub errors: Vec<ConfigError>,
    /// Values that came from `${ENV}` / `file:` references, scrubbed from
    /// every message (and, through the config, from `/config`).
    pub secrets: Vec<String>,
    /// Files read on the way (secret files, key lists): the config watcher
    /// reloads when they change, as for the config files themselves.
    pub files: Vec<std::path::PathBuf>,
    /// What was accepted but changed or not applied (said at start and by
    /// `validate`).
    pub notices: Vec<String>,
}

const TYPOGRAPHIC: [char; 4] = ['\u{201C}', '\u{201D}', '\u{2018}', '\u{2019}'];

impl Decoder {
    pub fn new(file: impl Into<String>) -> Self {
        Decoder {
            file: file.into(),
            errors: Vec::new(),
            secrets: Vec::new(),
            files: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Something accepted but changed or not applied, at its place.
    pub fn notice(&mut self, pos: super::yaml::Pos, path: &str, message: impl Into<String>) {
        self.notices.push(format!(
            "{}:{}:{}: {path}: {}",
            self.file,
            pos.line,
            pos.col,
            message.into()
        ));
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        let message = super::secrets::redact(message.into(), &self.secrets);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            pos,
            path: path.to_string(),
            message,
        });
    }

    /// A mapping with only the fields of `known` (its table: also the JSON
    /// Schema's). Unknown keys are reported (with a suggestion when one is
    /// close), as are duplicate keys.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str, known: &[Field]) -> Option<Fields<'n>> {
        self.map_known(node, path, known)
    }

    /// A mapping whose keys are names not of a field table (policy names).
    pub fn map_names<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        self.map_known(node, path, known)
    }

    fn map_known<'n, K: Known + ?Sized>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &K,
    ) -> Option<Fields<'n>> {
        let Value::Map(pairs) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut entries: Vec<(&'n str, &'n Node)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let Value::Scalar { text: key, .. } = &k.value else {
                self.error(k.pos, path, "mapping keys must be plain names");
                continue;
            };
            let field = join(path, key);
            if !known.has(key) {
                let names = known.names();
                let hint = suggest(key, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (expected one of: {})", names.join(", ")));
                self.error(k.pos, &field, format!("unknown field{hint}"));
                continue;
            }
            if entries.iter().any(|(seen, _)| *seen == key.as_str()) {
                self.error(k.pos, &field, "duplicate field");
                continue;
            }
            entries.push((key.as_str(), v));
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    /// A mapping whose keys are free-form (labels): only duplicates are reported.
    pub fn map_any<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        let Value::Map(pairs) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.kind()),
            );
            return None;
        };
        let keys: Vec<&str> = pairs
            .iter()
            .filter_map(|(k, _)| match &k.value {
                Value::Scalar { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        self.map_names(node, path, &keys)
    }

    /// A field that must be present.
    pub fn required<'n>(&mut self, fields: &Fields<'n>, key: &str, path: &str) -> Option<&'n Node> {
        let found = fields.get(key);
        if found.is_none() {
            self.error(fields.pos, path, format!("missing required field `{key}`"));
        }
        found
    }

    /// The text of a scalar; rejects lists, mappings and typographic quotes.
    pub fn scalar<'n>(&mut self, node: &'n Node, path: &str, expected: &str) -> Option<&'n str> {
        match &node.value {
            Value::Scalar { text, .. } => {
                if text.contains(TYPOGRAPHIC) {
                    self.error(
                        node.pos,
                        path,
                        format!(
                            "{text} contains typographic quotes (\u{201C} \u{201D}), probably pasted from a web page; \
                             YAML only understands straight quotes: write \"{}\"",
                            text.trim_matches(TYPOGRAPHIC)
                        ),
                    );
                    return None;
                }
                Some(text.as_str())
            }
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected {expected}, found {}", node.kind()),
                );
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.scalar(node, path, "a string")?;
        if text.is_empty() {
            self.error(node.pos, path, "must not be empty");
            return None;
        }
        Some(text.to_string())
    }

    /// A whole number greater than zero (an unquoted YAML integer).
    pub fn positive_int(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = self.scalar(node, path, "a positive integer")?;
        let quoted = matches!(node.value, Value::Scalar { quoted: true, .. });
        match text.parse::<u64>() {
            Ok(n) if n > 0 && !quoted => Some(n),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a positive integer, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A whole number in `min..=max` (an unquoted YAML integer, may be negative).
    pub fn int(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        let text = self.scalar(node, path, "an integer")?;
        let quoted = matches!(node.value, Value::Scalar { quoted: true, .. });
        match text.parse::<i64>() {
            Ok(n) if !quoted && (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!(
                        "expected an integer from {min} to {max}, found {}",
                        node.kind()
                    ),
                );
                None
            }
        }
    }

    pub fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        let n = self.positive_int(node, path)?;
        match u16::try_from(n) {
            Ok(p) => Some(p),
            Err(_) => {
                self.error(
                    node.pos,
                    path,
                    format!("port {n} is out of range (1-65535)"),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match self.scalar(node, path, "true or false")? {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected true or false, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A duration: `30s`, `1500ms`, `2m`, `1h`; a bare number counts as seconds
    /// when `bare_seconds` is set.
    pub fn duration(&mut self, node: &Node, path: &str, bare_seconds: bool) -> Option<Duration> {
        let text = self.scalar(node, path, "a duration")?;
        let parsed = parse_duration(text).or_else(|| {
            if bare_seconds {
                text.parse::<u64>().ok().map(Duration::from_secs)
            } else {
                None
            }
        });
        match parsed {
            Some(d) if !d.is_zero() => Some(d),
            Some(_) => {
                self.error(node.pos, path, "must be greater than zero");
                None
            }
            None => {
                let also = if bare_seconds {
                    ", or seconds as a number"
                } else {
                    ""
                };
                self.error(
                    node.pos,
                    path,
                    format!(
                        "{} is not a duration (try 30s, 1500ms or 2m{also})",
                        node.kind()
                    ),
                );
                None
            }
        }
    }

    /// The items of a list with their field paths (`path[i]`); nothing
    /// (after an error) when the node is not a list.
    pub fn items<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        single_ok: bool,
    ) -> Vec<(&'n Node, String)> {
        self.list(node, path, single_ok)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, format!("{path}[{i}]")))
            .collect()
    }

    /// A list of scalars each parsed by `parse` (which says why not); the
    /// items that failed are reported and left out.
    pub fn parsed_list<T>(
        &mut self,
        node: &Node,
        path: &str,
        expected: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (item, at) in self.items(node, path, true) {
            if let Some(text) = self.scalar(item, &at, expected) {
                match parse(text) {
                    Ok(v) => out.push(v),
                    Err(why) => self.error(item.pos, &at, why),
                }
            }
        }
        out
    }

    /// An `http://` or `https://` URL with a host (a collector, a JWKS or
    /// introspection endpoint); `example` is shown when it is not one.
    pub fn http_url(&mut self, node: &Node, path: &str, example: Option<&str>) -> Option<String> {
        let url = self.string(node, path)?;
        match url.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                Some(url)
            }
            _ => {
                let example = example
                    .map(|e| format!(" (example: {e})"))
                    .unwrap_or_default();
                self.error(
                    node.pos,
                    path,
                    format!("{url:?} is not an http(s) URL{example}"),
                );
                None
            }
        }
    }

    /// A size in bytes: `1048576`, `512KB`, `10MB`, `1GB` (K/KB/KiB = 1024
    /// bytes, M/MB/MiB = 1024², G/GB/GiB = 1024³); greater than zero.
    pub fn size(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = self.scalar(node, path, "a size")?;
        match parse_size(text) {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("{} is not a size (try 1048576, 512KB or 10MB)", node.kind()),
                );
                None
            }
        }
    }

    /// A list; a single scalar is accepted as a list of one when `single_ok`.
    pub fn list<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        single_ok: bool,
    ) -> Option<Vec<&'n Node>> {
        match &node.value {
            Value::Seq(items) => Some(items.iter().collect()),
            Value::Scalar { .. } if single_ok => Some(vec![node]),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a list, found {}", node.kind()),
                );
                None
            }
        }
    }
}

/// `1048576`, `512KB`, `10MB`, `1GiB`: bytes, binary multiples.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let unit = t[digits..].trim().to_ascii_uppercase();
    let mult: u64 = match unit.as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `30s`, `1500ms`, `2m`, `1h`, `1m30s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The known name closest to a misspelt one, if any is close enough.
pub fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30 s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("30"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("512KB"), Some(512 << 10));
        assert_eq!(parse_size("10 MB"), Some(10 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1TB"), None);
        assert_eq!(parse_size("MB"), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("maxRequest", &["maxRequests", "period"]),
            Some("maxRequests")
        );
        assert_eq!(suggest("zzz", &["maxRequests", "period"]), None);
    }
}
