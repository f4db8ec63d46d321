//! The proxy-wasm ABI's numbers and encodings (spec v0.2.1): statuses,
//! map/buffer/stream types, the map serialization, and which ABI a module
//! speaks. Pure: no runtime, no I/O.

/// `proxy_status_t`.
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const SERIALIZATION_FAILURE: i32 = 3;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// `proxy_action_t`, returned by the header and body callbacks.
pub const ACTION_CONTINUE: i32 = 0;
pub const ACTION_PAUSE: i32 = 1;

/// `proxy_map_type_t`.
pub mod map {
    pub const REQUEST_HEADERS: i32 = 0;
    pub const REQUEST_TRAILERS: i32 = 1;
    pub const RESPONSE_HEADERS: i32 = 2;
    pub const RESPONSE_TRAILERS: i32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// `proxy_buffer_type_t`.
pub mod buffer {
    pub const REQUEST_BODY: i32 = 0;
    pub const RESPONSE_BODY: i32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
    pub const FOREIGN_FUNCTION_ARGUMENTS: i32 = 8;
}

/// `proxy_stream_type_t`.
pub mod stream {
    pub const HTTP_REQUEST: i32 = 0;
    pub const HTTP_RESPONSE: i32 = 1;
}

/// `proxy_metric_type_t`.
pub mod metric {
    pub const COUNTER: i32 = 0;
    pub const GAUGE: i32 = 1;
    pub const HISTOGRAM: i32 = 2;
}

/// `proxy_log_level_t`: trace 0 … critical 5.
pub fn log_level(level: i32) -> log::Level {
    match level {
        i32::MIN..=0 => log::Level::Trace,
        1 => log::Level::Debug,
        2 => log::Level::Info,
        3 => log::Level::Warn,
        _ => log::Level::Error,
    }
}

/// The level the host logs at, as `proxy_get_log_level` reports it.
pub fn abi_log_level(level: log::LevelFilter) -> i32 {
    match level {
        log::LevelFilter::Trace => 0,
        log::LevelFilter::Debug => 1,
        log::LevelFilter::Info => 2,
        log::LevelFilter::Warn => 3,
        log::LevelFilter::Error => 4,
        log::LevelFilter::Off => 5,
    }
}

/// The ABI versions this host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    V0_2_0,
    V0_2_1,
}

impl Abi {
    pub fn as_str(self) -> &'static str {
        match self {
            Abi::V0_2_0 => "0.2.0",
            Abi::V0_2_1 => "0.2.1",
        }
    }
}

/// Which ABI a module speaks, from its `proxy_abi_version_*` export.
pub fn detect<'a>(exports: impl IntoIterator<Item = &'a str>) -> Result<Abi, String> {
    let mut seen = Vec::new();
    for name in exports {
        match name {
            "proxy_abi_version_0_2_1" => return Ok(Abi::V0_2_1),
            "proxy_abi_version_0_2_0" => return Ok(Abi::V0_2_0),
            other if other.starts_with("proxy_abi_version_") => seen.push(other.to_string()),
            _ => {}
        }
    }
    match seen.first() {
        Some(v) => Err(format!(
            "the module speaks proxy-wasm ABI {} (export {v}); this gateway runs 0.2.0 and 0.2.1 (rebuild it with proxy-wasm SDK 0.2 or later)",
            v.trim_start_matches("proxy_abi_version_").replace('_', ".")
        )),
        None => Err("the module exports no proxy_abi_version_* marker: not a proxy-wasm filter (or one older than ABI 0.2.0); build it with a proxy-wasm SDK".into()),
    }
}

/// Serialize header pairs: `u32 count`, `(u32 name len, u32 value len)`
/// per pair, then each `name\0value\0` (little-endian).
pub fn serialize_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (count, bytes) = pairs.clone().fold((0usize, 0usize), |(n, b), (k, v)| {
        (n + 1, b + k.len() + v.len() + 2)
    });
    let mut out = Vec::with_capacity(4 + count * 8 + bytes);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The pairs of a serialized map; `None` when the bytes are not one.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.len() <= 1 {
        return Some(Vec::new()); // empty: no bytes, or a single 0 byte
    }
    let u32_at = |i: usize| -> Option<usize> {
        let b = bytes.get(i..i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let at = 4 + i.checked_mul(8)?;
        sizes.push((u32_at(at)?, u32_at(at + 4)?));
    }
    let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (kl, vl) in sizes {
        let k = bytes.get(at..at.checked_add(kl)?)?.to_vec();
        at += kl;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        let v = bytes.get(at..at.checked_add(vl)?)?.to_vec();
        at += vl;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        pairs.push((k, v));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x-a", b""), (b"k", b"v\xff")];
        let bytes = serialize_pairs(pairs.iter().copied());
        // 4 + 3*8 + (5+2+2) + (3+0+2) + (1+2+2)
        assert_eq!(bytes.len(), 4 + 24 + 9 + 5 + 5);
        let back = deserialize_pairs(&bytes).unwrap();
        let back: Vec<(&[u8], &[u8])> = back.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(back, pairs);
    }

    #[test]
    fn bad_maps_are_refused() {
        assert_eq!(deserialize_pairs(&[]), Some(vec![]));
        assert_eq!(deserialize_pairs(&[0]), Some(vec![]));
        // count 1, sizes claim more bytes than there are
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"k\0v\0");
        assert_eq!(deserialize_pairs(&b), None);
        // a count that would overflow
        let b = u32::MAX.to_le_bytes().to_vec();
        assert_eq!(deserialize_pairs(&b), None);
        // missing terminator
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"kxv\0");
        assert_eq!(deserialize_pairs(&b), None);
    }

    #[test]
    fn abi_versions() {
        assert_eq!(
            detect(["memory", "proxy_abi_version_0_2_1"]),
            Ok(Abi::V0_2_1)
        );
        assert_eq!(detect(["proxy_abi_version_0_2_0"]), Ok(Abi::V0_2_0));
        let old = detect(["proxy_abi_version_0_1_0"]).unwrap_err();
        assert!(old.contains("ABI 0.1.0"), "{old}");
        let none = detect(["memory", "_start"]).unwrap_err();
        assert!(none.contains("no proxy_abi_version"), "{none}");
    }
}
