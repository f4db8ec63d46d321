//! Process defaults from the environment, for a container image or a
//! Kubernetes Deployment that has no `spec.server` of its own to say them.
//! A config's `spec.server` still wins over each.
//!
//! | variable | what | built-in default |
//! |---|---|---|
//! | `FLEXGW_ADMIN_ADDRESS` | the admin listener (`off`: none) | `127.0.0.1:9901` |
//! | `FLEXGW_RUN_DIR` | where the pid file and the upgrade socket live | `/run/flex-gateway` |
//! | `FLEXGW_GRACE_PERIOD` | the drain after SIGTERM (whole seconds) | `10s` |
//! | `FLEX_HEADER_RAW_VALUE_ENABLE` | Flex's: external authorization (gRPC) sends headers as raw bytes (`header_map`), or as UTF-8 text (`headers`) when `false` | `true` |
//!
//! Read when defaults are made (at load time only); [`check`] reports a bad
//! value once at start-up, with one line naming it.

use super::decode::parse_duration;
use super::model::ServerSettings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const ADMIN_ADDRESS: &str = "FLEXGW_ADMIN_ADDRESS";
pub const RUN_DIR: &str = "FLEXGW_RUN_DIR";
pub const GRACE_PERIOD: &str = "FLEXGW_GRACE_PERIOD";
pub const HEADER_RAW_VALUE: &str = "FLEX_HEADER_RAW_VALUE_ENABLE";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn admin(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "off" => Ok(None),
        t => match t.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(Some(a)),
            _ => Err(format!(
                "{ADMIN_ADDRESS}={t:?} is not an IP:port address (example: 0.0.0.0:9901) or off"
            )),
        },
    }
}

fn grace(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let parsed = match t.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => parse_duration(t),
    };
    match parsed {
        Some(d) if d.subsec_nanos() == 0 => Ok(d),
        _ => Err(format!(
            "{GRACE_PERIOD}={text:?} is not a whole number of seconds (try 8s)"
        )),
    }
}

fn flag(name: &str, text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name}={text:?} is neither true nor false")),
    }
}

/// Flex's `FLEX_HEADER_RAW_VALUE_ENABLE`: whether external authorization's
/// `CheckRequest` carries the request's headers as raw bytes (Envoy's
/// `encode_raw_headers`: `header_map`, each header line as it came) — the
/// default — or as UTF-8 text (`headers`, repeated names joined by `,`).
pub fn header_raw_value() -> bool {
    var(HEADER_RAW_VALUE).is_none_or(|v| flag(HEADER_RAW_VALUE, &v).unwrap_or(true))
}

/// Every variable set to something that cannot be used.
pub fn check() -> Result<(), String> {
    if let Some(v) = var(HEADER_RAW_VALUE) {
        flag(HEADER_RAW_VALUE, &v)?;
    }
    if let Some(v) = var(ADMIN_ADDRESS) {
        admin(&v)?;
    }
    if let Some(v) = var(GRACE_PERIOD) {
        grace(&v)?;
    }
    Ok(())
}

/// The variables that are set (and valid) over the built-in defaults.
pub fn apply(s: &mut ServerSettings) {
    if let Some(Ok(a)) = var(ADMIN_ADDRESS).map(|v| admin(&v)) {
        s.admin = a;
    }
    if let Some(dir) = var(RUN_DIR).map(PathBuf::from) {
        s.pid_file = dir.join("flex-gateway.pid");
        s.upgrade_socket = dir.join("upgrade.sock");
    }
    if let Some(Ok(g)) = var(GRACE_PERIOD).map(|v| grace(&v)) {
        s.grace_period = g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(admin("off"), Ok(None));
        assert_eq!(
            admin("0.0.0.0:9901"),
            Ok(Some("0.0.0.0:9901".parse().unwrap()))
        );
        assert!(admin("0.0.0.0:0").is_err());
        assert!(admin("localhost").unwrap_err().contains(ADMIN_ADDRESS));
        assert_eq!(grace("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(grace("8"), Ok(Duration::from_secs(8)));
        assert!(grace("1500ms").is_err());
        assert!(grace("soon").unwrap_err().contains(GRACE_PERIOD));
        assert_eq!(flag(HEADER_RAW_VALUE, " False "), Ok(false));
        assert_eq!(flag(HEADER_RAW_VALUE, "TRUE"), Ok(true));
        assert!(flag(HEADER_RAW_VALUE, "0")
            .unwrap_err()
            .contains(HEADER_RAW_VALUE));
    }
}
