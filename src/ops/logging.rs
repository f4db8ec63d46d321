//! Log set-up: env_logger on stderr. Access-log lines (target
//! [`ACCESS_TARGET`]) are printed as the bare JSON object, so a log shipper
//! can parse them; everything else gets a level and a timestamp.
//!
//! The level: `RUST_LOG` when it is set (`RUST_LOG=info,access=off`
//! switches the access log off), fixed for the process. Otherwise Flex's
//! `runtimeLogs.logLevel` (default `info`), which a reload changes
//! ([`apply_level`]); access lines are written whatever that level is.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const ACCESS_TARGET: &str = "access";

/// The configured level (a `LevelFilter` as a number); `usize::MAX` while
/// `RUST_LOG` rules.
static LEVEL: AtomicUsize = AtomicUsize::new(usize::MAX);

pub fn init() {
    init_at(None)
}

/// The gateway's logger: env_logger behind the configured level.
struct Leveled {
    inner: env_logger::Logger,
}

fn allowed(m: &log::Metadata) -> bool {
    let level = LEVEL.load(Ordering::Relaxed);
    level == usize::MAX || m.target() == ACCESS_TARGET || m.level() as usize <= level
}

impl log::Log for Leveled {
    fn enabled(&self, m: &log::Metadata) -> bool {
        allowed(m) && self.inner.enabled(m)
    }

    fn log(&self, r: &log::Record) {
        if allowed(r.metadata()) {
            self.inner.log(r);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn rust_log() -> bool {
    std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty())
}

/// `level` (Flex's `runtimeLogs.logLevel`) for the gateway's own logs
/// unless `RUST_LOG` says otherwise; access logs are kept either way.
pub fn init_at(level: Option<log::LevelFilter>) {
    let mut b = env_logger::Builder::new();
    b.format(|buf, record| {
        if record.target() == ACCESS_TARGET {
            writeln!(buf, "{}", record.args())
        } else {
            writeln!(
                buf,
                "{} {:5} {}: {}",
                crate::ops::time::now(),
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    let from_env = rust_log();
    if from_env {
        b.parse_env(env_logger::Env::default());
    } else {
        b.filter_level(log::LevelFilter::Trace);
    }
    let inner = b.build();
    let env_max = inner.filter();
    if log::set_boxed_logger(Box::new(Leveled { inner })).is_err() {
        return; // a logger is already installed (tests)
    }
    if from_env {
        log::set_max_level(env_max);
    } else {
        store(level.unwrap_or(log::LevelFilter::Info));
    }
}

/// The level a reloaded configuration gives (`None`: `info`): the new
/// level when it changed; `None` when unchanged, or when `RUST_LOG` rules
/// (or no logger of ours is installed).
pub fn apply_level(level: Option<log::LevelFilter>) -> Option<log::LevelFilter> {
    let level = level.unwrap_or(log::LevelFilter::Info);
    let old = LEVEL.load(Ordering::Relaxed);
    if old == usize::MAX || old == level as usize {
        return None;
    }
    store(level);
    Some(level)
}

fn store(level: log::LevelFilter) {
    LEVEL.store(level as usize, Ordering::Relaxed);
    // access lines are info: the macros must let them through
    log::set_max_level(level.max(log::LevelFilter::Info));
}
