//! The writers of `logging.outputs`: one thread and one bounded queue per
//! output, so a slow disk, collector or syslog server never holds a
//! request; a full queue or a failed delivery drops lines, counted in
//! `flexgw_log_lines_dropped_total` and said (at most every 10 s per
//! output) in the runtime log.
//!
//! - `file`: appended; reopened on SIGUSR1 ([`reopen`]) and when the path
//!   stops naming the open file (renamed or deleted by a log rotation,
//!   checked every second), so logrotate works with or without a signal.
//! - `stdout`: JSON lines (or a JSON array per batch).
//! - `http`: batches (up to 1 s or 500 lines) POSTed as JSON lines or a
//!   JSON array, with `retry_limit` retries a second apart.
//! - `syslog`: RFC 5424 or RFC 3164 over UDP (one datagram per line) or
//!   TCP (newline-framed), reconnecting after a failure.

use super::format::{field_text, file_line, json_batch};
use super::{Line, DROPPED, QUEUE};
use crate::config::logging::{DateKey, JsonFormat, LogOutput, Sink};
use arc_swap::ArcSwapOption;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bumped by SIGUSR1: every file output reopens its file.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Reopen every file output (SIGUSR1, after a log rotation).
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// Forks of this process (`pthread_atfork`): a daemonized gateway forks
/// after the outputs are configured, and a thread does not survive a fork,
/// so a writer started before it is started again in the child.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

fn watch_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic counter
        // (async-signal-safe, as a fork child handler must be).
        unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        }
    });
}

/// A configured output: its writer thread, started with the first line
/// (again after a fork).
pub struct Output {
    name: String,
    sink: Sink,
    writer: ArcSwapOption<Writer>,
    starting: Mutex<()>,
    last_warned: Arc<Mutex<Option<Instant>>>,
}

struct Writer {
    forks: u64,
    tx: SyncSender<Arc<Line>>,
}

impl Output {
    pub fn new(o: &LogOutput) -> Output {
        watch_forks();
        // said at start, not at the first line: a file that cannot be
        // opened (the writer keeps trying, dropping lines meanwhile)
        if let Sink::File { path, mkdir, .. } = &o.sink {
            if let Err(e) = open(path, *mkdir) {
                let hint = if *mkdir {
                    ""
                } else {
                    " (`mkdir: on` creates its folder)"
                };
                log::error!(
                    "log output {:?}: cannot open {}: {e}{hint}; its lines are dropped until it can",
                    o.name,
                    path.display()
                );
            }
        }
        Output {
            name: o.name.clone(),
            sink: o.sink.clone(),
            writer: ArcSwapOption::const_empty(),
            starting: Mutex::new(()),
            last_warned: Arc::new(Mutex::new(None)),
        }
    }

    fn warner(&self) -> Warner {
        Warner {
            name: self.name.clone(),
            last: self.last_warned.clone(),
        }
    }

    /// The running writer's queue, started if this process has none.
    fn writer(&self) -> Option<Arc<Writer>> {
        let forks = FORKS.load(Ordering::Relaxed);
        let running = |w: &Option<Arc<Writer>>| w.clone().filter(|w| w.forks == forks);
        if let Some(w) = running(&self.writer.load_full()) {
            return Some(w);
        }
        let _one = self.starting.lock().ok()?;
        if let Some(w) = running(&self.writer.load_full()) {
            return Some(w);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Line>>(QUEUE);
        let (sink, w) = (self.sink.clone(), self.warner());
        let spawned = std::thread::Builder::new()
            .name(format!(
                "flexgw-log-{}",
                self.name.chars().take(5).collect::<String>()
            ))
            .spawn(move || match sink {
                Sink::File { .. } => file_writer(&sink, &rx, &w),
                Sink::Stdout { format, date } => stdout_writer(format, &date, &rx),
                Sink::Http { .. } => http_writer(&sink, &rx, &w),
                Sink::Syslog { .. } => syslog_writer(&sink, &rx, &w),
            });
        if let Err(e) = spawned {
            self.warner()
                .warn(1, &format!("cannot start its writer: {e}"));
            return None;
        }
        let w = Arc::new(Writer { forks, tx });
        self.writer.store(Some(w.clone()));
        Some(w)
    }

    pub fn send(&self, line: Arc<Line>) {
        let sent = self.writer().is_some_and(|w| w.tx.try_send(line).is_ok());
        if !sent {
            DROPPED.inc();
            self.warner()
                .warn(1, "its queue is full (the output is slower than the logs)");
        }
    }
}

/// Says an output's failures, at most every 10 s (a failing output's own
/// warnings must not flood the outputs).
struct Warner {
    name: String,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Warner {
    fn warn(&self, lines: usize, why: &str) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        log::warn!("log output {:?}: {lines} line(s) dropped: {why}", self.name);
    }

