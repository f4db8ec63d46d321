//! The JSON body of every response the gateway makes itself:
//! `{"error": "...", "status": N, "requestId": "..."}`.

use bytes::Bytes;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error: &'a str,
    status: u16,
    request_id: &'a str,
}

pub fn error_body(status: u16, message: &str, request_id: &str) -> Bytes {
    let body = ErrorBody {
        error: message,
        status,
        request_id,
    };
    // serialising three plain fields cannot fail; fall back to an empty object anyway
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()))
}

/// The message for a status the gateway produces on a proxying failure.
pub fn message_for(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        404 => "no route for this path",
        408 => "request timeout: the request body stopped arriving",
        413 => "request body too large",
        502 => "bad gateway: the upstream could not be reached",
        503 => "service unavailable",
        504 => "gateway timeout: the upstream did not respond in time",
        _ => "internal gateway error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let b = error_body(404, "no \"route\"", "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "no \"route\"");
        assert_eq!(v["status"], 404);
        assert_eq!(v["requestId"], "abc");
    }
}
