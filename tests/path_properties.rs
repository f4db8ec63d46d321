//! Properties of path normalisation and routing, checked on generated
//! paths (proptest): normalising is idempotent, a normalised path has no
//! dot segment, and a normalised path routes like any percent-encoded
//! spelling of it.

use flex_gateway::path::normalize;
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("api".to_string()),
        Just("products".to_string()),
        Just("".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%41b".to_string()),
        Just("c%20d".to_string()),
        Just("x;y".to_string()),
        Just("%7E~".to_string()),
        "[a-z0-9._~-]{1,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..8), any::<bool>()).prop_map(|(segs, trailing)| {
        let mut p = format!("/{}", segs.join("/"));
        if trailing {
            p.push('/');
        }
        p
    })
}

/// Percent-encode the unreserved characters at the positions `mask` picks.
fn reencode(path: &str, mask: &[bool]) -> String {
    let mut out = String::new();
    let mut i = 0;
    let b = path.as_bytes();
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            out.push_str(&path[i..i + 3]);
            i += 3;
            continue;
        }
        let encode = (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            && mask.get(i % mask.len().max(1)).copied().unwrap_or(false);
        if encode {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

use crate::checks::route_of;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalising_is_idempotent(p in path()) {
        if let Ok(n) = normalize(&p) {
            let again = normalize(&n).expect("a normalised path normalises");
            prop_assert_eq!(again.as_ref(), n.as_ref());
        }
    }

    #[test]
    fn a_normalised_path_has_no_dot_segment(p in path()) {
        if let Ok(n) = normalize(&p) {
            for seg in n.split('/') {
                prop_assert!(seg != "." && seg != "..", "{} -> {}", p, n);
            }
            prop_assert!(!n.contains("//"), "{} -> {}", p, n);
        }
    }

    #[test]
    fn routing_a_normalised_path_equals_routing_its_reencoded_form(
        p in path(),
        mask in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        if let Ok(n) = normalize(&p) {
            let spelled = reencode(&n, &mask);
            let n2 = normalize(&spelled).expect("re-encoding keeps it valid");
            prop_assert_eq!(n2.as_ref(), n.as_ref(), "{}", spelled);
            prop_assert_eq!(route_of(&n2), route_of(&n));
        }
    }
}
