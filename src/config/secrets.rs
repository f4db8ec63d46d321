//! Secret references in policy configs: `${NAME}` (an environment
//! variable, anywhere in a string; `$${` is a literal `${`) and `file:/path`
//! (a whole value: the file's content), resolved at every load. The values
//! are recorded in the decoder, which scrubs them from every message; the
//! config carries them so `/config` can too.

use super::decode::{join, Decoder};
use super::yaml::{Node, Pos, Value};

impl Decoder {
    /// A copy of a policy's config tree with secret references resolved:
    /// `${NAME}` anywhere in a string is the environment variable NAME
    /// (`$${` writes a literal `${`); a whole string `file:/path` is the
    /// content of that file (one trailing newline dropped). Read at every
    /// load, so a reload picks up a rotated secret. The values are recorded
    /// as secrets; a missing variable or unreadable file is an error here.
    pub fn resolve_references(&mut self, node: &Node, path: &str) -> Node {
        let value = match &node.value {
            Value::Scalar { text, quoted } => match self.resolve_text(text, node.pos, path) {
                Some(resolved) => Value::Scalar {
                    text: resolved,
                    quoted: *quoted || text.contains("${") || text.starts_with("file:"),
                },
                None => node.value.clone(),
            },
            Value::Seq(items) => Value::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.resolve_references(n, &format!("{path}[{i}]")))
                    .collect(),
            ),
            Value::Map(pairs) => Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        let key = match &k.value {
                            Value::Scalar { text, .. } => join(path, text),
                            _ => path.to_string(),
                        };
                        (k.clone(), self.resolve_references(v, &key))
                    })
                    .collect(),
            ),
        };
        Node {
            value,
            pos: node.pos,
        }
    }

    /// The text with its references resolved, or `None` when it has none
    /// (or one failed: reported).
    fn resolve_text(&mut self, text: &str, pos: Pos, path: &str) -> Option<String> {
        if let Some(file) = text.strip_prefix("file:") {
            self.files.push(file.into());
            return match std::fs::read_to_string(file) {
                Ok(content) => {
                    let content = content
                        .strip_suffix('\n')
                        .map(|c| c.strip_suffix('\r').unwrap_or(c))
                        .unwrap_or(&content)
                        .to_string();
                    if content.is_empty() {
                        self.error(pos, path, format!("secret file {file} is empty"));
                        return None;
                    }
                    self.secrets.push(content.clone());
                    Some(content)
                }
                Err(e) => {
                    self.error(pos, path, format!("cannot read secret file {file}: {e}"));
                    None
                }
            };
        }
        if !text.contains("${") {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    self.error(pos, path, "unclosed `${` (write `$${` for a literal `${`)");
                    return None;
                };
                let name = &after[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.error(
                        pos,
                        path,
                        format!("`${{{name}}}` is not an environment variable reference (letters, digits and _ only)"),
                    );
                    return None;
                }
                match std::env::var(name) {
                    Ok(v) if !v.is_empty() => {
                        self.secrets.push(v.clone());
                        out.push_str(&v);
                    }
                    Ok(_) => {
                        self.error(pos, path, format!("environment variable {name} is empty"));
                        return None;
                    }
                    Err(_) => {
                        self.error(pos, path, format!("environment variable {name} is not set"));
                        return None;
                    }
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Some(out)
    }
}

/// `message` with every secret value replaced by `<redacted>`.
pub fn redact(mut message: String, secrets: &[String]) -> String {
    for s in secrets {
        if !s.is_empty() && message.contains(s.as_str()) {
            message = message.replace(s.as_str(), "<redacted>");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_are_redacted() {
        std::env::set_var("FLEXGW_TEST_SECRET", "hunter2");
        let dir = std::env::temp_dir().join(format!("flexgw-decode-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let mut d = Decoder::new("t.yaml");
        let text = format!(
            "a: \"x-${{FLEXGW_TEST_SECRET}}-y\"\nb: \"file:{}\"\nc: \"$${{LITERAL}}\"\nd: \"${{FLEXGW_TEST_UNSET_VAR}}\"\n",
            dir.display()
        );
        let node = &super::super::yaml::parse_documents(&text).unwrap()[0];
        let resolved = d.resolve_references(node, "p");
        let Value::Map(pairs) = &resolved.value else {
            panic!()
        };
        let texts: Vec<String> = pairs
            .iter()
            .map(|(_, v)| match &v.value {
                Value::Scalar { text, .. } => text.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(texts[..3], ["x-hunter2-y", "from-file", "${LITERAL}"]);
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert!(d.errors[0]
            .message
            .contains("FLEXGW_TEST_UNSET_VAR is not set"));
        d.error(Pos::default(), "p.a", "\"x-hunter2-y\" is not valid");
        assert_eq!(d.errors[1].message, "\"x-<redacted>-y\" is not valid");
        let _ = std::fs::remove_file(&dir);
    }
}
