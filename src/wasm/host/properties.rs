//! `proxy_get_property` / `proxy_set_property`: Envoy's attribute names
//! and encodings (strings raw, integers 8-byte little-endian, booleans one
//! byte, maps as serialized pairs), plus what a filter set itself (per
//! request; the PDK writes and reads back `authentication`,
//! `policy_violation` and its tracing id).

use super::{guest, hand_over, read, C, R};
use crate::wasm::abi::{self, status};
use crate::wasm::state::{HostState, Stream};
use wasmtime::Linker;

/// The value of a property path (segments joined by `\0`).
pub fn lookup(h: &mut HostState, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(v) = match h.stream() {
        Some(s) => s.properties.get(path).cloned(),
        None => h.root_properties.get(path).cloned(),
    } {
        return Some(v);
    }
    let segments: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    let text = |v: &str| Some(v.as_bytes().to_vec());
    let int = |v: i64| Some(v.to_le_bytes().to_vec());
    let p = &h.plugin;
    match segments.as_slice() {
        [b"plugin_name"] => return text(&p.name),
        [b"plugin_root_id"] => return text(&p.root_id),
        [b"plugin_vm_id"] => return text(&p.vm_id),
        [b"node", b"id"] => return text(&p.node_id),
        _ => {}
    }
    let s: &Stream = h.streams.get(&h.effective)?;
    let header = |name: &str| s.request.get(name).map(<[u8]>::to_vec);
    let path_of = || s.request.get(":path").unwrap_or(b"/");
    match segments.as_slice() {
        [b"request", b"path"] => Some(path_of().to_vec()),
        [b"request", b"url_path"] => {
            let p = path_of();
            Some(p.split(|b| *b == b'?').next().unwrap_or(p).to_vec())
        }
        [b"request", b"query"] => {
            let p = path_of();
            Some(
                p.iter()
                    .position(|b| *b == b'?')
                    .map_or_else(Vec::new, |i| p[i + 1..].to_vec()),
            )
        }
        [b"request", b"host"] => header(":authority"),
        [b"request", b"scheme"] => header(":scheme"),
        [b"request", b"method"] => header(":method"),
        [b"request", b"protocol"] => text(s.info.protocol),
        [b"request", b"id"] => text(&s.info.id),
        [b"request", b"time"] => int(s.info.time_ns as i64),
        [b"request", b"useragent"] => header("user-agent"),
        [b"request", b"referer"] => header("referer"),
        [b"request", b"headers"] => Some(abi::serialize_pairs(
            s.request
                .pairs
                .iter()
                .filter(|(k, _)| !k.as_str().starts_with(':'))
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
        )),
        [b"request", b"headers", name] => {
            header(&String::from_utf8_lossy(name).to_ascii_lowercase())
        }
        [b"response", b"code"] => s.response_code.map(|c| i64::from(c).to_le_bytes().to_vec()),
        [b"response", b"headers", name] => s
            .response
            .get(&String::from_utf8_lossy(name).to_ascii_lowercase())
            .map(<[u8]>::to_vec),
        [b"source", b"address"] => s.info.source.map(|a| a.to_string().into_bytes()),
        [b"source", b"port"] => s
            .info
            .source
            .map(|a| i64::from(a.port()).to_le_bytes().to_vec()),
        [b"destination", b"address"] => s.info.destination.map(|a| a.to_string().into_bytes()),
        [b"destination", b"port"] => s
            .info
            .destination
            .map(|a| i64::from(a.port()).to_le_bytes().to_vec()),
        [b"connection", b"id"] => int(s.info.connection_id as i64),
        [b"connection", b"mtls"] => Some(vec![u8::from(s.info.mtls)]),
        [b"connection", b"tls_version"] => s.info.tls_version.clone().map(String::into_bytes),
        [b"connection", b"requested_server_name"] => s.info.sni.clone().map(String::into_bytes),
        [b"route_name"] | [b"xds", b"route_name"] => text(&s.info.route),
        _ => None,
    }
}

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C, ptr: i32, len: i32, ret_ptr: i32, ret_len: i32| -> R {
            let path = guest!(read(&c, ptr, len));
            match lookup(c.data_mut(), &path) {
                Some(v) => hand_over(&mut c, &v, ret_ptr, ret_len),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C, ptr: i32, len: i32, vp: i32, vl: i32| -> R {
            let path = guest!(read(&c, ptr, len));
            let value = guest!(read(&c, vp, vl));
            let h = c.data_mut();
            let map = match h.streams.get_mut(&h.effective) {
                Some(s) => &mut s.properties,
                None => &mut h.root_properties,
            };
            if map.len() < 1024 || map.contains_key(&path) {
                map.insert(path, value);
            }
            Ok(status::OK)
        },
    )?;
    Ok(())
}