    fn dropped(&self, lines: usize, why: &str) {
        DROPPED.inc_by(lines as u64);
        self.warn(lines, why);
    }
}

/// The next lines: waits up to `wait` for the first, then takes what is
/// queued (up to `max`). `None` when the queue is closed and empty.
fn next_batch(rx: &Receiver<Arc<Line>>, wait: Duration, max: usize) -> Option<Vec<Arc<Line>>> {
    let mut batch = Vec::new();
    match rx.recv_timeout(wait) {
        Ok(l) => batch.push(l),
        Err(RecvTimeoutError::Timeout) => return Some(batch),
        Err(RecvTimeoutError::Disconnected) => return None,
    }
    while batch.len() < max {
        match rx.try_recv() {
            Ok(l) => batch.push(l),
            Err(_) => break,
        }
    }
    Some(batch)
}

// --- file ----------------------------------------------------------------

struct OpenFile {
    file: File,
    id: (u64, u64),
}

fn open(path: &std::path::Path, mkdir: bool) -> std::io::Result<OpenFile> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if mkdir {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let m = file.metadata()?;
    Ok(OpenFile {
        file,
        id: (m.dev(), m.ino()),
    })
}

/// Whether `path` still names the open file.
fn same_file(path: &std::path::Path, open: &OpenFile) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == open.id)
}

fn file_writer(sink: &Sink, rx: &Receiver<Arc<Line>>, w: &Warner) {
    let Sink::File {
        path,
        format,
        mkdir,
    } = sink
    else {
        return;
    };
    let mut file: Option<OpenFile> = None;
    let mut generation = REOPEN.load(Ordering::Relaxed);
    let mut checked = Instant::now();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(batch) = next_batch(rx, Duration::from_secs(1), 4096) {
        // rotation: a signal, or the path names another file (or none)
        let now = REOPEN.load(Ordering::Relaxed);
        if now != generation {
            generation = now;
            file = None;
        } else if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            if file.as_ref().is_some_and(|f| !same_file(path, f)) {
                file = None;
            }
        }
        if batch.is_empty() {
            continue;
        }
        if file.is_none() {
            match open(path, *mkdir) {
                Ok(f) => file = Some(f),
                Err(e) => {
                    w.dropped(batch.len(), &format!("cannot open {}: {e}", path.display()));
                    continue;
                }
            }
        }
        buf.clear();
        for l in &batch {
            file_line(&mut buf, l, format);
        }
        if let Some(f) = &mut file {
            if let Err(e) = f.file.write_all(&buf) {
                w.dropped(
                    batch.len(),
                    &format!("cannot write {}: {e}", path.display()),
                );
                file = None;
            }
        }
    }
}

// --- stdout --------------------------------------------------------------

fn stdout_writer(format: JsonFormat, date: &DateKey, rx: &Receiver<Arc<Line>>) {
    while let Some(batch) = next_batch(rx, Duration::from_secs(1), 4096) {
        if batch.is_empty() {
            continue;
        }
        let out = json_batch(&batch, format, date);
        let mut s = std::io::stdout().lock();
        let _ = s.write_all(&out);
        let _ = s.flush();
    }
}

// --- http ------------------------------------------------------------------

