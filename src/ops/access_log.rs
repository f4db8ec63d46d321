//! One JSON line per request on the `access` log target: to stderr and
//! Flex's `accessLogs.outputs`, through the writers' queues.

use super::logging::ACCESS_TARGET;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLine<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client_ip: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub route_id: Option<&'a str>,
    /// Who called, as an authentication policy established it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    pub status: u16,
    pub upstream: Option<String>,
    pub duration_ms: f64,
    pub bytes_sent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request's trace, when tracing is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// What the response cache did: hit, miss, expired, bypass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
}

pub fn enabled() -> bool {
    log::log_enabled!(target: ACCESS_TARGET, log::Level::Info)
}

pub fn write(line: &AccessLine<'_>) {
    match serde_json::to_string(line) {
        Ok(json) => super::logging::access(log::Level::Info, ACCESS_TARGET, json),
        Err(e) => log::warn!("access log line not written: {e}"),
    }
}
