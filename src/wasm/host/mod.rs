//! The host functions a filter imports, by family, and the guest-memory
//! helpers they share. Every `proxy_*` function of ABI 0.2.x is linked
//! (an SDK-built filter imports all of them even when it uses few), plus
//! the WASI functions SDK-built modules import.
//!
//! Statuses follow the spec, with one rule from the SDKs: the Rust SDK
//! traps on a status it does not expect, so "not available in this phase"
//! is OK with empty data (as in Envoy), never BAD_ARGUMENT.

mod buffers;
mod calls;
mod context;
mod flex;
mod headers;
mod properties;
mod shared;
pub mod wasi;

use super::abi::status;
use super::state::HostState;
use wasmtime::{Caller, Linker};

pub type C<'a> = Caller<'a, HostState>;
/// A host function's outcome: a status for the guest, or a trap.
pub type R = wasmtime::Result<i32>;

/// A status for the guest instead of going on.
pub struct Status(pub i32);

impl From<Status> for R {
    fn from(s: Status) -> R {
        Ok(s.0)
    }
}

/// Unwrap or return the status to the guest.
macro_rules! guest {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(crate::wasm::host::Status(s)) => return Ok(s),
        }
    };
}
pub(crate) use guest;

/// Bytes of guest memory (copied).
pub fn read(c: &C, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = c
        .data()
        .memory
        .ok_or(Status(status::INVALID_MEMORY_ACCESS))?;
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    let end = p
        .checked_add(l)
        .ok_or(Status(status::INVALID_MEMORY_ACCESS))?;
    mem.data(c)
        .get(p..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status(status::INVALID_MEMORY_ACCESS))
}

/// Write raw bytes at a guest address.
pub fn write(c: &mut C, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = c
        .data()
        .memory
        .ok_or(Status(status::INVALID_MEMORY_ACCESS))?;
    let p = ptr as u32 as usize;
    let end = p
        .checked_add(bytes.len())
        .ok_or(Status(status::INVALID_MEMORY_ACCESS))?;
    let out = mem
        .data_mut(c)
        .get_mut(p..end)
        .ok_or(Status(status::INVALID_MEMORY_ACCESS))?;
    out.copy_from_slice(bytes);
    Ok(())
}

pub fn write_u32(c: &mut C, ptr: i32, v: u32) -> Result<(), Status> {
    write(c, ptr, &v.to_le_bytes())
}

/// Copy `bytes` into memory the guest allocates (`proxy_on_memory_allocate`)
/// and write its address and length at `ret_ptr` and `ret_len`. The guest
/// owns (and frees) the copy.
pub fn hand_over(c: &mut C, bytes: &[u8], ret_ptr: i32, ret_len: i32) -> R {
    let Some(malloc) = c.data().malloc.clone() else {
        return Ok(status::INTERNAL_FAILURE);
    };
    let Ok(len) = i32::try_from(bytes.len()) else {
        return Ok(status::INTERNAL_FAILURE);
    };
    let at = malloc.call(&mut *c, len)?;
    if at == 0 && len > 0 {
        wasmtime::bail!("proxy_on_memory_allocate({len}) returned 0");
    }
    guest!(write(c, at, bytes));
    guest!(write_u32(c, ret_ptr, at as u32));
    guest!(write_u32(c, ret_len, len as u32));
    Ok(status::OK)
}

/// Link every host function into `linker`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    context::link(linker)?;
    headers::link(linker)?;
    buffers::link(linker)?;
    properties::link(linker)?;
    calls::link(linker)?;
    shared::link(linker)?;
    flex::link(linker)?;
    wasi::link(linker)?;
    Ok(())
}
