//! `flex-gateway plan`: what changes between two configurations — the
//! resources (listeners, routes with their policies, services, server
//! settings, gateways) added, removed and changed, each with the fields
//! that changed — and what the change needs to take effect: a hot reload,
//! or a binary upgrade (`systemctl reload flex-gateway`) when listeners or
//! process settings change.
//!
//! Both sides are the effective configuration as the admin listener's
//! `/config` shows it, so a plan against files and a plan against a
//! running gateway (`--against-admin`) read the same. Secrets never show:
//! between two sets of files a secret that changed is reported as
//! `(secret changed)`; a running gateway never shows its secrets, so
//! against it they are not compared (the files' hashes still differ).

use crate::config::sources::Source;
use crate::config::Config;
use crate::ops::admin::{config_json, config_tree};
use serde_json::{json, Value};

mod format;
pub use format::{escape_data, escape_property, github_error};
use std::collections::{BTreeMap, BTreeSet};

/// Server settings that a running process took at start: changing them
/// needs a binary upgrade or a restart.
const PROCESS_SETTINGS: &[&str] = &[
    "threads",
    "pidFile",
    "upgradeSocket",
    "gracePeriodSeconds",
    "shutdownTimeoutSeconds",
    "errorLog",
    "admin",
    "watchConfig",
    "workStealing",
    "upstreamKeepalivePool",
];

/// Listener fields its socket and protocol handling took at start.
const LISTENER_PROCESS_FIELDS: &[&str] =
    &["address", "h2c", "tls.alpn", "limits.maxConcurrentStreams"];

/// Keys `/config` adds beside the configuration (the apply state).
const STATUS_KEYS: &[&str] = &["generation", "appliedAt", "lastReload", "files"];

/// One side of a plan.
pub struct Side {
    /// `/config`'s JSON (secrets redacted, no apply state).
    tree: Value,
    /// Before redaction, and the typed config: local files only.
    local: Option<(Value, Config)>,
    /// The files: name (relative to its `-c` root) and SHA-256.
    files: Vec<(String, String)>,
}

impl Side {
    /// Files loaded here.
    pub fn local(config: Config, sources: &[Source]) -> Side {
        Side {
            tree: config_json(&config),
            local: Some((config_tree(&config), config)),
            files: sources
                .iter()
                .map(|s| (s.name.clone(), s.sha256.clone()))
                .collect(),
        }
    }

    /// A running gateway's `/config` answer.
    pub fn admin(mut answer: Value) -> Result<Side, String> {
        let files = super::status::admin_files(&answer);
        let Value::Object(map) = &mut answer else {
            return Err("the admin answer is not a JSON object".into());
        };
        if !map.contains_key("listeners") {
            return Err(
                "the admin answer has no configuration (is this flex-gateway's admin listener?)"
                    .into(),
            );
        }
        for k in STATUS_KEYS {
            map.remove(*k);
        }
        if let Some(Value::Array(ls)) = map.get_mut("listeners") {
            for l in ls.iter_mut().filter_map(Value::as_object_mut) {
                l.remove("serving");
            }
        }
        Ok(Side {
            tree: answer,
            local: None,
            files,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Added,
    Removed,
    Changed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Added => "added",
            Action::Removed => "removed",
            Action::Changed => "changed",
        }
    }
    fn sign(self) -> char {
        match self {
            Action::Added => '+',
            Action::Removed => '-',
            Action::Changed => '~',
        }
    }
}

/// A field of a changed resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// A secret value changed (neither value is shown).
    pub secret: bool,
}

/// A resource added, removed or changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `listener`, `route`, `service`, `server`, `gateway`.
    pub kind: &'static str,
    pub name: String,
    /// The listener a route is bound to.
    pub listener: Option<String>,
    pub action: Action,
    pub fields: Vec<Field>,
}

/// What a change needs to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Needs {
    Nothing,
    /// The file watcher, `SIGHUP` (`systemctl kill -s HUP`), or a restart.
    Reload,
    /// `systemctl reload flex-gateway` (`flex-gateway upgrade`) or a restart.
    Upgrade,
}

impl Needs {
    fn as_str(self) -> &'static str {
        match self {
            Needs::Nothing => "nothing",
            Needs::Reload => "reload",
            Needs::Upgrade => "upgrade",
        }
    }
}

pub struct Plan {
    pub changes: Vec<Change>,
    pub needs: Needs,
    /// Why an upgrade is needed.
    pub reasons: Vec<String>,
    /// Files whose content differs, only in the new side, only in the old.
    pub files_changed: Vec<String>,
    pub files_added: Vec<String>,
    pub files_removed: Vec<String>,
    /// Whether secret values could be compared (not against a gateway).
    pub secrets_compared: bool,
}

