//! `json-threat-protection` (Flex's `json-threat-protection-flex`, same
//! fields): a request body declared JSON is checked as it streams, byte by
//! byte, without building a document, and refused (400) at the first limit
//! it breaks or at the first byte that is not JSON.
//!
//! ```yaml
//! - json-threat-protection:
//!     maxContainerDepth: 10          # objects and arrays nested
//!     maxObjectEntryCount: 100       # entries in one object
//!     maxObjectEntryNameLength: 80   # characters in an entry's name
//!     maxArrayElementCount: 1000     # elements in one array
//!     maxStringValueLength: 4096     # characters in a string value
//! ```
//!
//! Every limit defaults to `-1` (none), as in Flex. Depth counts the
//! containers open at a point: in `{"a": [{"b": 1}]}` the innermost object
//! is at depth 3. Lengths count characters (an escape such as `\n` or
//! `\u00e9` is one). Memory per request is a few bytes per open container,
//! and nesting is capped at [`super::NESTING_CEILING`] when
//! `maxContainerDepth` is `-1`.

use super::{Breach, Limit, Rule, NESTING_CEILING};
use crate::config::fields::{f, Field, Ty};

/// A limit field: `-1` (none) or a bound.
const fn limit(name: &'static str, doc: &'static str) -> Field {
    f(name, Ty::Int(-1, i32::MAX as i64)).default("-1").doc(doc)
}

pub const FIELDS: &[Field] = &[
    f("maxContainerDepth", Ty::Int(-1, 100_000))
        .default("-1")
        .doc("Objects and arrays nested in one another (-1: none; nesting past 1000 is refused all the same)."),
    limit("maxObjectEntryCount", "Entries in one object (-1: none)."),
    limit("maxObjectEntryNameLength", "Characters in an entry's name (-1: none)."),
    limit("maxArrayElementCount", "Elements in one array (-1: none)."),
    limit("maxStringValueLength", "Characters in a string value (-1: none)."),
];

/// The limits, in [`FIELDS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub depth: Limit,
    pub entries: Limit,
    pub name_length: Limit,
    pub elements: Limit,
    pub string_length: Limit,
}

impl Limits {
    pub fn from_fields(l: [Limit; 5]) -> Limits {
        let [depth, entries, name_length, elements, string_length] = l;
        Limits {
            depth,
            entries,
            name_length,
            elements,
            string_length,
        }
    }

    pub fn fields(&self) -> [Limit; 5] {
        [
            self.depth,
            self.entries,
            self.name_length,
            self.elements,
            self.string_length,
        ]
    }
}

/// Where the scanner is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Before the top-level value (whitespace allowed).
    Start,
    /// A value is required (after `:` or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a name or `}`.
    NameOrClose,
    /// After `,` in an object: a name.
    Name,
    /// After a name: `:`.
    Colon,
    /// After a value: `,`, the container's closer, or (top level) the end.
    After,
    /// Inside a string (`name`: an entry's name).
    Str {
        name: bool,
    },
    /// After a backslash in a string.
    Escape {
        name: bool,
    },
    /// Inside `\uXXXX`: hex digits left.
    Unicode {
        name: bool,
        left: u8,
    },
    Num(Num),
    /// Inside `true`, `false` or `null` (`word` in [`WORDS`]): `at` letters
    /// read.
    Literal {
        word: u8,
        at: u8,
    },
}

/// The literal words.
const WORDS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// The number grammar (RFC 8259 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }

    /// The state after `b`, or `None` if `b` does not continue the number.
    fn next(self, b: u8) -> Option<Num> {
        let digit = b.is_ascii_digit();
        Some(match (self, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, _) if digit => Num::Int,
            (Num::Int, _) if digit => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::Dot | Num::Frac, _) if digit => Num::Frac,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, _) if digit => Num::Exp,
            _ => return None,
        })
    }
}

/// One open container: an object (`true`) or array, and its count so far.
#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    count: u32,
}

/// The streaming checker of one body.
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: Limits,
    depth_cap: u32,
    st: St,
    stack: Vec<Frame>,
    /// Characters of the current string so far.
    chars: u32,
    /// The top-level value is complete.
    done: bool,
}

