//! `xml-threat-protection` (Flex's `xml-threat-protection-flex`, same
//! fields): a request body declared XML is checked as it streams, byte by
//! byte, without building a document, and refused (400) at the first limit
//! it breaks, at a DTD, or at the first byte that is not well-formed XML.
//!
//! ```yaml
//! - xml-threat-protection:
//!     maxNodeDepth: 10                # elements nested (the root is 1)
//!     maxAttributeCountPerElement: 8  # namespace declarations not counted
//!     maxChildCount: 100              # children of one element
//!     maxTextLength: 4096             # characters in one text node
//!     maxAttributeLength: 256         # characters in an attribute's value
//!     maxCommentLength: 256           # characters in a comment
//! ```
//!
//! Every limit defaults to `-1` (none), as in Flex. A document type
//! declaration (`<!DOCTYPE`) is always refused: without one no entity can
//! be defined, so no entity expansion ("billion laughs") and no external
//! entity reaches the backend. Children are elements, comments, processing
//! instructions, CDATA sections and text nodes with more than whitespace
//! (indentation is not a child). Text and CDATA count toward
//! `maxTextLength` as written (`&amp;` is five characters). Only UTF-8 (and
//! so ASCII) documents are read; another encoding is refused as not
//! well-formed. Memory per request is a few bytes per open element, and
//! nesting is capped at [`super::NESTING_CEILING`] when `maxNodeDepth` is
//! `-1`.

use super::{Breach, Limit, Rule, NESTING_CEILING};
use crate::config::fields::{f, Field, Ty};

/// A limit field: `-1` (none) or a bound.
const fn limit(name: &'static str, doc: &'static str) -> Field {
    f(name, Ty::Int(-1, i32::MAX as i64)).default("-1").doc(doc)
}

pub const FIELDS: &[Field] = &[
    f("maxNodeDepth", Ty::Int(-1, 100_000))
        .default("-1")
        .doc("Elements nested in one another, the root being 1 (-1: none; nesting past 1000 is refused all the same)."),
    limit(
        "maxAttributeCountPerElement",
        "Attributes of one element, namespace declarations not counted (-1: none).",
    ),
    limit("maxChildCount", "Children of one element (-1: none)."),
    limit("maxTextLength", "Characters in one text node or CDATA section (-1: none)."),
    limit(
        "maxAttributeLength",
        "Characters in an attribute's value, namespace declarations included (-1: none).",
    ),
    limit("maxCommentLength", "Characters in one comment (-1: none)."),
];

/// The limits, in [`FIELDS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub depth: Limit,
    pub attributes: Limit,
    pub children: Limit,
    pub text_length: Limit,
    pub attribute_length: Limit,
    pub comment_length: Limit,
}

impl Limits {
    pub fn from_fields(l: [Limit; 6]) -> Limits {
        let [depth, attributes, children, text_length, attribute_length, comment_length] = l;
        Limits {
            depth,
            attributes,
            children,
            text_length,
            attribute_length,
            comment_length,
        }
    }

    pub fn fields(&self) -> [Limit; 6] {
        [
            self.depth,
            self.attributes,
            self.children,
            self.text_length,
            self.attribute_length,
            self.comment_length,
        ]
    }
}

/// Where the scanner is in the markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Character data (or the prolog / epilog outside the root).
    Text,
    /// After `<`.
    Lt,
    /// After `<!`: `n` bytes matched of [`BANG`]`[word]` (`word` unknown
    /// until the first byte).
    Bang { word: u8, n: u8 },
    /// Inside `<!-- -->`: the run of `-` just read.
    Comment(u8),
    /// Inside `<![CDATA[ ]]>`: the run of `]` just read.
    Cdata(u8),
    /// Inside `<? ?>`: the last byte was `?`.
    Pi(bool),
    /// A start tag's name.
    StartName,
    /// In a start tag, between attributes.
    InTag,
    /// An attribute's name (bytes matched of `xmlns`, 6 past it).
    AttrName(u8),
    /// After an attribute's name: `=`.
    Eq,
    /// After `=`: the quote.
    Quote,
    /// Inside an attribute value quoted with this byte.
    Value(u8),
    /// After a value: whitespace, `/` or `>`.
    AfterValue,
    /// After `/` in a start tag: `>`.
    SelfClose,
    /// An end tag's name.
    EndName,
    /// After an end tag's name: whitespace, then `>`.
    EndTail,
}

