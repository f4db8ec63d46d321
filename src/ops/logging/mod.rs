//! Log set-up: env_logger on stderr, and Flex's `logging.outputs`
//! (`outputs.rs`). Access-log lines (target [`ACCESS_TARGET`]) are printed
//! as the bare JSON object, so a log shipper can parse them; everything
//! else gets a level and a timestamp.
//!
//! The level: `RUST_LOG` when it is set (`RUST_LOG=info,access=off`
//! switches the access log off), fixed for the process. Otherwise Flex's
//! `runtimeLogs.logLevel` (default `info`), which a reload changes
//! ([`apply_level`]); access lines are written whatever that level is.
//!
//! Two kinds of line, as Flex has them: runtime lines (the `log` macros)
//! and access lines ([`access`]: the JSON access log and message
//! logging's lines). Both go to stderr; each also goes to the outputs its
//! kind names (`runtimeLogs.outputs`, `accessLogs.outputs`). Access lines
//! are written to stderr by a thread of their own, as every output is: a
//! request never waits for a log, a full queue drops the line and counts
//! it in `flexgw_log_lines_dropped_total`. Runtime lines reach stderr
//! synchronously (few, and the last words of a failing process must not
//! wait in a queue).

mod format;
mod outputs;

use crate::config::logging::LoggingSettings;
use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::SystemTime;

pub use outputs::reopen;

pub const ACCESS_TARGET: &str = "access";

/// The configured level (a `LevelFilter` as a number); `usize::MAX` while
/// `RUST_LOG` rules.
static LEVEL: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Lines dropped because a writer fell behind or an output failed
/// (`flexgw_log_lines_dropped_total`).
pub static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Lines waiting for a writer thread at most (per writer).
const QUEUE: usize = 8192;

/// One log line, as the outputs write it.
#[derive(Debug)]
pub struct Line {
    pub time: SystemTime,
    pub level: log::Level,
    /// The `log` target (the module, `access`, `message-logging`).
    pub logger: String,
    /// An access line (else a runtime line).
    pub access: bool,
    pub message: String,
}

impl Line {
    pub fn kind(&self) -> &'static str {
        if self.access {
            "access"
        } else {
            "runtime"
        }
    }

    pub fn level_name(&self) -> &'static str {
        match self.level {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        }
    }
}

/// The outputs of the current configuration.
struct Router {
    settings: LoggingSettings,
    runtime: Vec<Arc<outputs::Output>>,
    access: Vec<Arc<outputs::Output>>,
}

static ROUTER: ArcSwapOption<Router> = ArcSwapOption::const_empty();

/// The configured outputs (at start and on every reload): unchanged
/// settings keep their writers (and queued lines); changed ones get new
/// writers, and the old ones finish their queues and stop.
pub fn apply_outputs(settings: Option<&LoggingSettings>) {
    let current = ROUTER.load();
    let unchanged = match (&*current, settings) {
        (Some(r), Some(s)) => r.settings == *s,
        (None, None) => true,
        _ => false,
    };
    if unchanged {
        return;
    }
    let Some(s) = settings.filter(|s| !s.outputs.is_empty()) else {
        ROUTER.store(None);
        return;
    };
    let started: Vec<Arc<outputs::Output>> = s
        .outputs
        .iter()
        .map(|o| Arc::new(outputs::Output::new(o)))
        .collect();
    let pick = |ix: &[usize]| -> Vec<Arc<outputs::Output>> {
        ix.iter().map(|i| started[*i].clone()).collect()
    };
    let router = Router {
        runtime: pick(&s.runtime),
        access: pick(&s.access),
        settings: s.clone(),
    };
    ROUTER.store(Some(Arc::new(router)));
    for o in &s.outputs {
        log::info!("log output {:?} ready", o.name);
    }
}

fn send(to: &[Arc<outputs::Output>], line: &Arc<Line>) {
    for o in to {
        o.send(line.clone());
    }
}

/// An access line (the JSON access log, message logging): to stderr and
/// the access outputs, through queues. The caller has checked that the
/// level lets it through.
pub fn access(level: log::Level, logger: &'static str, message: String) {
    let line = Arc::new(Line {
        time: SystemTime::now(),
        level,
        logger: logger.to_string(),
        access: true,
        message,
    });
    if let Some(r) = &*ROUTER.load() {
        send(&r.access, &line);
    }
    if stderr_queue().try_send(line).is_err() {
        DROPPED.inc();
    }
}

/// The writer of access lines to stderr.
fn stderr_queue() -> &'static SyncSender<Arc<Line>> {
    static Q: OnceLock<SyncSender<Arc<Line>>> = OnceLock::new();
    Q.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Line>>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("flexgw-accesslog".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(4096);
                while let Ok(first) = rx.recv() {
                    buf.clear();
                    format_stderr(&mut buf, &first);
                    // what else is waiting, in one write
                    while let Ok(next) = rx.try_recv() {
                        format_stderr(&mut buf, &next);
                        if buf.len() > 64 * 1024 {
                            break;
                        }
                    }
                    let _ = std::io::stderr().lock().write_all(&buf);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the access log writer: {e}");
        }
        tx
    })
}

fn format_stderr(buf: &mut Vec<u8>, line: &Line) {
    let _ = stderr_line(
        buf,
        line.time,
        line.level,
        &line.logger,
        format_args!("{}", line.message),
    );
}

/// A line on stderr: access lines as the bare JSON object, the others
/// with a timestamp, level and target.
fn stderr_line(
    out: &mut impl Write,
    time: SystemTime,
    level: log::Level,
    target: &str,
    message: std::fmt::Arguments,
) -> std::io::Result<()> {
    if target == ACCESS_TARGET {
        writeln!(out, "{message}")
    } else {
        let time = crate::ops::time::rfc3339(time);
        writeln!(out, "{time} {level:5} {target}: {message}")
    }
}

pub fn init() {
    init_at(None)
}

/// The gateway's logger: env_logger behind the configured level, and the
/// runtime outputs.
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
        if !allowed(r.metadata()) || !self.inner.matches(r) {
            return;
        }
        self.inner.log(r);
        if let Some(router) = &*ROUTER.load() {
            if !router.runtime.is_empty() {
                let line = Arc::new(Line {
                    time: SystemTime::now(),
                    level: r.level(),
                    logger: r.target().to_string(),
                    access: false,
                    message: r.args().to_string(),
                });
                send(&router.runtime, &line);
            }
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
        let now = SystemTime::now();
        stderr_line(buf, now, record.level(), record.target(), *record.args())
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
