//! What a load read: each source file with its content hash and its
//! documents (line, kind, name), so the gateway can say after a reload
//! which files and documents serve and which were refused, and `plan` can
//! match files between two configurations.

use super::decode::ConfigError;
use super::yaml::{Node, Value};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One file a load read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As errors name it (the path given, joined with the file's name).
    pub file: String,
    /// Relative to the `-c` path it was found under (the file's own name
    /// when `-c` named it): the same on a host and in a repository.
    pub name: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    pub documents: Vec<Document>,
}

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// 0-based, in file order.
    pub index: usize,
    /// The line the document starts on.
    pub line: usize,
    /// `kind:` (empty when missing).
    pub kind: String,
    /// `metadata.name` (empty when missing).
    pub name: String,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The text of `key` in mapping `node`.
fn field<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    let Value::Map(pairs) = &node.value else {
        return None;
    };
    pairs
        .iter()
        .find(|(k, _)| k.text() == Some(key))
        .map(|(_, v)| v)
}

/// The documents of a parsed file.
pub fn documents(nodes: &[Node]) -> Vec<Document> {
    nodes
        .iter()
        .enumerate()
        .map(|(index, n)| Document {
            index,
            line: n.pos.line,
            kind: field(n, "kind")
                .and_then(Node::text)
                .unwrap_or_default()
                .to_string(),
            name: field(n, "metadata")
                .and_then(|m| field(m, "name"))
                .and_then(Node::text)
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

/// `file`'s name relative to `root`.
fn relative_name(root: &Path, file: &Path) -> String {
    match file.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string()),
    }
}

/// `file`'s name relative to the `-c` path among `roots` it was found
/// under (its own name when `-c` named the file).
pub fn name_under(roots: &[PathBuf], file: &Path) -> String {
    let root = roots
        .iter()
        .filter(|r| file.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .map_or(file, |r| r.as_path());
    relative_name(root, file)
}

impl Source {
    /// The document an error at `line` belongs to (the last one starting
    /// at or before it); `None` for errors about the file as a whole.
    pub fn document_at(&self, line: usize) -> Option<usize> {
        if line == 0 {
            return None;
        }
        self.documents
            .iter()
            .rev()
            .find(|d| d.line <= line)
            .or(self.documents.first())
            .map(|d| d.index)
    }
}

/// The files a load of `paths` would read: name (relative to its `-c`
/// root) and SHA-256, without decoding them.
pub fn local_files(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let files = super::load::list_files(paths).map_err(|e| e.to_string())?;
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            Ok((name_under(paths, f), sha256(&bytes)))
        })
        .collect()
}

/// Whether a file's documents serve, wait, or were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// What the gateway serves.
    Applied,
    /// Refused: it has errors; what served before keeps serving.
    Refused,
    /// Valid on its own but not serving: the configuration as a whole was
    /// refused for another file's errors (the gateway applies all files or
    /// none), or the file was deleted and its last version still serves.
    Pending,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Refused => "refused",
            State::Pending => "pending",
        }
    }
}

/// One file's state after a load attempt.
#[derive(Debug, Clone)]
pub struct FileStatus {
    pub source: Source,
    pub state: State,
    /// Deleted from disk; its last applied version still serves.
    pub deleted: bool,
    pub errors: Vec<ConfigError>,
    /// Per document: its state.
    pub documents: Vec<State>,
}

