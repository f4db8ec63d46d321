//! `api-key`: the request must carry one of the configured keys, in a
//! header (default `X-API-Key`) or, when `queryParam` is set, in that query
//! parameter.
//!
//! ```yaml
//! - api-key:
//!     header: X-API-Key            # default
//!     queryParam: api_key          # optional; off by default
//!     keys:                        # inline keys, best as ${ENV} / file: references
//!       - {consumer: mobile-app, key: "${MOBILE_APP_KEY}"}
//!       - "${PARTNER_KEY}"         # a bare key: consumer "api-key-<hash prefix>"
//!     keysFile: /etc/flex-gateway/api-keys   # one key a line, `consumer:key` allowed, # comments
//!     keepKey: false               # default: the key is removed before proxying
//!     consumerHeader: X-Consumer   # optional: the consumer name sent upstream
//! ```
//!
//! Missing or unknown key: 401. Keys are held only as SHA-256 digests; the
//! presented key is digested and looked up, so no comparison runs over the
//! key itself. The consumer name becomes the request's consumer.

use super::{common, Decision, LocalResponse, Policy, REDACTED};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use http::HeaderName;
use pingora::http::RequestHeader;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub const FIELDS: &[Field] = &[
    f("header", Ty::Name("a header name"))
        .default("\"x-api-key\"")
        .doc("Where the key is read."),
    f("queryParam", STR).doc("Also read the key from this query parameter."),
    f(
        "keys",
        Ty::List(&Ty::Either(&[Ty::Str, Ty::Obj(KEY_FIELDS)]), false),
    )
    .doc("Keys, or {key, consumer} mappings."),
    f("keysFile", Ty::Text("a file path"))
        .doc("A file of keys, one per line (`key` or `key consumer`)."),
    f("keepKey", BOOL)
        .default("false")
        .doc("Forward the key upstream."),
    f("consumerHeader", Ty::Name("a header name"))
        .doc("Send the consumer's name upstream in this header."),
];
const KEY_FIELDS: &[Field] = &[f("consumer", STR), f("key", STR).req()];

type Digest32 = [u8; 32];

fn digest(key: &str) -> Digest32 {
    Sha256::digest(key.as_bytes()).into()
}

