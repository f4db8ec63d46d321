//! Shared data (with compare-and-swap), shared queues and metrics.

use super::{guest, hand_over, read, write, write_u32, C, R};
use crate::wasm::abi::{metric, status};
use crate::wasm::shared::{self as store, MetricKind, QueueError, SetError};
use crate::wasm::state::HostState;
use wasmtime::Linker;

/// The id `proxy_define_metric` hands out when it cannot define one (the
/// SDK traps on any status but OK); using it answers NOT_FOUND.
const NO_METRIC: u32 = u32::MAX;

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| -> R {
            let key = guest!(read(&c, kp, kl));
            match c.data().plugin.shared.get(&key) {
                Some((value, cas)) => {
                    guest!(write_u32(&mut c, ret_cas, cas));
                    hand_over(&mut c, &value, ret_ptr, ret_len)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            let key = guest!(read(&c, kp, kl));
            let value = guest!(read(&c, vp, vl));
            Ok(match c.data().plugin.shared.set(&key, value, cas as u32) {
                Ok(()) => status::OK,
                Err(SetError::CasMismatch) => status::CAS_MISMATCH,
                // the SDK expects OK or CAS_MISMATCH: a full table refuses
                // new keys as a lost race would
                Err(SetError::Full) => status::CAS_MISMATCH,
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C, np: i32, nl: i32, ret: i32| -> R {
            let name = guest!(read(&c, np, nl));
            let h = c.data();
            let id = store::register_queue(h.plugin.shared.vm_id(), &name, h.root_events.clone());
            guest!(write_u32(&mut c, ret, id));
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> R {
            let vm = String::from_utf8_lossy(&guest!(read(&c, vp, vl))).into_owned();
            let name = guest!(read(&c, np, nl));
            let vm = if vm.is_empty() {
                c.data().plugin.shared.vm_id().to_string()
            } else {
                vm
            };
            match store::resolve_queue(&vm, &name) {
                Some(id) => {
                    guest!(write_u32(&mut c, ret, id));
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C, id: i32, vp: i32, vl: i32| -> R {
            let value = guest!(read(&c, vp, vl));
            Ok(match store::enqueue(id as u32, value) {
                Ok(()) => status::OK,
                Err(QueueError::NotFound | QueueError::Full) => status::NOT_FOUND,
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C, id: i32, ret_ptr: i32, ret_len: i32| -> R {
            match store::dequeue(id as u32) {
                Ok(Some(item)) => hand_over(&mut c, &item, ret_ptr, ret_len),
                Ok(None) => Ok(status::EMPTY),
                Err(_) => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C, kind: i32, np: i32, nl: i32, ret: i32| -> R {
            let name = String::from_utf8_lossy(&guest!(read(&c, np, nl))).into_owned();
            let kind = match kind {
                metric::COUNTER => MetricKind::Counter,
                metric::GAUGE => MetricKind::Gauge,
                metric::HISTOGRAM => MetricKind::Histogram,
                _ => return Ok(status::BAD_ARGUMENT),
            };
            let id = store::define_metric(kind, &name).unwrap_or_else(|| {
                log::warn!(target: "flexgw::wasm", "{}: metric {name:?} not defined (taken by another type, or 1000 metrics defined)", c.data().plugin.name);
                NO_METRIC
            });
            guest!(write_u32(&mut c, ret, id));
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |_c: C, id: i32, by: i64| -> R {
            match store::metric(id as u32) {
                Some(m) if m.kind != MetricKind::Histogram => {
                    m.increment(by);
                    Ok(status::OK)
                }
                Some(_) => Ok(status::BAD_ARGUMENT),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |_c: C, id: i32, v: i64| -> R {
            match store::metric(id as u32) {
                Some(m) => {
                    m.record(v as u64);
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C, id: i32, ret: i32| -> R {
            match store::metric(id as u32) {
                Some(m) => {
                    guest!(write(&mut c, ret, &m.get().to_le_bytes()));
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    Ok(())
}
