//! Configuration: the YAML users write (`schema.rs`, decoded from the
//! position-carrying tree of `yaml.rs` with the helpers of `decode.rs`),
//! loading files and directories with checks across documents (`load.rs`),
//! and the validated runtime model the proxy uses (`model.rs`).

pub mod decode;
pub mod environment; // process defaults from FLEXGW_* variables (containers)
pub mod fields; // every mapping's fields: the decoder's keys and the JSON Schema
pub mod flex; // Flex Gateway Local Mode resources
pub mod jsonschema; // `flex-gateway schema`, from the field tables
pub mod load;
pub mod logging; // Flex logging outputs: file, http, stdout, syslog
pub mod model;
pub mod route_upstream; // a route's upstream, timeouts, retries
pub mod rules; // Flex request rules (regexes) and route rewriting
pub mod schema;
pub mod secrets; // ${ENV} and file: references in policy configs
pub mod services;
pub mod settings;
pub mod sources; // the files a load read, and their apply state
pub mod tls; // certificates of HTTPS listeners
pub mod tracing; // spec.server.tracing, Flex's Configuration tracing, sampling and labels
pub mod values;
pub mod yaml;

pub use decode::{ConfigError, ConfigErrors};
pub use load::{load, load_str};
pub use model::{ClientLimits, Config, Underscores};