/// The resources of a configuration tree by key: (kind, name, listener).
/// Listeners are known by their address (documents naming one port
/// differently share one listener, named by the first file).
fn resources(tree: &Value) -> BTreeMap<(String, String, Option<String>), Value> {
    let mut out = BTreeMap::new();
    if let Some(ls) = tree["listeners"].as_array() {
        for l in ls {
            let name = l["address"].as_str().unwrap_or_default().to_string();
            let mut bare = l.clone();
            if let Value::Object(m) = &mut bare {
                m.remove("routes");
            }
            out.insert(("listener".into(), name.clone(), None), bare);
            for r in l["routes"].as_array().into_iter().flatten() {
                let id = r["id"].as_str().unwrap_or_default().to_string();
                out.insert(("route".into(), id, Some(name.clone())), r.clone());
            }
        }
    }
    for s in tree["services"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        out.insert(("service".into(), name, None), s.clone());
    }
    for g in tree["gateways"].as_array().into_iter().flatten() {
        let name = g.as_str().unwrap_or_default().to_string();
        out.insert(("gateway".into(), name, None), json!({}));
    }
    out.insert(
        ("server".into(), String::new(), None),
        tree["server"].clone(),
    );
    out
}

/// `v` as leaf paths (`upstream.retries.maxRetries`, `policies[0].cors`).
fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(child, &path, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                flatten(child, &format!("{prefix}[{i}]"), out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn leaves(v: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    flatten(v, "", &mut out);
    out
}

/// The fields that differ between two versions of a resource.
fn fields(old: &Value, new: &Value) -> Vec<Field> {
    let (a, b) = (leaves(old), leaves(new));
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    // an empty list or map on one side, filled on the other: its entries say it
    let filled = |p: &str, m: &BTreeMap<String, Value>| {
        m.keys().any(|k| {
            k.len() > p.len() && k.starts_with(p) && matches!(k.as_bytes()[p.len()], b'.' | b'[')
        })
    };
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .filter(|p| !filled(p, &a) && !filled(p, &b))
        .map(|p| Field {
            path: p.clone(),
            old: a.get(p).cloned(),
            new: b.get(p).cloned(),
            secret: false,
        })
        .collect()
}

/// The typed policies of a route bound to `listener`.
fn route_policies<'a>(
    c: &'a Config,
    listener: &str,
    id: &str,
) -> Option<Vec<&'a crate::policy::PolicyConfig>> {
    let l = c
        .listeners
        .iter()
        .find(|l| l.addr.to_string() == listener)?;
    let r = l.routes.iter().find(|r| r.id == id)?;
    Some(r.policies.iter().map(|p| &p.config).collect())
}

/// Compare `old` with `new`.
pub fn plan(old: &Side, new: &Side) -> Plan {
    // two sets of files: compared before redaction (a value holding a
    // secret is then only said to have changed); against a gateway, both
    // redacted as its `/config` is
    let local = match (&old.local, &new.local) {
        (Some((ra, ca)), Some((rb, cb))) => Some((ra, ca, rb, cb)),
        _ => None,
    };
    let (a, b) = match local {
        Some((ra, _, rb, _)) => (resources(ra), resources(rb)),
        None => (resources(&old.tree), resources(&new.tree)),
    };
    let secrets: Vec<&String> = local
        .map(|(_, ca, _, cb)| ca.secrets.iter().chain(&cb.secrets).collect())
        .unwrap_or_default();
    let holds_secret = |v: &Option<Value>| {
        v.as_ref().and_then(Value::as_str).is_some_and(|s| {
            secrets
                .iter()
                .any(|x| !x.is_empty() && s.contains(x.as_str()))
        })
    };
    let keys: BTreeSet<&(String, String, Option<String>)> = a.keys().chain(b.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let (kind, name, listener) = key;
        let kind: &'static str = match kind.as_str() {
            "listener" => "listener",
            "route" => "route",
            "service" => "service",
            "gateway" => "gateway",
            _ => "server",
        };
        let (action, mut fs) = match (a.get(key), b.get(key)) {
            (None, Some(_)) => (Action::Added, Vec::new()),
            (Some(_), None) => (Action::Removed, Vec::new()),
            (Some(x), Some(y)) => (Action::Changed, fields(x, y)),
            (None, None) => continue,
        };
        if action == Action::Changed {
            if let Some((_, ca, _, cb)) = local {
                // a value from a ${ENV} or file: reference
                for f in fs.iter_mut() {
                    if holds_secret(&f.old) || holds_secret(&f.new) {
                        f.secret = true;
                        f.old = None;
                        f.new = None;
                    }
                }
                // a policy's own secret (a password, a key): its
                // description redacts it, the typed configs differ
                if kind == "route" {
                    let l = listener.as_deref().unwrap_or_default();
                    if let (Some(pa), Some(pb)) =
                        (route_policies(ca, l, name), route_policies(cb, l, name))
                    {
                        for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
                            let prefix = format!("policies[{i}]");
                            let seen = fs.iter().any(|f| f.path.starts_with(&prefix));
                            if x != y && !seen {
                                fs.push(Field {
                                    path: prefix,
                                    old: None,
                                    new: None,
                                    secret: true,
                                });
                            }
                        }
                    }
                }
            }
            if fs.is_empty() {
                continue;
            }
        }
        changes.push(Change {
            kind,
            name: name.clone(),
            listener: listener.clone(),
            action,
            fields: fs,
        });
    }
    let (needs, reasons) = needs(&changes);
    let old_files: BTreeMap<&String, &String> = old.files.iter().map(|(n, h)| (n, h)).collect();
    let new_files: BTreeMap<&String, &String> = new.files.iter().map(|(n, h)| (n, h)).collect();
    Plan {
        changes,
        needs,
        reasons,
        files_changed: new_files
            .iter()
            .filter(|(n, h)| old_files.get(*n).is_some_and(|o| o != *h))
            .map(|(n, _)| n.to_string())
            .collect(),
        files_added: new_files
            .keys()
            .filter(|n| !old_files.contains_key(*n))
            .map(|n| n.to_string())
            .collect(),
        files_removed: old_files
            .keys()
            .filter(|n| !new_files.contains_key(*n))
            .map(|n| n.to_string())
            .collect(),
        secrets_compared: old.local.is_some() && new.local.is_some(),
    }
}