fn anonymous(d: &Digest32) -> String {
    format!("api-key-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub header: HeaderName,
    pub query_param: Option<String>,
    /// Digest of each key, and its consumer.
    pub keys: Vec<(Digest32, String)>,
    pub keys_file: Option<String>,
    pub keep_key: bool,
    pub consumer_header: Option<HeaderName>,
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let errors = d.errors.len();
    let header = match f.get("header") {
        Some(n) => common::header_name(d, n, &join(path, "header")),
        None => Some(HeaderName::from_static("x-api-key")),
    };
    let query_param = f
        .get("queryParam")
        .and_then(|n| d.string(n, &join(path, "queryParam")));
    let keep_key = match f.get("keepKey") {
        Some(n) => d.bool(n, &join(path, "keepKey")),
        None => Some(false),
    };
    let consumer_header = f
        .get("consumerHeader")
        .and_then(|n| common::header_name(d, n, &join(path, "consumerHeader")));
    let mut keys: Vec<(Digest32, String)> = Vec::new();
    let mut add = |d: &mut Decoder, key: &str, consumer: Option<String>, pos, at: &str| {
        let h = digest(key);
        if keys.iter().any(|(k, _)| *k == h) {
            d.error(pos, at, "duplicate key");
            return;
        }
        keys.push((h, consumer.unwrap_or_else(|| anonymous(&h))));
    };
    if let Some(list) = f.get("keys") {
        let field = join(path, "keys");
        for (i, item) in d
            .list(list, &field, false)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = format!("{field}[{i}]");
            if matches!(item.value, crate::config::yaml::Value::Map(_)) {
                let Some(k) = d.map(item, &at, KEY_FIELDS) else {
                    continue;
                };
                let consumer = k
                    .get("consumer")
                    .and_then(|n| d.string(n, &join(&at, "consumer")));
                if let Some(key) = d
                    .required(&k, "key", &at)
                    .and_then(|n| d.string(n, &join(&at, "key")))
                {
                    add(d, &key, consumer, item.pos, &at);
                }
            } else if let Some(key) = d.string(item, &at) {
                add(d, &key, None, item.pos, &at);
            }
        }
    }
    let keys_file = f.get("keysFile").and_then(|n| {
        let field = join(path, "keysFile");
        let file = d.string(n, &field)?;
        d.files.push(file.clone().into());
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (consumer, key) = match line.split_once(':') {
                        Some((c, k)) => (Some(c.trim().to_string()), k.trim()),
                        None => (None, line),
                    };
                    if key.is_empty() || consumer.as_deref() == Some("") {
                        d.error(
                            n.pos,
                            &field,
                            format!("{file} line {}: expected `key` or `consumer:key`", i + 1),
                        );
                        continue;
                    }
                    add(
                        d,
                        key,
                        consumer,
                        n.pos,
                        &format!("{field} ({file} line {})", i + 1),
                    );
                }
            }
            Err(e) => d.error(n.pos, &field, format!("cannot read {file}: {e}")),
        }
        Some(file)
    });
    if keys.is_empty() && d.errors.len() == errors {
        d.error(
            f.pos,
            path,
            "no keys: give `keys`, or a `keysFile` with at least one key",
        );
    }
    if d.errors.len() > errors {
        return None;
    }
    Some(Config {
        header: header?,
        query_param,
        keys,
        keys_file,
        keep_key: keep_key?,
        consumer_header,
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(ApiKey {
        keys: c.keys.iter().cloned().collect(),
        config: c.clone(),
    })
}

pub fn describe(c: &Config) -> Value {
    json!({
        "header": c.header.as_str(),
        "queryParam": c.query_param,
        "keys": c.keys.iter().map(|(_, consumer)| json!({"consumer": consumer, "key": REDACTED})).collect::<Vec<_>>(),
        "keysFile": c.keys_file,
        "keepKey": c.keep_key,
        "consumerHeader": c.consumer_header.as_ref().map(|h| h.as_str()),
    })
}

pub struct ApiKey {
    config: Config,
    keys: HashMap<Digest32, String>,
}

/// The consumer this policy identified.
#[derive(Clone)]
struct Identified(String);

impl ApiKey {
    fn presented<'r>(&self, req: &'r RequestHeader) -> Option<std::borrow::Cow<'r, str>> {
        if let Some(v) = req.headers.get(&self.config.header) {
            return v.to_str().ok().map(|s| s.trim().into());
        }
        let name = self.config.query_param.as_deref()?;
        common::query_value(req.uri.query()?, name).map(Into::into)
    }
}

#[async_trait]
impl Policy for ApiKey {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        if let (false, Some(name), Some(query)) = (
            req.headers.contains_key(&self.config.header),
            self.config.query_param.as_deref(),
            req.uri.query(),
        ) {
            if common::query_count(query, name) > 1 {
                // the key checked must be the key the upstream sees
                let message = format!("more than one {name} query parameter");
                return Decision::Respond(LocalResponse::new(400, message));
            }
        }
        let Some(key) = self.presented(req) else {
            return Decision::Respond(LocalResponse::new(401, "API key required"));
        };
        match self.keys.get(&digest(&key)) {
            Some(consumer) => {
                x.consumer = Some(consumer.clone());
                x.ext.insert(Identified(consumer.clone()));
                Decision::Continue
            }
            None => Decision::Respond(LocalResponse::new(401, "invalid API key")),
        }
    }

    fn asserted_headers(&self) -> Vec<http::HeaderName> {
        self.config.consumer_header.iter().cloned().collect()
    }

    fn credential_headers(&self) -> Vec<http::HeaderName> {
        vec![self.config.header.clone()]
    }

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        let Some(Identified(consumer)) = x.ext.get::<Identified>() else {
            return Ok(());
        };
        if let Some(h) = &self.config.consumer_header {
            up.insert_header(h.clone(), consumer.as_str())?;
        }
        if self.config.keep_key {
            return Ok(());
        }
        up.remove_header(&self.config.header);
        if let Some(name) = &self.config.query_param {
            common::remove_query_param(up, name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_consumer_names_hide_the_key() {
        let name = anonymous(&digest("secret-key"));
        assert!(name.starts_with("api-key-") && !name.contains("secret"));
    }
}
