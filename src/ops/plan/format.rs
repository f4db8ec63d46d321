//! How a plan is shown: text for people, JSON for pipelines, GitHub
//! Actions workflow commands for pull requests.

use super::{Action, Change, Needs, Plan};
use serde_json::{json, Map, Value};

fn shown(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

impl Change {
    fn title(&self) -> String {
        match (self.kind, &self.listener) {
            ("server", _) => "server settings".into(),
            ("route", Some(l)) => format!("route {} (listener {l})", self.name),
            (kind, _) => format!("{kind} {}", self.name),
        }
    }
}

impl Plan {
    /// Exit status: 0 no change, 2 changes.
    pub fn exit_code(&self) -> u8 {
        if self.changes.is_empty() {
            0
        } else {
            2
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            out.push_str(&format!("{} {}\n", c.action.sign(), c.title()));
            if c.action == Action::Changed {
                for f in &c.fields {
                    if f.secret {
                        out.push_str(&format!("    {}: (secret changed)\n", f.path));
                    } else {
                        out.push_str(&format!(
                            "    {}: {} -> {}\n",
                            f.path,
                            shown(&f.old),
                            shown(&f.new)
                        ));
                    }
                }
            }
        }
        let n = self.changes.len();
        out.push_str(&match self.needs {
            Needs::Nothing => "No changes.\n".to_string(),
            Needs::Reload => format!("{n} change(s): applied by a hot reload (the file watcher or SIGHUP); no connection is dropped.\n"),
            Needs::Upgrade => format!(
                "{n} change(s): need a binary upgrade (`systemctl reload flex-gateway`, or `flex-gateway upgrade`); zero downtime:\n{}",
                self.reasons.iter().map(|r| format!("  - {r}\n")).collect::<String>()
            ),
        });
        let mut files = Vec::new();
        files.extend(self.files_changed.iter().map(|f| format!("~{f}")));
        files.extend(self.files_added.iter().map(|f| format!("+{f}")));
        files.extend(self.files_removed.iter().map(|f| format!("-{f}")));
        if !files.is_empty() {
            out.push_str(&format!("Files: {}\n", files.join(" ")));
        }
        if !self.secrets_compared {
            out.push_str("Secrets were not compared (a running gateway never shows them); a file whose content differs is listed above.\n");
        }
        out
    }

    pub fn json(&self) -> Value {
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                let mut v = Map::new();
                v.insert("kind".into(), json!(c.kind));
                v.insert("name".into(), json!(c.name));
                if let Some(l) = &c.listener {
                    v.insert("listener".into(), json!(l));
                }
                v.insert("action".into(), json!(c.action.as_str()));
                v.insert(
                    "fields".into(),
                    Value::Array(
                        c.fields
                            .iter()
                            .map(|f| match f.secret {
                                true => json!({"path": f.path, "secret": true}),
                                false => json!({"path": f.path, "old": f.old, "new": f.new}),
                            })
                            .collect(),
                    ),
                );
                Value::Object(v)
            })
            .collect();
        json!({
            "changes": changes,
            "needs": self.needs.as_str(),
            "reasons": self.reasons,
            "files": {"changed": self.files_changed, "added": self.files_added, "removed": self.files_removed},
            "secretsCompared": self.secrets_compared,
        })
    }

    /// GitHub Actions workflow commands: a notice with the summary (the
    /// text plan follows in the log).
    pub fn github(&self) -> String {
        let summary = match self.needs {
            Needs::Nothing => "no changes".to_string(),
            Needs::Reload => format!("{} change(s), applied by a hot reload", self.changes.len()),
            Needs::Upgrade => format!(
                "{} change(s), need a binary upgrade: {}",
                self.changes.len(),
                self.reasons.join("; ")
            ),
        };
        let level = if self.needs == Needs::Upgrade {
            "warning"
        } else {
            "notice"
        };
        format!(
            "::{level} title=flex-gateway plan::{}\n{}",
            escape_data(&summary),
            self.text()
        )
    }
}

/// A workflow command's message: `%`, CR and LF escaped.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// A config error as a GitHub annotation on its line.
pub fn github_error(e: &crate::config::ConfigError) -> String {
    let mut props = format!("file={}", escape_property(&e.file));
    if e.pos.line > 0 {
        props.push_str(&format!(",line={},col={}", e.pos.line, e.pos.col));
    }
    let message = match e.path.is_empty() {
        true => e.message.clone(),
        false => format!("{}: {}", e.path, e.message),
    };
    format!("::error {props}::{}", escape_data(&message))
}
