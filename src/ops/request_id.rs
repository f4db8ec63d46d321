//! Request ids: a client's `X-Request-Id` is kept when it is sane, otherwise
//! one is made: 32 hex digits from a per-process random seed and a counter
//! mixed through splitmix64 (unique within the process, unguessable enough
//! for correlation, no syscall per request).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

static SEED: LazyLock<u64> = LazyLock::new(|| {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
});
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn generate() -> String {
    let raw = raw_for(COUNTER.fetch_add(1, Ordering::Relaxed));
    // hex digits: ASCII
    String::from_utf8_lossy(&raw).into_owned()
}

/// A new id, as text and as a header value sharing one buffer among its
/// clones (the request upstream and the response): two allocations.
pub fn generate_with_header() -> (String, http::HeaderValue) {
    let raw = raw_for(COUNTER.fetch_add(1, Ordering::Relaxed));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let header = http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(raw))
        .unwrap_or(http::HeaderValue::from_static(""));
    (text, header)
}

/// The id of the `n`th request (hex digits written by hand, without the
/// formatting machinery).
fn raw_for(n: u64) -> [u8; 32] {
    let a = splitmix(*SEED ^ n);
    let b = splitmix(a ^ n.rotate_left(32));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, v) in [a, b].into_iter().enumerate() {
        for d in 0..16 {
            out[i * 16 + d] = HEX[(v >> ((15 - d) * 4)) as usize & 0xf];
        }
    }
    out
}

#[cfg(test)]
fn id_for(n: u64) -> String {
    String::from_utf8_lossy(&raw_for(n)).into_owned()
}

/// A client-supplied id is kept if it is 1-128 visible ASCII characters.
pub fn accept(value: &[u8]) -> Option<&str> {
    if value.is_empty() || value.len() > 128 || !value.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_shaped() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let (text, header) = generate_with_header();
        assert_eq!(header.as_bytes(), text.as_bytes());
        assert_ne!(text, b);
        // the same digits `format!` gives
        for n in [0, 1, 0xdead_beef, u64::MAX] {
            let x = splitmix(*SEED ^ n);
            let y = splitmix(x ^ n.rotate_left(32));
            assert_eq!(id_for(n), format!("{x:016x}{y:016x}"));
        }
    }

    #[test]
    fn accepts_only_sane_ids() {
        assert_eq!(accept(b"abc-123"), Some("abc-123"));
        assert_eq!(accept(b""), None);
        assert_eq!(accept(b"has space"), None);
        assert_eq!(accept(&[b'a'; 129]), None);
    }
}
