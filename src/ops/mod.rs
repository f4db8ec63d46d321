//! Operations helpers: logging set-up, the JSON access log, request ids, time.

pub mod access_log;
pub mod logging;
pub mod request_id;
pub mod time;
