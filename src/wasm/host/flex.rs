//! `proxy_call_foreign_function`: what a Flex Gateway PDK policy asks of
//! its host beyond the standard ABI. Arguments are a JSON array of strings.
//!
//! - `flex_get_policy_configuration` → the binding's config (JSON)
//! - `flex_get_policy_metadata` → `{"name","namespace"}` (agrees with
//!   `plugin_name` = `<policy>.<namespace>.<api>`)
//! - `flex_create_service [name, namespace, uri]` → `<name>.<namespace>.svc`
//!   becomes an upstream `proxy_http_call` can use
//! - `flex_log [level, message]`, `flex_get_env [name]` (only the
//!   environment the config gives the policy, never the gateway's)
//! - `get_shared_data_keys` → the keys (JSON array of strings),
//!   `remove_shared_data_key` (key bytes, then a u32 LE CAS)
//!
//! Anything else answers NOT_FOUND, which the PDK tolerates.

use super::{guest, hand_over, read, C, R};
use crate::wasm::abi::status;
use crate::wasm::state::{HostState, Service};
use serde_json::{json, Value};
use wasmtime::Linker;

/// The JSON array-of-strings arguments.
fn strings(args: &[u8]) -> Option<Vec<String>> {
    if args.is_empty() {
        return Some(Vec::new());
    }
    let v: Value = serde_json::from_slice(args).ok()?;
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A foreign function's result, or the status refusing it.
fn call(h: &mut HostState, name: &str, args: &[u8]) -> Result<Vec<u8>, i32> {
    let p = h.plugin.clone();
    match name {
        "flex_get_policy_configuration" => Ok(p.config.clone()),
        "flex_get_policy_metadata" => {
            let (name, namespace) = match &p.flex {
                Some(f) => (f.policy.clone(), f.namespace.clone()),
                None => (p.name.clone(), "default".to_string()),
            };
            Ok(json!({"name": name, "namespace": namespace})
                .to_string()
                .into_bytes())
        }
        "flex_create_service" => {
            let a = strings(args).ok_or(status::SERIALIZATION_FAILURE)?;
            let [name, namespace, uri] = a.as_slice() else {
                return Err(status::BAD_ARGUMENT);
            };
            let url = uri.trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(status::BAD_ARGUMENT);
            }
            let mut services = p
                .services
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if services.len() >= 256 {
                return Err(status::INTERNAL_FAILURE);
            }
            services.insert(
                format!("{name}.{namespace}.svc"),
                Service {
                    url: url.to_string(),
                },
            );
            Ok(Vec::new())
        }
        "flex_log" => {
            let a = strings(args).ok_or(status::SERIALIZATION_FAILURE)?;
            let (level, msg) = match a.as_slice() {
                [level, msg] => (level.as_str(), msg.as_str()),
                [msg] => ("info", msg.as_str()),
                _ => return Err(status::BAD_ARGUMENT),
            };
            let level = match level.to_ascii_lowercase().as_str() {
                "trace" => log::Level::Trace,
                "debug" => log::Level::Debug,
                "warn" | "warning" => log::Level::Warn,
                "error" | "critical" => log::Level::Error,
                _ => log::Level::Info,
            };
            log::log!(target: "flexgw::wasm", level, "{}: {msg}", p.name);
            Ok(Vec::new())
        }
        "flex_get_env" => {
            let a = strings(args).ok_or(status::SERIALIZATION_FAILURE)?;
            let [key] = a.as_slice() else {
                return Err(status::BAD_ARGUMENT);
            };
            p.env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone().into_bytes())
                .ok_or(status::NOT_FOUND)
        }
        "get_shared_data_keys" => {
            let keys: Vec<String> = p
                .shared
                .keys()
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .collect();
            Ok(json!(keys).to_string().into_bytes())
        }
        "remove_shared_data_key" => {
            let (key, cas) = match args.len() {
                n if n >= 4 => {
                    let (k, c) = args.split_at(n - 4);
                    (k, u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                }
                _ => (args, 0),
            };
            p.shared
                .remove(key, cas)
                .map(|()| Vec::new())
                .map_err(|_| status::INTERNAL_FAILURE)
        }
        _ => Err(status::NOT_FOUND),
    }
}

pub fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C, np: i32, nl: i32, ap: i32, al: i32, ret_ptr: i32, ret_len: i32| -> R {
            let name = String::from_utf8_lossy(&guest!(read(&c, np, nl))).into_owned();
            let args = guest!(read(&c, ap, al));
            match call(c.data_mut(), &name, &args) {
                Ok(result) => hand_over(&mut c, &result, ret_ptr, ret_len),
                Err(s) => Ok(s),
            }
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments_are_a_json_array_of_strings() {
        assert_eq!(
            super::strings(br#"["a","b"]"#),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(super::strings(b""), Some(vec![]));
        assert_eq!(super::strings(br#"["a",1]"#), None);
        assert_eq!(super::strings(b"{"), None);
    }
}
