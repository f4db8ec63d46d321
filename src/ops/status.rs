//! `flex-gateway status`: a running gateway's state on a terminal — the
//! configuration generation and when it was applied, each file's state
//! (applied, refused with its errors, pending), listeners, routes and
//! upstream health — read from its admin listener (`/config`,
//! `/upstreams`).

use serde_json::Value;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// An admin listener's JSON answer to `GET path` (a 200), or why not.
pub fn admin_json(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Value, String> {
    let (status, body) = super::probe::get(addr, path, timeout)?;
    if status != 200 {
        return Err(format!("{addr}{path} answered {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{addr}{path}: not JSON: {e}"))
}

/// The two admin answers.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<(Value, Value), String> {
    Ok((
        admin_json(addr, "/config", timeout)?,
        admin_json(addr, "/upstreams", timeout)?,
    ))
}

fn ago(unix: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let s = (now - unix).max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// The terminal view; and whether the files on disk are refused.
pub fn render(config: &Value, upstreams: &Value) -> (String, bool) {
    let mut out = String::new();
    let refused = config["lastReload"]["result"] == "refused";
    let _ = writeln!(
        out,
        "generation {}, applied {}",
        config["generation"],
        ago(config["appliedAt"].as_i64().unwrap_or_default())
    );
    if refused {
        let _ = writeln!(
            out,
            "LAST RELOAD REFUSED {}: the previous configuration serves; fix the files below",
            ago(config["lastReload"]["at"].as_i64().unwrap_or_default())
        );
    }
    let _ = writeln!(out, "\nfiles:");
    for f in config["files"].as_array().into_iter().flatten() {
        let docs = f["documents"].as_array().map_or(0, Vec::len);
        let hash = f["sha256"].as_str().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<8} {}{}  ({} document(s), sha256 {})",
            f["state"].as_str().unwrap_or("?"),
            f["file"].as_str().unwrap_or("?"),
            if f["deleted"] == true {
                " (deleted; still serving)"
            } else {
                ""
            },
            docs,
            &hash[..hash.len().min(12)]
        );
        for e in f["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "      {}", e.as_str().unwrap_or_default());
        }
    }
    // errors no file owns (across files)
    let owned: Vec<&str> = config["files"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["errors"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for e in config["lastReload"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(e) = e.as_str().filter(|e| !owned.contains(e)) {
            let _ = writeln!(out, "  {e}");
        }
    }
    let _ = writeln!(out, "\nlisteners:");
    for l in config["listeners"].as_array().into_iter().flatten() {
        let routes = l["routes"].as_array().map_or(0, Vec::len);
        let scheme = if l["tls"].is_null() { "http" } else { "https" };
        let _ = writeln!(
            out,
            "  {} {}://{}  {} route(s){}",
            l["name"].as_str().unwrap_or("?"),
            scheme,
            l["address"].as_str().unwrap_or("?"),
            routes,
            if l["serving"] == false {
                "  NOT SERVED: a new listener needs a binary upgrade (`systemctl reload flex-gateway`)"
            } else {
                ""
            }
        );
        for r in l["routes"].as_array().into_iter().flatten() {
            let mut paths: Vec<&str> = r["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            // a Flex API's route: its rules' path patterns (regexes)
            for rule in r["flex"]["rules"].as_array().into_iter().flatten() {
                if let Some(p) = rule["path"].as_str() {
                    paths.push(p);
                }
            }
            let services: Vec<&str> = r["upstream"]["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str())
                .collect();
            let policies = r["policies"].as_array().map_or(0, Vec::len);
            let _ = writeln!(
                out,
                "    {:<20} {} -> {} ({} polic{})",
                r["id"].as_str().unwrap_or("?"),
                paths.join(" "),
                services.join(", "),
                policies,
                if policies == 1 { "y" } else { "ies" }
            );
        }
    }
    let _ = writeln!(out, "\nupstreams:");
    for s in upstreams["services"].as_array().into_iter().flatten() {
        let targets = s["targets"].as_array().cloned().unwrap_or_default();
        let up = targets.iter().filter(|t| t["available"] == true).count();
        let _ = writeln!(
            out,
            "  {:<20} {}/{} target(s) available",
            s["name"].as_str().unwrap_or("?"),
            up,
            targets.len()
        );
        for t in &targets {
            if t["available"] != true {
                let _ = writeln!(
                    out,
                    "      {} unavailable (healthy: {}, breaker: {})",
                    t["url"].as_str().unwrap_or("?"),
                    t["healthy"],
                    t["breaker"].as_str().unwrap_or("?")
                );
            }
        }
    }
    (out, refused)
}

/// What a running gateway made of a set of files.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It serves exactly these files.
    Applied,
    /// It read exactly these files and refused them (the previous
    /// configuration serves).
    Refused,
}

/// The files `/config` lists (deleted ones left out): name and SHA-256,
/// in order.
pub fn admin_files(config: &Value) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = config["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["deleted"] != true)
        .filter_map(|f| {
            Some((
                f["name"].as_str()?.to_string(),
                f["sha256"].as_str()?.to_string(),
            ))
        })
        .collect();
    files.sort();
    files
}

/// Wait until the gateway at `addr` has applied or refused exactly the
/// files under `paths` (by name and content), asking every 200 ms; it may
/// be unreachable for a moment (a binary upgrade). `Err` when `timeout`
/// passes first, with the last state seen.
pub fn wait_for(
    addr: SocketAddr,
    paths: &[std::path::PathBuf],
    timeout: Duration,
) -> Result<Outcome, String> {
    let mut want = crate::config::sources::local_files(paths)?;
    want.sort();
    let deadline = std::time::Instant::now() + timeout;
    let mut last: String;
    loop {
        match admin_json(addr, "/config", Duration::from_secs(2)) {
            Ok(config) => {
                let files = admin_files(&config);
                if files == want {
                    return Ok(if config["lastReload"]["result"] == "applied" {
                        Outcome::Applied
                    } else {
                        Outcome::Refused
                    });
                }
                let differ: Vec<&str> = want
                    .iter()
                    .filter(|w| !files.contains(w))
                    .map(|(n, _)| n.as_str())
                    .collect();
                last = format!(
                    "generation {}, not yet read: {}",
                    config["generation"],
                    differ.join(", ")
                );
            }
            Err(e) => last = e,
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the gateway did not take the files within {timeout:?} ({last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