/// One open element: its name's hash (the end tag must match) and its
/// children so far.
#[derive(Debug, Clone, Copy)]
struct Frame {
    name: u64,
    children: u32,
}

/// FNV-1a over a name as it streams: end tags are matched by hash (a
/// collision lets a malformed document through, never a limit).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
}

#[derive(Debug, Clone)]
pub struct Scanner {
    limits: Limits,
    depth_cap: u32,
    st: St,
    stack: Vec<Frame>,
    /// The name being read (hashed as it streams).
    name: Fnv,
    /// Characters of the current text node, value or comment.
    chars: u32,
    /// The current text node has more than whitespace (it is a child).
    text_counted: bool,
    /// Attributes of the element being opened.
    attributes: u32,
    /// The attribute being read is a namespace declaration.
    xmlns: bool,
    root_done: bool,
    /// Bytes matched of a leading UTF-8 byte order mark ([`BOM_DONE`]:
    /// past the start).
    bom: u8,
}

const BOM: &[u8] = b"\xef\xbb\xbf";
const BOM_DONE: u8 = u8::MAX;

const DEPTH: Rule = Rule {
    field: "maxNodeDepth",
    what: "elements are nested deeper than",
    unit: "levels",
};
const ATTRIBUTES: Rule = Rule {
    field: "maxAttributeCountPerElement",
    what: "an element has more attributes than",
    unit: "",
};
const CHILDREN: Rule = Rule {
    field: "maxChildCount",
    what: "an element has more children than",
    unit: "",
};
const TEXT_LENGTH: Rule = Rule {
    field: "maxTextLength",
    what: "a text node is longer than",
    unit: "",
};
const ATTRIBUTE_LENGTH: Rule = Rule {
    field: "maxAttributeLength",
    what: "an attribute value is longer than",
    unit: "",
};
const COMMENT_LENGTH: Rule = Rule {
    field: "maxCommentLength",
    what: "a comment is longer than",
    unit: "",
};