/// The state of every file after a load attempt: `now` what was read,
/// `errors` what the load found (none: applied), `serving` the files of
/// the configuration that serves (before this attempt, when it failed).
pub fn assess(now: &[Source], errors: &[ConfigError], serving: &[Source]) -> Vec<FileStatus> {
    let mut out: Vec<FileStatus> = now
        .iter()
        .map(|s| {
            let mine: Vec<ConfigError> = errors
                .iter()
                .filter(|e| e.file == s.file)
                .cloned()
                .collect();
            let unchanged = serving
                .iter()
                .any(|old| old.file == s.file && old.sha256 == s.sha256);
            let state = if errors.is_empty() || (mine.is_empty() && unchanged) {
                State::Applied
            } else if mine.is_empty() {
                State::Pending
            } else {
                State::Refused
            };
            let documents = s
                .documents
                .iter()
                .map(|d| {
                    let bad = mine
                        .iter()
                        .any(|e| s.document_at(e.pos.line) == Some(d.index) || e.pos.line == 0);
                    match state {
                        State::Refused if bad => State::Refused,
                        State::Refused => State::Pending,
                        other => other,
                    }
                })
                .collect();
            FileStatus {
                source: s.clone(),
                state,
                deleted: false,
                errors: mine,
                documents,
            }
        })
        .collect();
    if !errors.is_empty() {
        for old in serving
            .iter()
            .filter(|o| !now.iter().any(|s| s.file == o.file))
        {
            out.push(FileStatus {
                source: old.clone(),
                state: State::Pending,
                deleted: true,
                errors: Vec::new(),
                documents: vec![State::Pending; old.documents.len()],
            });
        }
    }
    out
}

impl FileStatus {
    pub fn to_json(&self, redact: &dyn Fn(String) -> String) -> Json {
        let s = &self.source;
        json!({
            "file": s.file,
            "name": s.name,
            "sha256": s.sha256,
            "state": self.state.as_str(),
            "deleted": self.deleted,
            "errors": self.errors.iter().map(|e| redact(e.to_string())).collect::<Vec<_>>(),
            "documents": s.documents.iter().zip(&self.documents).map(|(d, st)| json!({
                "index": d.index,
                "line": d.line,
                "kind": d.kind,
                "name": d.name,
                "state": st.as_str(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::{parse_documents, Pos};

    fn source(file: &str, text: &str) -> Source {
        Source {
            file: file.into(),
            name: file.into(),
            sha256: sha256(text.as_bytes()),
            documents: documents(&parse_documents(text).unwrap()),
        }
    }

    fn error(file: &str, line: usize) -> ConfigError {
        ConfigError {
            file: file.into(),
            pos: Pos { line, col: 1 },
            path: String::new(),
            message: "bad".into(),
        }
    }

    #[test]
    fn documents_are_named_and_errors_found_in_them() {
        let s = source("a.yaml", "kind: Gateway\nmetadata: {name: g}\n---\nkind: PolicyBinding\nmetadata:\n  name: p\nspec: {}\n");
        assert_eq!(s.documents.len(), 2);
        assert_eq!(
            (s.documents[1].kind.as_str(), s.documents[1].name.as_str()),
            ("PolicyBinding", "p")
        );
        assert_eq!(s.document_at(1), Some(0));
        assert_eq!(s.document_at(6), Some(1));
        assert_eq!(s.document_at(0), None);
    }

    #[test]
    fn a_refused_file_leaves_others_applied_or_pending() {
        let a = source("a.yaml", "kind: A\n");
        let b = source("b.yaml", "kind: B\n---\nkind: C\n");
        let b2 = source("b.yaml", "kind: B\n---\nkind: D\n");
        let c = source("c.yaml", "kind: E\n");
        let gone = source("gone.yaml", "kind: F\n");
        let serving = vec![a.clone(), b.clone(), gone];
        // b changed and refused at its second document; c is new
        let st = assess(&[a.clone(), b2, c], &[error("b.yaml", 3)], &serving);
        let states: Vec<_> = st
            .iter()
            .map(|f| (f.source.file.as_str(), f.state, f.deleted))
            .collect();
        assert_eq!(
            states,
            [
                ("a.yaml", State::Applied, false),
                ("b.yaml", State::Refused, false),
                ("c.yaml", State::Pending, false),
                ("gone.yaml", State::Pending, true),
            ]
        );
        assert_eq!(st[1].documents, [State::Pending, State::Refused]);
        // no errors: all applied, nothing deleted listed
        let st = assess(&[a], &[], &serving);
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].state, State::Applied);
    }
}