/// How long a batch waits for more lines, and its largest size.
const HTTP_DELAY: Duration = Duration::from_secs(1);
const HTTP_BATCH: usize = 500;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn http_writer(sink: &Sink, rx: &Receiver<Arc<Line>>, w: &Warner) {
    let Sink::Http {
        url,
        tls_verify,
        format,
        date,
        headers,
        basic_auth,
        retries,
    } = sink
    else {
        return;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return log::error!("log output {:?}: cannot start: {e}", w.name),
    };
    let _entered = rt.enter();
    let client = match reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .danger_accept_invalid_certs(!tls_verify)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => return log::error!("log output {:?}: cannot make its client: {e}", w.name),
    };
    let content_type = match format {
        JsonFormat::Lines => "application/x-ndjson",
        JsonFormat::Array => "application/json",
    };
    loop {
        // a batch: the first line, then whatever comes within the delay
        let Some(mut batch) = next_batch(rx, Duration::from_secs(3600), HTTP_BATCH) else {
            return;
        };
        let deadline = Instant::now() + HTTP_DELAY;
        let mut open = true;
        while !batch.is_empty() && batch.len() < HTTP_BATCH {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => batch.push(l),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let body = json_batch(&batch, *format, date);
        let mut last_error = String::new();
        let mut sent = false;
        for attempt in 0..=*retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            let mut req = client
                .post(url)
                .header("content-type", content_type)
                .body(body.clone());
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some((user, pass)) = basic_auth {
                req = req.basic_auth(user, Some(pass));
            }
            match rt.block_on(req.send()) {
                Ok(r) if r.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(r) => last_error = format!("the server answered {}", r.status()),
                Err(e) => last_error = e.to_string(),
            }
        }
        if !sent {
            w.dropped(batch.len(), &format!("POST {url} failed: {last_error}"));
        }
        if !open {
            return;
        }
    }
}

// --- syslog ----------------------------------------------------------------

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

fn connect(address: &str, tcp: bool) -> std::io::Result<Conn> {
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the host has no address"))?;
    if tcp {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn::Tcp(s))
    } else {
        let local = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(local)?;
        s.connect(addr)?;
        Ok(Conn::Udp(s))
    }
}

fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One syslog message (without framing), cut to `max` bytes.
fn syslog_message(sink: &Sink, line: &Line, host: &str) -> Vec<u8> {
    let Sink::Syslog {
        rfc5424,
        max_size,
        message,
        appname,
        facility,
        severity: preset,
        ..
    } = sink
    else {
        return Vec::new();
    };
    let pri = u32::from(*facility) * 8 + u32::from(preset.unwrap_or_else(|| severity(line.level)));
    let app: String = match appname {
        Some(f) => field_text(line, *f)
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(48)
            .collect(),
        None => "flex-gateway".into(),
    };
    let text = field_text(line, *message).replace(['\n', '\r'], " ");
    let ts = crate::ops::time::rfc3339(line.time);
    let mut out = if *rfc5424 {
        format!(
            "<{pri}>1 {ts} {host} {app} {} - - {text}",
            std::process::id()
        )
    } else {
        // RFC 3164: "Mmm dd hh:mm:ss", the month from the RFC 3339 form
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month: usize = ts[5..7].parse().unwrap_or(1);
        let day: u32 = ts[8..10].parse().unwrap_or(1);
        format!(
            "<{pri}>{} {day:>2} {} {host} {app}[{}]: {text}",
            MONTHS[month.clamp(1, 12) - 1],
            &ts[11..19],
            std::process::id()
        )
    }
    .into_bytes();
    if out.len() > *max_size {
        let mut cut = *max_size;
        while cut > 0 && (out[cut] & 0xC0) == 0x80 {
            cut -= 1; // not inside a UTF-8 character
        }
        out.truncate(cut);
    }
    out
}

