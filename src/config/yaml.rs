//! A YAML tree that remembers where every node came from.
//!
//! serde_yaml stops at the first error and forgets positions once a value is
//! built; validation here wants every problem of a file with its line and
//! column. So we read the event stream of `yaml-rust2` (which carries a
//! marker per event) into a small tree of [`Node`]s, and the decoder in
//! `schema.rs` walks that tree, reporting as many problems as it finds.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written, and whether it was quoted (a quoted `"8081"` is a string, never a number).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in document order; duplicates are kept so the decoder can report them.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// True for `~`, `null` and an empty plain scalar.
    pub fn is_scalar(&self) -> bool {
        matches!(self.value, Value::Scalar { .. })
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The node as JSON (a policy's free-form configuration): quoted
    /// scalars are strings; plain ones booleans, null, numbers or strings
    /// as YAML 1.2's core schema reads them.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(pairs) => J::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.text().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
            Value::Scalar { text, quoted: true } => J::String(text.clone()),
            Value::Scalar { .. } if self.is_null() => J::Null,
            Value::Scalar { text, .. } => match text.as_str() {
                "true" | "True" | "TRUE" => J::Bool(true),
                "false" | "False" | "FALSE" => J::Bool(false),
                t => t
                    .parse::<i64>()
                    .map(J::from)
                    .ok()
                    .or_else(|| {
                        t.parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite() && t.chars().any(|c| c.is_ascii_digit()))
                            .and_then(serde_json::Number::from_f64)
                            .map(J::Number)
                    })
                    .unwrap_or_else(|| J::String(t.to_string())),
            },
        }
    }

    /// The text of a scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short name of this node's kind, for "expected X, found Y" messages.
    pub fn kind(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar { .. } if self.is_null() => "nothing (null)".into(),
            Value::Scalar { text, .. } => format!("{text:?}"),
        }
    }
}

/// A YAML syntax error: where and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos(mark: &Marker) -> Pos {
    // yaml-rust2 markers: line is 1-based, column 0-based.
    Pos {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq(_, _, items)) | Some(Frame::Map(_, _, items)) => items.push(node),
            None => self.docs.push(node),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push(
                    Node {
                        value: Value::Scalar { text, quoted },
                        pos: at,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(at, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(at, anchor, Vec::new())),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(p, anchor, items)) => (
                        Node {
                            value: Value::Seq(items),
                            pos: p,
                        },
                        anchor,
                    ),
                    Some(Frame::Map(p, anchor, items)) => {
                        // a block mapping's start marker is imprecise; its
                        // first key is where a reader looks for it
                        let p = items.first().map_or(p, |k| k.pos);
                        let mut pairs = Vec::with_capacity(items.len() / 2);
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        (
                            Node {
                                value: Value::Map(pairs),
                                pos: p,
                            },
                            anchor,
                        )
                    }
                    None => return,
                };
                self.push(node.0, node.1);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push(node, 0),
                None if self.error.is_none() => {
                    self.error = Some(SyntaxError {
                        pos: at,
                        message: "alias refers to an unknown anchor".into(),
                    })
                }
                None => {}
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parse every document of a YAML stream into position-carrying trees.
/// Documents that are empty (`---` alone, or a comment-only file) are skipped.
pub fn parse_documents(src: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(SyntaxError {
            pos: pos(e.marker()),
            message: e.info().to_string(),
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a: 1\nb:\n  - x\n").unwrap();
        let Value::Map(pairs) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(pairs[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(pairs[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Seq(items) = &pairs[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
    }

    #[test]
    fn multi_document_and_quotes() {
        let docs = parse_documents("---\na: \"1\"\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(pairs) = &docs[0].value else {
            panic!()
        };
        assert!(matches!(
            &pairs[0].1.value,
            Value::Scalar { quoted: true, .. }
        ));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