/// A byte inside a string that needs no attention of its own.
fn plain(b: u8) -> bool {
    b != b'"' && b != b'\\' && b >= 0x20
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

const DEPTH: Rule = Rule {
    field: "maxContainerDepth",
    what: "objects and arrays are nested deeper than",
    unit: "levels",
};
const ENTRIES: Rule = Rule {
    field: "maxObjectEntryCount",
    what: "an object has more entries than",
    unit: "",
};
const NAME_LENGTH: Rule = Rule {
    field: "maxObjectEntryNameLength",
    what: "an entry name is longer than",
    unit: "characters",
};
const ELEMENTS: Rule = Rule {
    field: "maxArrayElementCount",
    what: "an array has more elements than",
    unit: "",
};
const STRING_LENGTH: Rule = Rule {
    field: "maxStringValueLength",
    what: "a string value is longer than",
    unit: "characters",
};

#[cold]
#[inline(never)]
fn invalid(what: &str) -> Breach {
    Breach {
        rule: "",
        message: format!("the body is not valid JSON: {what}"),
    }
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            depth_cap: limits.depth.unwrap_or(NESTING_CEILING),
            limits,
            st: St::Start,
            stack: Vec::new(),
            chars: 0,
            done: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Breach> {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            // the plain run of a string at once: its characters are counted
            // and checked together, the byte ending it below
            if let St::Str { name } = self.st {
                if plain(b) {
                    let run = bytes[i..].iter().position(|&b| !plain(b));
                    let end = run.map_or(bytes.len(), |n| i + n);
                    let chars = super::chars(&bytes[i..end]);
                    self.add_chars(chars, name)?;
                    i = end;
                    continue;
                }
            }
            self.byte(b)?;
            i += 1;
        }
        Ok(())
    }

    /// The body ended: it must hold one complete value (or nothing).
    pub fn finish(&mut self) -> Result<(), Breach> {
        match self.st {
            St::Start => Ok(()),
            St::Num(n) if n.complete() && self.stack.is_empty() => Ok(()),
            St::After if self.done => Ok(()),
            _ => Err(invalid("it ends before the document does")),
        }
    }

    fn byte(&mut self, b: u8) -> Result<(), Breach> {
        match self.st {
            St::Str { name } => self.string_byte(b, name),
            St::Escape { name } => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    self.st = St::Str { name };
                    Ok(())
                }
                b'u' => {
                    self.st = St::Unicode { name, left: 4 };
                    Ok(())
                }
                _ => Err(invalid("an unknown escape in a string")),
            },
            St::Unicode { name, left } => {
                if !b.is_ascii_hexdigit() {
                    return Err(invalid("a \\u escape without four hex digits"));
                }
                self.st = match left {
                    1 => St::Str { name },
                    _ => St::Unicode {
                        name,
                        left: left - 1,
                    },
                };
                Ok(())
            }
            St::Literal { word, at } => {
                let w = WORDS[word as usize];
                if w.get(at as usize) != Some(&b) {
                    return Err(invalid("an unknown word"));
                }
                self.st = match at as usize + 1 == w.len() {
                    true => self.after_value(),
                    false => St::Literal { word, at: at + 1 },
                };
                Ok(())
            }
            St::Num(n) => match n.next(b) {
                Some(n) => {
                    self.st = St::Num(n);
                    Ok(())
                }
                None if n.complete() => {
                    self.st = self.after_value();
                    self.byte(b)
                }
                None => Err(invalid("a malformed number")),
            },
            _ if is_space(b) => Ok(()),
            St::Start | St::Value | St::ValueOrClose => {
                if self.done {
                    return Err(invalid("more than one value at the top level"));
                }
                if b == b']' && self.st == St::ValueOrClose {
                    return self.close(false);
                }
                self.value(b)
            }
            St::NameOrClose | St::Name => match b {
                b'"' => {
                    self.count_entry()?;
                    self.chars = 0;
                    self.st = St::Str { name: true };
                    Ok(())
                }
                b'}' if self.st == St::NameOrClose => self.close(true),
                _ => Err(invalid("an object entry without a quoted name")),
            },
            St::Colon => match b {
                b':' => {
                    self.st = St::Value;
                    Ok(())
                }
                _ => Err(invalid("a name without ':'")),
            },
            St::After => match (b, self.stack.last().map(|f| f.object)) {
                (b',', Some(true)) => {
                    self.st = St::Name;
                    Ok(())
                }
                (b',', Some(false)) => {
                    self.count_element()?;
                    self.st = St::Value;
                    Ok(())
                }
                (b'}', Some(true)) => self.close(true),
                (b']', Some(false)) => self.close(false),
                (_, None) => Err(invalid("more than one value at the top level")),
                _ => Err(invalid("an unexpected character after a value")),
            },
        }
    }

    /// The first byte of a value.
    fn value(&mut self, b: u8) -> Result<(), Breach> {
        if self.st == St::ValueOrClose {
            self.count_element()?;
        }
        self.st = match b {
            b'{' | b'[' => return self.open(b == b'{'),
            b'"' => {
                self.chars = 0;
                St::Str { name: false }
            }
            b'-' => St::Num(Num::Minus),
            b'0' => St::Num(Num::Zero),
            b'1'..=b'9' => St::Num(Num::Int),
            b't' => St::Literal { word: 0, at: 1 },
            b'f' => St::Literal { word: 1, at: 1 },
            b'n' => St::Literal { word: 2, at: 1 },
            _ => return Err(invalid("an unexpected character where a value belongs")),
        };
        Ok(())
    }

    fn string_byte(&mut self, b: u8, name: bool) -> Result<(), Breach> {
        match b {
            b'"' => {
                self.st = match name {
                    true => St::Colon,
                    false => self.after_value(),
                };
                return Ok(());
            }
            b'\\' => self.st = St::Escape { name },
            0..=0x1f => return Err(invalid("a control character in a string")),
            // a UTF-8 continuation byte is part of the character before it
            0x80..=0xbf => return Ok(()),
            _ => {}
        }
        self.add_chars(1, name)
    }

    /// `n` more characters in the current string.
    fn add_chars(&mut self, n: u32, name: bool) -> Result<(), Breach> {
        self.chars = self.chars.saturating_add(n);
        match name {
            true => NAME_LENGTH.check(self.chars, self.limits.name_length),
            false => STRING_LENGTH.check(self.chars, self.limits.string_length),
        }
    }

    fn after_value(&mut self) -> St {
        if self.stack.is_empty() {
            self.done = true;
        }
        St::After
    }

    fn open(&mut self, object: bool) -> Result<(), Breach> {
        if self.stack.len() as u32 >= self.depth_cap {
            return Err(DEPTH.breach(self.depth_cap));
        }
        self.stack.push(Frame { object, count: 0 });
        self.st = match object {
            true => St::NameOrClose,
            false => St::ValueOrClose,
        };
        Ok(())
    }

    fn close(&mut self, object: bool) -> Result<(), Breach> {
        match self.stack.pop() {
            Some(f) if f.object == object => {
                self.st = self.after_value();
                Ok(())
            }
            _ => Err(invalid("a closing bracket that does not match")),
        }
    }

    /// One more entry or element in the open container.
    fn count(&mut self, limit: Limit, rule: &Rule) -> Result<(), Breach> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        top.count = top.count.saturating_add(1);
        rule.check(top.count, limit)
    }

    fn count_entry(&mut self) -> Result<(), Breach> {
        self.count(self.limits.entries, &ENTRIES)
    }

    fn count_element(&mut self) -> Result<(), Breach> {
        self.count(self.limits.elements, &ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(depth: i64, entries: i64, name: i64, elements: i64, string: i64) -> Limits {
        let l = |v: i64| (v >= 0).then_some(v as u32);
        Limits::from_fields([l(depth), l(entries), l(name), l(elements), l(string)])
    }

    fn check(l: Limits, doc: &str) -> Result<(), &'static str> {
        super::super::verdict(super::super::Format::Json(l), doc)
    }

    const NONE: Limits = Limits {
        depth: None,
        entries: None,
        name_length: None,
        elements: None,
        string_length: None,
    };

    #[test]
    fn valid_documents_pass() {
        for doc in [
            "",
            "  ",
            "{}",
            "[]",
            " {\"a\": [1, -2.5e+3, 0, 0.1, 1E9, true, false, null, \"x\\\"\\u00e9\\n\"]} \n",
            "\"top\"",
            "42",
            "-0",
            "[[[]]]",
            "{\"é\": {\"\": []}}",
        ] {
            assert_eq!(check(NONE, doc), Ok(()), "{doc}");
        }
    }

    #[test]
    fn malformed_documents_are_refused() {
        for doc in [
            "{",
            "[1,]",
            "[,1]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1,}",
            "[1 2]",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "trux",
            "[}",
            "{]",
            "]",
            "{} {}",
            "1 2",
            "\"abc",
            "\"a\u{1}\"",
            "\"\\x\"",
            "\"\\u12G4\"",
            "nul",
            "[1]]",
        ] {
            assert_eq!(check(NONE, doc), Err("invalid"), "{doc:?}");
        }
    }

    #[test]
    fn flex_docs_example_sits_exactly_at_its_limits() {
        let doc = r#"{"Players":[{"Name":"Sachin","Email":"sachin.tendulkar@example.com"},
            {"Name":"Suryakumar","email":"Surya@example.com"},{"Name":"Bhuvi","email":"bhuvi@example.com"},
            {"Name":"Jonty","Email":"jonty@example.com"}]}"#;
        assert_eq!(check(limits(3, 2, 7, 4, 28), doc), Ok(()));
        assert_eq!(check(limits(2, 2, 7, 4, 28), doc), Err("maxContainerDepth"));
        assert_eq!(
            check(limits(3, 1, 7, 4, 28), doc),
            Err("maxObjectEntryCount")
        );
        assert_eq!(
            check(limits(3, 2, 6, 4, 28), doc),
            Err("maxObjectEntryNameLength")
        );
        assert_eq!(
            check(limits(3, 2, 7, 3, 28), doc),
            Err("maxArrayElementCount")
        );
        assert_eq!(
            check(limits(3, 2, 7, 4, 27), doc),
            Err("maxStringValueLength")
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes_or_escapes() {
        let l = limits(-1, -1, 2, -1, 3);
        assert_eq!(check(l, r#"{"éé": "ééé"}"#), Ok(()));
        assert_eq!(check(l, r#"{"é": "\u00e9\n\""}"#), Ok(()));
        assert_eq!(check(l, r#"["\u00e9\n\"x"]"#), Err("maxStringValueLength"));
        assert_eq!(check(l, r#"{"abc": 1}"#), Err("maxObjectEntryNameLength"));
        // names are not string values, and the other way round
        assert_eq!(check(l, r#"{"ab": "abc"}"#), Ok(()));
    }

    #[test]
    fn counts_are_per_container() {
        let l = limits(-1, 2, -1, 2, -1);
        assert_eq!(check(l, r#"[[1,2],[3,4]]"#), Ok(()));
        assert_eq!(check(l, r#"[[1,2],[3,4],5]"#), Err("maxArrayElementCount"));
        assert_eq!(check(l, r#"{"a":{"b":1,"c":2},"d":[]}"#), Ok(()));
        assert_eq!(
            check(l, r#"{"a":1,"b":2,"c":3}"#),
            Err("maxObjectEntryCount")
        );
        assert_eq!(check(limits(-1, -1, -1, 0, -1), "[]"), Ok(()));
        assert_eq!(
            check(limits(-1, -1, -1, 0, -1), "[0]"),
            Err("maxArrayElementCount")
        );
    }

    #[test]
    fn nesting_is_capped_even_without_a_limit() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut s = Scanner::new(NONE);
        assert!(s.feed(deep(NESTING_CEILING as usize).as_bytes()).is_ok());
        assert!(s.finish().is_ok());
        let mut s = Scanner::new(NONE);
        let e = s.feed(deep(10_000).as_bytes()).unwrap_err();
        assert_eq!(e.rule, "maxContainerDepth");
        assert!(s.stack.len() <= NESTING_CEILING as usize);
        let mut s = Scanner::new(limits(10, -1, -1, -1, -1));
        assert_eq!(
            s.feed(deep(11).as_bytes()).unwrap_err().message,
            "objects and arrays are nested deeper than 10 levels (maxContainerDepth)"
        );
    }
}
