//! `proxy_http_call`: a request to one of the plugin's services, sent
//! after the callback returns (never inside it) and answered through
//! `proxy_on_http_call_response` on the context that made it. gRPC calls
//! are not made: they answer INTERNAL_FAILURE, a status the SDKs expect.

use super::{guest, read, write_u32, C, R};
use crate::wasm::abi::{self, status};
use crate::wasm::state::{HostState, Outbound};
use std::time::Duration;
use wasmtime::Linker;

/// The longest timeout a call may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Queue the call; its token, or the status refusing it.
fn call(
    h: &mut HostState,
    upstream: &str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    timeout_ms: u32,
) -> Result<u32, i32> {
    let service = h
        .plugin
        .services
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(upstream)
        .cloned()
        .ok_or(status::BAD_ARGUMENT)?;
    let mut method = None;
    let mut path = None;
    let mut authority = None;
    let mut rest = Vec::new();
    for (k, v) in headers {
        let k = String::from_utf8_lossy(&k).to_ascii_lowercase();
        match k.as_str() {
            ":method" => method = Some(String::from_utf8_lossy(&v).into_owned()),
            ":path" => path = Some(String::from_utf8_lossy(&v).into_owned()),
            ":authority" => authority = Some(v),
            ":scheme" => {}
            _ => rest.push((k, v)),
        }
    }
    let (Some(method), Some(path), Some(authority)) = (method, path, authority) else {
        return Err(status::BAD_ARGUMENT);
    };
    if !path.starts_with('/') {
        return Err(status::BAD_ARGUMENT);
    }
    rest.push(("host".into(), authority));
    let limit = h.plugin.limits.calls;
    let context = h.effective;
    if let Some(s) = h.streams.get_mut(&context) {
        if s.calls >= limit {
            return Err(status::INTERNAL_FAILURE);
        }
        s.calls += 1;
    } else if h.calls.len() >= 4 * limit as usize {
        return Err(status::INTERNAL_FAILURE);
    }
    h.next_token = h.next_token.wrapping_add(1).max(1);
    let token = h.next_token;
    h.calls.insert(token, context);
    h.outbox.push(Outbound {
        token,
        context,
        url: format!("{}{path}", service.url.trim_end_matches('/')),
        method,
        headers: rest,
        body,
        timeout: Duration::from_millis(u64::from(timeout_ms)).min(MAX_TIMEOUT),
    });
    Ok(token)
}

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C,
         up_ptr: i32,
         up_len: i32,
         h_ptr: i32,
         h_len: i32,
         body_ptr: i32,
         body_len: i32,
         _tr_ptr: i32,
         _tr_len: i32,
         timeout: i32,
         ret: i32|
         -> R {
            let upstream = String::from_utf8_lossy(&guest!(read(&c, up_ptr, up_len))).into_owned();
            let raw = guest!(read(&c, h_ptr, h_len));
            let body = guest!(read(&c, body_ptr, body_len));
            let Some(headers) = abi::deserialize_pairs(&raw) else {
                return Ok(status::BAD_ARGUMENT);
            };
            match call(c.data_mut(), &upstream, headers, body, timeout as u32) {
                Ok(token) => {
                    guest!(write_u32(&mut c, ret, token));
                    Ok(status::OK)
                }
                Err(s) => {
                    log::debug!(target: "flexgw::wasm", "{}: proxy_http_call to {upstream:?} refused ({s})", c.data().plugin.name);
                    Ok(s)
                }
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: C,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _timeout: i32,
         _ret: i32|
         -> R { Ok(status::INTERNAL_FAILURE) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: C,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _r: i32|
         -> R { Ok(status::INTERNAL_FAILURE) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: C, _t: i32, _p: i32, _l: i32, _e: i32| -> R { Ok(status::NOT_FOUND) },
    )?;
    l.func_wrap("env", "proxy_grpc_cancel", |_c: C, _t: i32| -> R {
        Ok(status::NOT_FOUND)
    })?;
    l.func_wrap("env", "proxy_grpc_close", |_c: C, _t: i32| -> R {
        Ok(status::NOT_FOUND)
    })?;
    Ok(())
}
