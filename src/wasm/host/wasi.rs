//! The WASI (preview 1) functions SDK-built modules import: `fd_write`
//! goes to the log (stdout as info, stderr as error), clocks, `random_get`,
//! an empty environment and argument list, `proc_exit` (a trap). Any other
//! WASI name a module imports is linked as a stub answering ENOSYS (no
//! files, no sockets: a filter has no business with them), `fd_prestat_get`
//! EBADF (no preopened directories).

use super::{read, write, write_u32, C};
use crate::wasm::state::HostState;
use rand::RngCore;
use wasmtime::{Linker, Module, Val, ValType};

pub const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// The names linked with real implementations.
const IMPLEMENTED: &[&str] = &[
    "fd_write",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "environ_sizes_get",
    "environ_get",
    "args_sizes_get",
    "args_get",
    "proc_exit",
    "sched_yield",
];

type E = wasmtime::Result<i32>;

fn errno<T>(r: Result<T, super::Status>) -> Result<T, i32> {
    r.map_err(|_| EFAULT)
}

fn fd_write(c: &mut C, fd: i32, iovs: i32, n: i32, written: i32) -> Result<i32, i32> {
    let mut out = Vec::new();
    for i in 0..n.max(0) {
        let iov = errno(read(c, iovs.wrapping_add(i * 8), 8))?;
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        out.extend(errno(read(c, ptr, len))?);
        if out.len() > 1 << 20 {
            return Err(EINVAL);
        }
    }
    let level = match fd {
        1 => log::Level::Info,
        2 => log::Level::Error,
        _ => return Err(EBADF),
    };
    let text = String::from_utf8_lossy(&out);
    let text = text.trim_end();
    if !text.is_empty() {
        log::log!(target: "flexgw::wasm", level, "{}: {text}", c.data().plugin.name);
    }
    errno(write_u32(c, written, out.len() as u32))?;
    Ok(ESUCCESS)
}

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for m in MODULES {
        l.func_wrap(
            m,
            "fd_write",
            |mut c: C, fd: i32, iovs: i32, n: i32, w: i32| -> E {
                Ok(fd_write(&mut c, fd, iovs, n, w).unwrap_or_else(|e| e))
            },
        )?;
        l.func_wrap(
            m,
            "clock_time_get",
            |mut c: C, id: i32, _precision: i64, ret: i32| -> E {
                let ns = match id {
                    0 => super::context::now_ns(),
                    1..=3 => monotonic_ns(),
                    _ => return Ok(EINVAL),
                };
                Ok(errno(write(&mut c, ret, &ns.to_le_bytes()))
                    .err()
                    .unwrap_or(ESUCCESS))
            },
        )?;
        l.func_wrap(m, "clock_res_get", |mut c: C, _id: i32, ret: i32| -> E {
            Ok(errno(write(&mut c, ret, &1_000u64.to_le_bytes()))
                .err()
                .unwrap_or(ESUCCESS))
        })?;
        l.func_wrap(m, "random_get", |mut c: C, ptr: i32, len: i32| -> E {
            let len = len as u32 as usize;
            if len > 64 * 1024 {
                return Ok(EINVAL);
            }
            let mut buf = vec![0u8; len];
            rand::thread_rng().fill_bytes(&mut buf);
            Ok(errno(write(&mut c, ptr, &buf)).err().unwrap_or(ESUCCESS))
        })?;
        for name in ["environ_sizes_get", "args_sizes_get"] {
            l.func_wrap(m, name, |mut c: C, count: i32, size: i32| -> E {
                let r = write_u32(&mut c, count, 0).and_then(|()| write_u32(&mut c, size, 0));
                Ok(errno(r).err().unwrap_or(ESUCCESS))
            })?;
        }
        for name in ["environ_get", "args_get"] {
            l.func_wrap(m, name, |_c: C, _a: i32, _b: i32| -> E { Ok(ESUCCESS) })?;
        }
        l.func_wrap(m, "proc_exit", |_c: C, code: i32| -> wasmtime::Result<()> {
            wasmtime::bail!("the filter called proc_exit({code})")
        })?;
        l.func_wrap(m, "sched_yield", |_c: C| -> E { Ok(ESUCCESS) })?;
    }
    Ok(())
}

/// Stubs for the WASI names `module` imports beyond [`IMPLEMENTED`].
pub fn link_stubs(l: &mut Linker<HostState>, module: &Module) -> wasmtime::Result<()> {
    for import in module.imports() {
        if !MODULES.contains(&import.module()) || IMPLEMENTED.contains(&import.name()) {
            continue;
        }
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        let answer = if import.name() == "fd_prestat_get" {
            EBADF
        } else {
            ENOSYS
        };
        let zeros: Vec<Val> = ty
            .results()
            .map(|t| match t {
                ValType::I64 => Val::I64(0),
                ValType::F32 => Val::F32(0),
                ValType::F64 => Val::F64(0),
                _ => Val::I32(0),
            })
            .collect();
        let returns_errno = matches!(zeros.as_slice(), [Val::I32(_)]);
        l.func_new(
            import.module(),
            import.name(),
            ty,
            move |_c, _args, results| {
                for (r, z) in results.iter_mut().zip(&zeros) {
                    *r = *z;
                }
                if returns_errno {
                    results[0] = Val::I32(answer);
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

fn monotonic_ns() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
