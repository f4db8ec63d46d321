//! Buffers: the request and response bodies a body callback sees, a call
//! response's body, the VM and plugin configurations, foreign-function
//! arguments.

use super::{guest, hand_over, read, write_u32, C, R};
use crate::wasm::abi::{buffer, status};
use crate::wasm::state::HostState;
use wasmtime::Linker;

/// A copy of the bytes of buffer `kind` in the range asked for.
fn slice(h: &mut HostState, kind: i32, start: usize, max: usize) -> Option<Vec<u8>> {
    let cut = |b: &[u8]| {
        let from = start.min(b.len());
        let to = from.saturating_add(max).min(b.len());
        b[from..to].to_vec()
    };
    match kind {
        buffer::REQUEST_BODY => h.stream().map(|s| cut(&s.request_body)),
        buffer::RESPONSE_BODY => h.stream().map(|s| cut(&s.response_body)),
        buffer::HTTP_CALL_RESPONSE_BODY => h.call_response.as_ref().map(|r| cut(&r.body)),
        buffer::VM_CONFIGURATION => Some(cut(&h.plugin.vm_config)),
        buffer::PLUGIN_CONFIGURATION => Some(cut(&h.plugin.config)),
        buffer::FOREIGN_FUNCTION_ARGUMENTS => Some(cut(&h.ffi_args)),
        _ => None,
    }
}

fn length(h: &mut HostState, kind: i32) -> Option<usize> {
    match kind {
        buffer::REQUEST_BODY => h.stream().map(|s| s.request_body.len()),
        buffer::RESPONSE_BODY => h.stream().map(|s| s.response_body.len()),
        buffer::HTTP_CALL_RESPONSE_BODY => h.call_response.as_ref().map(|r| r.body.len()),
        buffer::VM_CONFIGURATION => Some(h.plugin.vm_config.len()),
        buffer::PLUGIN_CONFIGURATION => Some(h.plugin.config.len()),
        buffer::FOREIGN_FUNCTION_ARGUMENTS => Some(h.ffi_args.len()),
        _ => None,
    }
}

/// Replace `[start, start + size)` of `b` with `data` (clipped): prepend
/// is `(0, 0)`, append `(len, 0)`, replace-all `(0, len)`.
pub fn splice(b: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) {
    let from = start.min(b.len());
    let to = from.saturating_add(size).min(b.len());
    b.splice(from..to, data.iter().copied());
}

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| -> R {
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            match slice(c.data_mut(), kind, start, max) {
                Some(bytes) => hand_over(&mut c, &bytes, ret_ptr, ret_len),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: C, kind: i32, ret_len: i32, ret_flags: i32| -> R {
            let Some(len) = length(c.data_mut(), kind) else {
                return Ok(status::NOT_FOUND);
            };
            guest!(write_u32(&mut c, ret_len, len as u32));
            guest!(write_u32(&mut c, ret_flags, 0));
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let data = guest!(read(&c, ptr, len));
            let limit = c.data().plugin.limits.body;
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            let h = c.data_mut();
            let target = match kind {
                buffer::REQUEST_BODY => h.stream().map(|s| &mut s.request_body),
                buffer::RESPONSE_BODY => h.stream().map(|s| &mut s.response_body),
                _ => return Ok(status::OK), // read-only buffers: the write is dropped
            };
            if let Some(b) = target {
                if b.len().saturating_sub(size).saturating_add(data.len()) > limit {
                    return Ok(status::INTERNAL_FAILURE);
                }
                splice(b, start, size, &data);
            }
            Ok(status::OK)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn splice_prepends_appends_and_replaces() {
        let mut b = b"body".to_vec();
        splice(&mut b, 0, 0, b"<");
        splice(&mut b, 5, 0, b">");
        assert_eq!(b, b"<body>");
        splice(&mut b, 1, 4, b"BODY!");
        assert_eq!(b, b"<BODY!>");
        splice(&mut b, 0, usize::MAX, b"new");
        assert_eq!(b, b"new");
        splice(&mut b, 99, 5, b"+");
        assert_eq!(b, b"new+");
    }
}
