//! flex-gateway: a declarative API gateway data plane on Cloudflare Pingora.
//!
//! `config` reads and validates the YAML; `router` maps a request to a
//! route; `policy` holds the policy engine and the policies, which see a
//! request through its `exchange`; `upstream` picks the peer;
//! `proxy` wires them into Pingora's `ProxyHttp` phases; `server` builds the
//! Pingora server; `ops` has logging and other operational helpers.

pub mod authority;
pub mod config;
pub mod connection;
pub mod exchange;
pub mod forwarding;
pub mod framing;
pub mod grpc; // unary gRPC calls over HTTP/2 (OTLP export, ext_authz)
pub mod ipset;
pub mod ops;
pub mod path;
pub mod policy;
pub mod proto; // protobuf wire format (OTLP spans, ext_authz)
pub mod proxy;
pub mod response;
pub mod router;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tls;
pub mod trace; // OpenTelemetry spans over OTLP/HTTP
pub mod upstream;
#[cfg(feature = "wasm")]
pub mod wasm;