fn syslog_writer(sink: &Sink, rx: &Receiver<Arc<Line>>, w: &Warner) {
    let Sink::Syslog { address, tcp, .. } = sink else {
        return;
    };
    let host = crate::ops::hostname().unwrap_or_else(|| "-".to_string());
    let mut conn: Option<Conn> = None;
    let mut retry_at = Instant::now();
    while let Some(batch) = next_batch(rx, Duration::from_secs(1), 512) {
        if batch.is_empty() {
            continue;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            match connect(address, *tcp) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    retry_at = Instant::now() + Duration::from_secs(1);
                    w.dropped(batch.len(), &format!("cannot reach {address}: {e}"));
                    continue;
                }
            }
        }
        let Some(c) = &mut conn else {
            w.dropped(batch.len(), &format!("{address} is unreachable"));
            continue;
        };
        let mut failed = None;
        let mut sent = 0;
        for l in &batch {
            let mut m = syslog_message(sink, l, &host);
            let r = match c {
                Conn::Udp(s) => s.send(&m).map(|_| ()),
                Conn::Tcp(s) => {
                    m.push(b'\n');
                    s.write_all(&m)
                }
            };
            match r {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            conn = None;
            w.dropped(batch.len() - sent, &format!("sending to {address}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::json_record;
    use super::*;
    use crate::config::logging::{DateFormat, FileFormat, RecordField, TemplatePiece};
    use std::time::SystemTime;
    use std::time::UNIX_EPOCH;

    fn line(message: &str) -> Line {
        Line {
            time: UNIX_EPOCH + Duration::from_millis(1_795_692_154_123),
            level: log::Level::Warn,
            logger: "message-logging".into(),
            access: true,
            message: message.into(),
        }
    }

    #[test]
    fn file_formats() {
        let l = line("a \"quoted\", text");
        let mut out = Vec::new();
        file_line(&mut out, &l, &FileFormat::Plain);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "a \"quoted\", text");
        assert_eq!(v["kind"], "access");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["time"], "2026-11-26T11:22:34.123Z");
        out.clear();
        let t = vec![
            TemplatePiece::Text("[".into()),
            TemplatePiece::Field(RecordField::Logger),
            TemplatePiece::Text("][".into()),
            TemplatePiece::Field(RecordField::Level),
            TemplatePiece::Text("] ".into()),
            TemplatePiece::Field(RecordField::Message),
        ];
        file_line(&mut out, &l, &FileFormat::Template(t));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "[message-logging][warn] a \"quoted\", text\n"
        );
        out.clear();
        file_line(&mut out, &l, &FileFormat::Csv(",".into()));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "2026-11-26T11:22:34.123Z,message-logging,warn,access,\"a \"\"quoted\"\", text\"\n"
        );
    }

    #[test]
    fn syslog_forms_and_cut() {
        let sink = |rfc5424, max_size| Sink::Syslog {
            address: "127.0.0.1:514".into(),
            tcp: false,
            rfc5424,
            max_size,
            message: RecordField::Message,
            appname: None,
            facility: 1,
            severity: None,
        };
        let l = line("héllo\nworld");
        let m = String::from_utf8(syslog_message(&sink(true, 2048), &l, "h1")).unwrap();
        assert!(
            m.starts_with("<12>1 2026-11-26T11:22:34.123Z h1 flex-gateway "),
            "{m}"
        );
        assert!(m.ends_with(" - - héllo world"), "{m}");
        let m = String::from_utf8(syslog_message(&sink(false, 2048), &l, "h1")).unwrap();
        assert!(m.starts_with("<12>Nov 26 11:22:34 h1 flex-gateway["), "{m}");
        // a cut never splits a character
        let long = line(&"é".repeat(200));
        let m = syslog_message(&sink(true, 131), &long, "h1");
        assert!(m.len() <= 131);
        assert!(String::from_utf8(m).is_ok());
        let _ = SystemTime::now();
    }

    #[test]
    fn json_dates() {
        let l = line("x");
        let d = |format| DateKey {
            key: Some("date".into()),
            format,
        };
        assert_eq!(
            json_record(&l, Some(&d(DateFormat::Epoch)))["date"],
            1_795_692_154u64
        );
        assert_eq!(
            json_record(&l, Some(&d(DateFormat::Iso8601)))["date"],
            "2026-11-26T11:22:34.123Z"
        );
        let v = json_record(&l, Some(&d(DateFormat::Double)))["date"]
            .as_f64()
            .unwrap();
        assert!((v - 1_795_692_154.123).abs() < 0.001);
        let lines = json_batch(
            &[Arc::new(line("a")), Arc::new(line("b"))],
            JsonFormat::Lines,
            &d(DateFormat::Epoch),
        );
        assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 2);
        let arr = json_batch(
            &[Arc::new(line("a")), Arc::new(line("b"))],
            JsonFormat::Array,
            &d(DateFormat::Epoch),
        );
        let v: serde_json::Value = serde_json::from_slice(&arr).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
    }
}