/// What the changes need, and why an upgrade.
fn needs(changes: &[Change]) -> (Needs, Vec<String>) {
    let mut reasons = Vec::new();
    for c in changes {
        match (c.kind, c.action) {
            ("listener", Action::Added) => reasons.push(format!("listener {} is new: a process binds it at start", c.name)),
            ("listener", Action::Removed) => reasons.push(format!("listener {} is gone: its socket stays open (answering 404) until a new process starts", c.name)),
            ("listener", Action::Changed) => {
                for f in &c.fields {
                    if LISTENER_PROCESS_FIELDS.iter().any(|p| f.path == *p || f.path.starts_with(&format!("{p}["))) {
                        reasons.push(format!("listener {}: {} is taken at start", c.name, f.path));
                    }
                }
            }
            ("server", _) => {
                for f in &c.fields {
                    let top = f.path.split(['.', '[']).next().unwrap_or_default();
                    if PROCESS_SETTINGS.contains(&top) {
                        reasons.push(format!("spec.server {top} is taken at start"));
                    }
                }
            }
            _ => {}
        }
    }
    reasons.dedup();
    let needs = if !reasons.is_empty() {
        Needs::Upgrade
    } else if changes.is_empty() {
        Needs::Nothing
    } else {
        Needs::Reload
    };
    (needs, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const BASE: &str = "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  listeners: [{name: l, port: 9000}]\n  routes:\n    - id: a\n      path: /a\n      upstream: {url: \"http://127.0.0.1:1\", timeout: 10s}\n      policies:\n        - http-basic-authentication: {users: [{username: u, password: PASS}]}\n";

    fn side(text: &str) -> Side {
        Side::local(load_str("t.yaml", text).expect("valid"), &[])
    }

    #[test]
    fn same_config_no_change() {
        let p = plan(&side(BASE), &side(BASE));
        assert!(p.changes.is_empty());
        assert_eq!(p.needs, Needs::Nothing);
        assert_eq!(p.exit_code(), 0);
    }

    #[test]
    fn fields_secrets_and_routes() {
        let new = BASE
            .replace("timeout: 10s", "timeout: 5s")
            .replace("PASS", "other")
            + "    - id: b\n      path: /b\n      upstream: {url: \"http://127.0.0.1:2\"}\n";
        let p = plan(&side(BASE), &side(&new));
        let a = p
            .changes
            .iter()
            .find(|c| c.name == "a")
            .expect("route a changed");
        assert!(a
            .fields
            .iter()
            .any(|f| f.path == "upstream.readTimeoutMs" && f.new == Some(json!(5000))));
        let secret = a
            .fields
            .iter()
            .find(|f| f.secret)
            .expect("the password change");
        assert_eq!(secret.path, "policies[0]");
        assert!(!p.text().contains("other"), "{}", p.text());
        assert!(p
            .changes
            .iter()
            .any(|c| c.name == "b" && c.action == Action::Added));
        assert_eq!(p.needs, Needs::Reload);
        // a new port needs an upgrade
        let moved = BASE.replace("port: 9000", "port: 9001");
        let p = plan(&side(BASE), &side(&moved));
        assert_eq!(p.needs, Needs::Upgrade, "{}", p.text());
        assert!(
            p.reasons.iter().any(|r| r.contains("0.0.0.0:9001 is new")),
            "{:?}",
            p.reasons
        );
    }
}
