//! The seven header-map calls, on the request and response headers of the
//! effective context and on the headers of a call response being
//! delivered. Trailers are not proxied through filters: their maps read as
//! empty and writes to them are accepted and dropped.

use super::{guest, hand_over, read, write_u32, C, R};
use crate::wasm::abi::{self, map, status};
use crate::wasm::state::{Headers, HostState};
use wasmtime::Linker;

/// The map a call names, when it exists now.
fn map_of(h: &mut HostState, kind: i32) -> Option<&mut Headers> {
    match kind {
        map::REQUEST_HEADERS => h.stream().map(|s| &mut s.request),
        map::RESPONSE_HEADERS => h.stream().map(|s| &mut s.response),
        map::HTTP_CALL_RESPONSE_HEADERS => h.call_response.as_mut().map(|r| &mut r.headers),
        _ => None,
    }
}

fn name(c: &C, ptr: i32, len: i32) -> Result<String, super::Status> {
    Ok(String::from_utf8_lossy(&read(c, ptr, len)?).to_ascii_lowercase())
}

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C, kind: i32, ret_ptr: i32, ret_len: i32| -> R {
            let bytes = match map_of(c.data_mut(), kind) {
                Some(m) => m.serialize(),
                None => abi::serialize_pairs(std::iter::empty()),
            };
            hand_over(&mut c, &bytes, ret_ptr, ret_len)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C, kind: i32, ptr: i32, len: i32| -> R {
            let raw = guest!(read(&c, ptr, len));
            let Some(pairs) = abi::deserialize_pairs(&raw) else {
                return Ok(status::BAD_ARGUMENT);
            };
            if let Some(m) = map_of(c.data_mut(), kind) {
                m.set_all(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
                        .collect(),
                );
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C, kind: i32, ret: i32| -> R {
            let size = map_of(c.data_mut(), kind).map_or(0, |m| m.serialize().len());
            guest!(write_u32(&mut c, ret, size as u32));
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C, kind: i32, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32| -> R {
            let key = guest!(name(&c, kp, kl));
            let value = map_of(c.data_mut(), kind).and_then(|m| m.get(&key).map(<[u8]>::to_vec));
            match value {
                Some(v) => hand_over(&mut c, &v, ret_ptr, ret_len),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = guest!(name(&c, kp, kl));
            let value = guest!(read(&c, vp, vl));
            if let Some(m) = map_of(c.data_mut(), kind) {
                m.add(key, value);
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = guest!(name(&c, kp, kl));
            let value = guest!(read(&c, vp, vl));
            if let Some(m) = map_of(c.data_mut(), kind) {
                m.replace(key, value);
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C, kind: i32, kp: i32, kl: i32| -> R {
            let key = guest!(name(&c, kp, kl));
            if let Some(m) = map_of(c.data_mut(), kind) {
                m.remove(&key);
            }
            Ok(status::OK)
        },
    )?;
    Ok(())
}
