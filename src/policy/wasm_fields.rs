//! `proxy-wasm`'s fields, known also to a build without the `wasm`
//! feature (its schema names them; its decoder refuses them).

use crate::config::fields::{f, Field, Ty, BOOL};

pub const FIELDS: &[Field] = &[
    f("module", Ty::Text("a .wasm file"))
        .req()
        .doc("The compiled proxy-wasm filter."),
    f("name", Ty::Str).doc("The plugin name the filter sees."),
    f("rootId", Ty::Str),
    f("vmId", Ty::Str),
    f("vmConfig", Ty::Any).doc("Given to the filter at VM start (text, or YAML passed as JSON)."),
    f("config", Ty::Any).doc("Given to the filter at configure (text, or YAML passed as JSON)."),
    f("failOpen", BOOL)
        .default("false")
        .doc("Pass requests when the filter fails."),
    f("services", Ty::Dict(&Ty::Url("an http(s) URL")))
        .doc("Upstreams the filter may call, by cluster name."),
    f("env", Ty::Dict(&Ty::Str)).doc("Environment variables the filter sees."),
    f("instances", Ty::Int(1, 256)),
    f("limits", Ty::Obj(LIMIT_FIELDS)),
];
pub const LIMIT_FIELDS: &[Field] = &[
    f("memory", Ty::Size).doc("Linear memory per instance (1MiB and up)."),
    f("callbackTimeout", Ty::Duration(false)),
    f("pauseTimeout", Ty::Duration(false)),
    f("maxBodySize", Ty::Size),
    f("maxCalls", Ty::Int(1, 1024)),
];
