//! Protocol Buffers' wire format, by hand: the few messages the gateway
//! sends (OTLP spans, Envoy's external authorization `CheckRequest`) are
//! written field by field and the one it reads (`CheckResponse`) is read
//! the same way — a few dozen lines instead of a code generator in the
//! build. The tests decode and encode them with the official definitions
//! (tests/otlp_receiver.py, tests/ext_authz_server.py).

/// Protobuf wire writing: varints, length-delimited fields, fixed64.
pub struct Writer(Vec<u8>);

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer(Vec::with_capacity(n))
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }

    /// A `bool` field (written when true, as proto3 does).
    pub fn boolean(&mut self, field: u32, b: bool) {
        self.uint(field, u64::from(b));
    }

    /// A `map<string, string>` entry: `{ key = 1; value = 2 }`.
    pub fn map_entry(&mut self, field: u32, key: &str, value: &str) {
        self.message(field, |e| {
            e.string(1, key);
            e.string(2, value);
        });
    }

    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    pub fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    pub fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }

    pub fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn fixed32(&mut self, field: u32, v: u32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A nested message, written by `f` in place: its length (unknown
    /// until written) goes into a 5-byte gap, closed up afterwards — no
    /// buffer of its own per message.
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        self.key(field, 2);
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 5]);
        f(self);
        let mut len = (self.0.len() - at - 5) as u64;
        let mut prefix = [0u8; 5];
        let mut n = 0;
        while len >= 0x80 {
            prefix[n] = (len as u8) | 0x80;
            len >>= 7;
            n += 1;
        }
        prefix[n] = len as u8;
        self.0.splice(at..at + 5, prefix[..=n].iter().copied());
    }
}

/// A field as read: its number and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    Varint(u32, u64),
    Fixed64(u32, u64),
    Bytes(u32, &'a [u8]),
    Fixed32(u32, u32),
}

/// Protobuf wire reading: the fields of one message, in order. Unknown
/// fields are simply skipped by the caller (protobuf's rule); a malformed
/// message is an error, never a panic.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or("protobuf: a varint ends early")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("protobuf: a varint is longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("protobuf: a field runs past the message".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// The next field, or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<Field<'a>>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number =
            u32::try_from(key >> 3).map_err(|_| "protobuf: a field number is too large")?;
        Ok(Some(match key & 7 {
            0 => Field::Varint(number, self.varint()?),
            1 => {
                let b = self.take(8)?;
                Field::Fixed64(number, u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| "protobuf: a length is too large")?;
                Field::Bytes(number, self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(number, u32::from_le_bytes(b.try_into().expect("4 bytes")))
            }
            w => return Err(format!("protobuf: wire type {w} is not supported")),
        }))
    }
}

/// A length-delimited field's bytes as UTF-8 text (protobuf `string`).
pub fn text(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "protobuf: a string is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields() {
        let mut w = Writer(Vec::new());
        w.varint(300);
        assert_eq!(w.0, [0xac, 0x02]);
        let mut w = Writer(Vec::new());
        w.string(1, "ab");
        assert_eq!(w.0, [0x0a, 2, b'a', b'b']);
        let mut w = Writer(Vec::new());
        w.fixed64(7, 1);
        assert_eq!(w.0, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
        // nested: the length prefix fits the content, short or long
        let mut w = Writer(Vec::new());
        w.message(1, |m| m.string(1, "ab"));
        assert_eq!(w.0, [0x0a, 4, 0x0a, 2, b'a', b'b']);
        let mut w = Writer(Vec::new());
        w.message(2, |m| m.bytes(1, &[7; 200]));
        assert_eq!(&w.0[..6], [0x12, 0xcb, 0x01, 0x0a, 0xc8, 0x01]);
        assert_eq!(w.0.len(), 6 + 200);
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut w = Writer(Vec::new());
        w.uint(1, 300);
        w.message(2, |m| m.string(1, "ab"));
        w.fixed64(3, 7);
        w.fixed32(4, 9);
        let mut r = Reader::new(&w.0);
        assert_eq!(r.next_field().unwrap(), Some(Field::Varint(1, 300)));
        let Some(Field::Bytes(2, inner)) = r.next_field().unwrap() else {
            panic!("a nested message")
        };
        assert_eq!(
            Reader::new(inner).next_field().unwrap(),
            Some(Field::Bytes(1, b"ab"))
        );
        assert_eq!(r.next_field().unwrap(), Some(Field::Fixed64(3, 7)));
        assert_eq!(r.next_field().unwrap(), Some(Field::Fixed32(4, 9)));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [&[0x0a, 5, b'a'][..], &[0x80; 11], &[0x0b], &[0x08]] {
            let mut r = Reader::new(bad);
            assert!(r.next_field().is_err(), "{bad:?}");
        }
    }
}