#[cold]
fn invalid(what: &str) -> Breach {
    Breach {
        rule: "",
        message: format!("the body is not well-formed XML: {what}"),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A byte that may be in a name: anything but markup, quotes and space
/// (names are checked for what matters here, not for every XML rule).
fn is_name(b: u8) -> bool {
    !is_space(b)
        && !matches!(
            b,
            b'<' | b'>' | b'/' | b'=' | b'"' | b'\'' | b'&' | b'?' | b'!'
        )
}

/// A UTF-8 continuation byte: part of the character before it.
fn continues(b: u8) -> bool {
    (0x80..=0xbf).contains(&b)
}

const BANG: [&[u8]; 3] = [b"--", b"[CDATA[", b"DOCTYPE"];

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            depth_cap: limits.depth.unwrap_or(NESTING_CEILING),
            limits,
            st: St::Text,
            stack: Vec::new(),
            name: Default::default(),
            chars: 0,
            text_counted: false,
            attributes: 0,
            xmlns: false,
            root_done: false,
            bom: 0,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Breach> {
        if self.bom == BOM_DONE {
            return self.run(bytes);
        }
        for (i, &b) in bytes.iter().enumerate() {
            if self.bom != BOM_DONE {
                // a UTF-8 byte order mark, even cut across chunks, is skipped
                match BOM.get(self.bom as usize) {
                    Some(&m) if m == b => {
                        self.bom += 1;
                        continue;
                    }
                    _ if self.bom == 0 || self.bom as usize == BOM.len() => {
                        self.bom = BOM_DONE;
                        return self.run(&bytes[i..]);
                    }
                    _ => return Err(invalid("a broken byte order mark")),
                }
            }
        }
        Ok(())
    }

    /// Feed `bytes`: runs of plain text, attribute values and comments at
    /// once, the rest byte by byte.
    fn run(&mut self, bytes: &[u8]) -> Result<(), Breach> {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let stop: fn(u8) -> bool = match self.st {
                St::Text if !self.stack.is_empty() && b != b'<' => |b| b == b'<',
                St::Value(b'"') if b != b'"' && b != b'<' => |b| b == b'"' || b == b'<',
                St::Value(b'\'') if b != b'\'' && b != b'<' => |b| b == b'\'' || b == b'<',
                St::Comment(_) if b != b'-' && b != b'>' => |b| b == b'-' || b == b'>',
                _ => {
                    self.byte(b)?;
                    i += 1;
                    continue;
                }
            };
            let end = bytes[i..]
                .iter()
                .position(|&b| stop(b))
                .map_or(bytes.len(), |n| i + n);
            self.span(&bytes[i..end])?;
            i = end;
        }
        Ok(())
    }

    /// A run of bytes none of which ends the current text, value or
    /// comment.
    fn span(&mut self, run: &[u8]) -> Result<(), Breach> {
        let n = super::chars(run);
        self.chars = self.chars.saturating_add(n);
        match self.st {
            St::Text => {
                if !self.text_counted && run.iter().any(|&b| !is_space(b)) {
                    self.text_counted = true;
                    self.child()?;
                }
                TEXT_LENGTH.check(self.chars, self.limits.text_length)
            }
            St::Value(_) => ATTRIBUTE_LENGTH.check(self.chars, self.limits.attribute_length),
            _ => {
                self.st = St::Comment(0);
                COMMENT_LENGTH.check(self.chars, self.limits.comment_length)
            }
        }
    }

    /// The body ended: the root element must be closed (or absent).
    pub fn finish(&mut self) -> Result<(), Breach> {
        match (self.st, self.stack.is_empty()) {
            (St::Text, true) => Ok(()),
            _ => Err(invalid("it ends before the document does")),
        }
    }

    fn byte(&mut self, b: u8) -> Result<(), Breach> {
        match self.st {
            St::Text => self.text(b),
            St::Lt => self.lt(b),
            St::Bang { word, n } => self.bang(b, word, n),
            St::Comment(dashes) => {
                let (limit, rule) = (self.limits.comment_length, &COMMENT_LENGTH);
                if let Some(dashes) = self.section(b, dashes, b'-', limit, rule)? {
                    self.st = St::Comment(dashes);
                }
                Ok(())
            }
            St::Cdata(brackets) => {
                let (limit, rule) = (self.limits.text_length, &TEXT_LENGTH);
                if let Some(brackets) = self.section(b, brackets, b']', limit, rule)? {
                    self.st = St::Cdata(brackets);
                }
                Ok(())
            }
            St::Pi(question) => {
                match (question, b) {
                    (true, b'>') => self.enter_text(),
                    _ => self.st = St::Pi(b == b'?'),
                }
                Ok(())
            }
            St::StartName => match b {
                _ if is_name(b) => {
                    self.name.add(b);
                    Ok(())
                }
                _ => {
                    self.open()?;
                    self.st = St::InTag;
                    self.in_tag(b)
                }
            },
            St::InTag => self.in_tag(b),
            St::AttrName(n) => match b {
                _ if is_name(b) => {
                    // `xmlns` or `xmlns:prefix`: a namespace declaration
                    const XMLNS: &[u8] = b"xmlns";
                    self.st = St::AttrName(match n {
                        0..=4 if XMLNS[n as usize] == b => n + 1,
                        5 if b == b':' => 6,
                        6 => 6,
                        _ => 7,
                    });
                    Ok(())
                }
                _ => {
                    self.xmlns = matches!(n, 5 | 6);
                    if !self.xmlns {
                        self.attributes += 1;
                        ATTRIBUTES.check(self.attributes, self.limits.attributes)?;
                    }
                    self.st = St::Eq;
                    self.byte(b)
                }
            },
            St::Eq => match b {
                b'=' => {
                    self.st = St::Quote;
                    Ok(())
                }
                _ if is_space(b) => Ok(()),
                _ => Err(invalid("an attribute without '='")),
            },
            St::Quote => match b {
                b'"' | b'\'' => {
                    self.chars = 0;
                    self.st = St::Value(b);
                    Ok(())
                }
                _ if is_space(b) => Ok(()),
                _ => Err(invalid("an attribute value without quotes")),
            },
            St::Value(q) => match b {
                _ if b == q => {
                    self.st = St::AfterValue;
                    Ok(())
                }
                b'<' => Err(invalid("'<' in an attribute value")),
                _ if continues(b) => Ok(()),
                _ => {
                    self.chars = self.chars.saturating_add(1);
                    ATTRIBUTE_LENGTH.check(self.chars, self.limits.attribute_length)
                }
            },
            St::AfterValue => match b {
                _ if is_space(b) => {
                    self.st = St::InTag;
                    Ok(())
                }
                b'/' | b'>' => self.in_tag(b),
                _ => Err(invalid("attributes without space between them")),
            },
            St::SelfClose => match b {
                b'>' => {
                    self.close(None)?;
                    self.enter_text();
                    Ok(())
                }
                _ => Err(invalid("'/' in a start tag not followed by '>'")),
            },
            St::EndName => match b {
                _ if is_name(b) => {
                    self.name.add(b);
                    Ok(())
                }
                _ => {
                    let name = std::mem::take(&mut self.name).0;
                    self.close(Some(name))?;
                    self.st = St::EndTail;
                    self.byte(b)
                }
            },
            St::EndTail => match b {
                b'>' => {
                    self.enter_text();
                    Ok(())
                }
                _ if is_space(b) => Ok(()),
                _ => Err(invalid("an end tag with more than a name")),
            },
        }
    }

    fn text(&mut self, b: u8) -> Result<(), Breach> {
        if b == b'<' {
            self.st = St::Lt;
            return Ok(());
        }
        if self.stack.is_empty() {
            return match is_space(b) {
                true => Ok(()),
                false => Err(invalid("text outside the root element")),
            };
        }
        if !is_space(b) && !self.text_counted {
            self.text_counted = true;
            self.child()?;
        }
        if continues(b) {
            return Ok(());
        }
        self.chars = self.chars.saturating_add(1);
        TEXT_LENGTH.check(self.chars, self.limits.text_length)
    }

    /// A byte of a comment or CDATA section, which ends at two `closer`s
    /// and `>` (they are not part of its length): the run of `closer`s
    /// with it, or `None` when it ended the section.
    fn section(
        &mut self,
        b: u8,
        run: u8,
        closer: u8,
        limit: Limit,
        rule: &Rule,
    ) -> Result<Option<u8>, Breach> {
        if b == b'>' && run >= 2 {
            self.enter_text();
            return Ok(None);
        }
        let run = if b == closer {
            run.saturating_add(1)
        } else {
            0
        };
        if continues(b) {
            return Ok(Some(run));
        }
        self.chars = self.chars.saturating_add(1);
        rule.check(self.chars - u32::from(run.min(2)), limit)?;
        Ok(Some(run))
    }

    fn lt(&mut self, b: u8) -> Result<(), Breach> {
        self.st = match b {
            b'/' => {
                self.name = Default::default();
                St::EndName
            }
            b'!' => St::Bang { word: 0, n: 0 },
            b'?' => {
                self.child()?;
                St::Pi(false)
            }
            _ if is_name(b) => {
                if self.stack.is_empty() && self.root_done {
                    return Err(invalid("more than one root element"));
                }
                self.name = Default::default();
                self.name.add(b);
                St::StartName
            }
            _ => return Err(invalid("'<' not starting a tag")),
        };
        Ok(())
    }

    /// After `<!`: `n` bytes matched of `BANG[word]` (the words differ
    /// in their first byte).
    fn bang(&mut self, b: u8, word: u8, n: u8) -> Result<(), Breach> {
        let word = match n {
            0 => BANG.iter().position(|w| w[0] == b),
            _ => (BANG[word as usize].get(n as usize) == Some(&b)).then_some(word as usize),
        };
        let Some(i) = word else {
            return Err(invalid("'<!' not starting a comment or CDATA section"));
        };
        if n as usize + 1 < BANG[i].len() {
            self.st = St::Bang {
                word: i as u8,
                n: n + 1,
            };
            return Ok(());
        }
        self.chars = 0;
        match i {
            0 => {
                self.child()?;
                self.st = St::Comment(0);
                Ok(())
            }
            1 if !self.stack.is_empty() => {
                self.child()?;
                self.st = St::Cdata(0);
                Ok(())
            }
            1 => Err(invalid("a CDATA section outside the root element")),
            _ => Err(Breach {
                rule: "DTD",
                message: "a document type declaration (<!DOCTYPE) is not allowed: \
                          entities could expand without bound"
                    .to_string(),
            }),
        }
    }

    /// Markup ended: a new text node may start.
    fn enter_text(&mut self) {
        self.chars = 0;
        self.text_counted = false;
        self.st = St::Text;
    }

    fn in_tag(&mut self, b: u8) -> Result<(), Breach> {
        match b {
            b'>' => {
                self.enter_text();
                Ok(())
            }
            b'/' => {
                self.st = St::SelfClose;
                Ok(())
            }
            _ if is_space(b) => Ok(()),
            _ if is_name(b) => {
                self.st = St::AttrName(0);
                self.byte(b)
            }
            _ => Err(invalid("an unexpected character in a start tag")),
        }
    }

    /// The start tag's name is complete: the element opens.
    fn open(&mut self) -> Result<(), Breach> {
        self.child()?;
        if self.stack.len() as u32 >= self.depth_cap {
            return Err(DEPTH.breach(self.depth_cap));
        }
        let name = std::mem::take(&mut self.name).0;
        self.stack.push(Frame { name, children: 0 });
        self.attributes = 0;
        Ok(())
    }

    /// An element ends (`None`: it was self-closing).
    fn close(&mut self, name: Option<u64>) -> Result<(), Breach> {
        match (self.stack.pop(), name) {
            (Some(_), None) => {}
            (Some(open), Some(name)) if open.name == name => {}
            (Some(_), Some(_)) => return Err(invalid("an end tag that does not match")),
            (None, _) => return Err(invalid("an end tag without a start tag")),
        }
        if self.stack.is_empty() {
            self.root_done = true;
        }
        Ok(())
    }

    /// A child node of the open element (none at the top level).
    fn child(&mut self) -> Result<(), Breach> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        top.children = top.children.saturating_add(1);
        CHILDREN.check(top.children, self.limits.children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(v: [i64; 6]) -> Limits {
        Limits::from_fields(v.map(|v| (v >= 0).then_some(v as u32)))
    }

    const NONE: [i64; 6] = [-1; 6];

    fn check(l: [i64; 6], doc: &str) -> Result<(), &'static str> {
        super::super::verdict(super::super::Format::Xml(limits(l)), doc)
    }

    #[test]
    fn well_formed_documents_pass() {
        for doc in [
            "",
            "\u{feff}<a/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n<a x='1' y=\"2\"><b/>t&amp;t<![CDATA[<x>]]></a>\n",
            "<ns:a xmlns:ns=\"urn:x\"><ns:b ns:c=\"é\">é</ns:b></ns:a>",
            "<a\n  b = \"1\"\n/>",
            "<a></a ><!-- after --><?pi x?>  ",
        ] {
            assert_eq!(check(NONE, doc), Ok(()), "{doc}");
        }
    }

    #[test]
    fn malformed_documents_are_refused() {
        for doc in [
            "<a>",
            "<a></b>",
            "</a>",
            "<a/><b/>",
            "text",
            "<a/>text",
            "<a b></a>",
            "<a b=1></a>",
            "<a b=\"1\"c=\"2\"/>",
            "<a b=\"<\"/>",
            "<a/ >",
            "<a><!x></a>",
            "<![CDATA[x]]>",
            "< a/>",
            "<a></a b>",
            "\u{feff}\u{feff}<a/>",
            "<a><!-- open",
        ] {
            assert_eq!(check(NONE, doc), Err("invalid"), "{doc:?}");
        }
    }

    #[test]
    fn a_dtd_is_refused_so_entities_never_expand() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"#;
        assert_eq!(check(NONE, laughs), Err("DTD"));
        assert_eq!(
            check(NONE, "<!DOCTYPE a SYSTEM \"file:///etc/passwd\"><a/>"),
            Err("DTD")
        );
    }

    #[test]
    fn flex_docs_example_limits() {
        // maxNodeDepth 1, attributes 1, children 2, text 20, attribute 20, comment 20
        let l = [1, 1, 2, 20, 20, 20];
        assert_eq!(
            check(l, "<a x=\"12345678901234567890\">text<!--c--></a>"),
            Ok(())
        );
        assert_eq!(check(l, "<a><b/></a>"), Err("maxNodeDepth"));
        assert_eq!(
            check(l, "<a x=\"1\" y=\"2\"/>"),
            Err("maxAttributeCountPerElement")
        );
        assert_eq!(check(l, "<a xmlns=\"u\" xmlns:p=\"v\" x=\"1\"/>"), Ok(()));
        assert_eq!(check(l, "<a>t<!--c--><?p?></a>"), Err("maxChildCount"));
        assert_eq!(check(l, "<a>\n  <!--c-->\n  <!--d-->\n</a>"), Ok(()));
        assert_eq!(
            check(l, "<a>123456789012345678901</a>"),
            Err("maxTextLength")
        );
        assert_eq!(
            check(l, "<a><![CDATA[123456789012345678901]]></a>"),
            Err("maxTextLength")
        );
        assert_eq!(check(l, "<a><![CDATA[12345678901234567890]]></a>"), Ok(()));
        assert_eq!(
            check(l, "<a x=\"123456789012345678901\"/>"),
            Err("maxAttributeLength")
        );
        assert_eq!(
            check(l, "<a><!--123456789012345678901--></a>"),
            Err("maxCommentLength")
        );
        assert_eq!(check(l, "<a><!--1234567890123456789--></a>"), Ok(()));
        assert_eq!(check(l, "<a>éééééééééééééééééééé</a>"), Ok(()));
    }

    #[test]
    fn attribute_values_do_not_count_toward_the_next_text() {
        let l = [-1, -1, -1, 3, -1, -1];
        assert_eq!(check(l, "<a b=\"123456\">123</a>"), Ok(()));
        assert_eq!(check(l, "<a><!--123456-->123</a>"), Ok(()));
    }

    #[test]
    fn nesting_is_capped_even_without_a_limit() {
        let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        let mut s = Scanner::new(limits(NONE));
        assert!(s.feed(deep(NESTING_CEILING as usize).as_bytes()).is_ok());
        assert!(s.finish().is_ok());
        let mut s = Scanner::new(limits(NONE));
        assert_eq!(
            s.feed(deep(10_000).as_bytes()).unwrap_err().rule,
            "maxNodeDepth"
        );
    }
}
