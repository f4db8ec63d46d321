//! Logging, time, ticks, and the calls that steer a context: continue,
//! close, answer locally, switch the effective context, done.

use super::{guest, read, write, write_u32, C, R};
use crate::wasm::abi::{self, status};
use crate::wasm::state::{Ending, HostState, LocalReply};
use wasmtime::Linker;

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_log", |c: C, level: i32, ptr: i32, len: i32| -> R {
        let msg = guest!(read(&c, ptr, len));
        let level = abi::log_level(level);
        if log::log_enabled!(target: "flexgw::wasm", level) {
            let name = &c.data().plugin.name;
            log::log!(target: "flexgw::wasm", level, "{name}: {}", String::from_utf8_lossy(&msg));
        }
        Ok(status::OK)
    })?;
    l.func_wrap("env", "proxy_get_log_level", |mut c: C, ret: i32| -> R {
        let level = abi::abi_log_level(log::max_level());
        guest!(write_u32(&mut c, ret, level as u32));
        Ok(status::OK)
    })?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C, ret: i32| -> R {
            guest!(write(&mut c, ret, &now_ns().to_le_bytes()));
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C, ms: i32| -> R {
            let ms = ms as u32;
            // ticks are the root context's; at least 1 ms apart
            c.data_mut().tick =
                (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms.max(1))));
            Ok(status::OK)
        },
    )?;
    l.func_wrap("env", "proxy_continue_stream", |mut c: C, kind: i32| -> R {
        if kind == abi::stream::HTTP_REQUEST {
            if let Some(s) = c.data_mut().stream() {
                s.resumed = true;
            }
        }
        Ok(status::OK)
    })?;
    // ABI 0.1.0's names for the same, linked for modules that import both
    l.func_wrap("env", "proxy_continue_request", |mut c: C| -> R {
        if let Some(s) = c.data_mut().stream() {
            s.resumed = true;
        }
        Ok(status::OK)
    })?;
    l.func_wrap("env", "proxy_continue_response", |_c: C| -> R {
        Ok(status::OK)
    })?;
    l.func_wrap("env", "proxy_close_stream", |mut c: C, _kind: i32| -> R {
        if let Some(s) = c.data_mut().stream() {
            s.closed = true;
        }
        Ok(status::OK)
    })?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C,
         code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc: i32|
         -> R {
            let details = guest!(read(&c, details_ptr, details_len));
            let body = guest!(read(&c, body_ptr, body_len));
            let raw = guest!(read(&c, headers_ptr, headers_len));
            let Some(pairs) = abi::deserialize_pairs(&raw) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let code = code as u32;
            if !(200..=599).contains(&code) {
                return Ok(status::BAD_ARGUMENT);
            }
            let headers = pairs
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
                .collect();
            let reply = LocalReply {
                status: code as u16,
                details: String::from_utf8_lossy(&details).into_owned(),
                body,
                headers,
            };
            match c.data_mut().stream() {
                Some(s) => s.local = Some(reply),
                None => log::warn!(
                    target: "flexgw::wasm",
                    "{}: proxy_send_local_response outside a request: ignored",
                    c.data().plugin.name
                ),
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C, id: i32| -> R {
            let id = id as u32;
            let h = c.data_mut();
            if id != h.root && !h.streams.contains_key(&id) {
                return Ok(status::BAD_ARGUMENT);
            }
            h.effective = id;
            Ok(status::OK)
        },
    )?;
    l.func_wrap("env", "proxy_done", |mut c: C| -> R {
        // the effective context is done: it must be waiting for it (its
        // `proxy_on_done` returned false); its log and delete run after
        // the current callback returns
        let h = c.data_mut();
        let ending = if h.effective == h.root {
            &mut h.root_ending
        } else {
            match h.streams.get_mut(&h.effective) {
                Some(s) => &mut s.ending,
                None => return Ok(status::NOT_FOUND),
            }
        };
        if *ending != Ending::Deferred {
            return Ok(status::NOT_FOUND);
        }
        *ending = Ending::Done;
        Ok(status::OK)
    })?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C, ret_code: i32, ret_ptr: i32, ret_len: i32| -> R {
            // the status of the call being delivered: 0 for HTTP calls
            // (gRPC calls are not made)
            guest!(write_u32(&mut c, ret_code, 0));
            guest!(write_u32(&mut c, ret_ptr, 0));
            guest!(write_u32(&mut c, ret_len, 0));
            Ok(status::OK)
        },
    )?;
    Ok(())
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
