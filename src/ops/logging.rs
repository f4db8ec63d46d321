//! Log set-up: env_logger on stderr, filtered by `RUST_LOG` (default `info`).
//! Access-log lines (target [`ACCESS_TARGET`]) are printed as the bare JSON
//! object, so a log shipper can parse them; everything else gets a level and
//! a timestamp. `RUST_LOG=info,access=off` switches the access log off.

use std::io::Write;

pub const ACCESS_TARGET: &str = "access";

pub fn init() {
    init_at(None)
}

/// `level` (Flex's `runtimeLogs.logLevel`) for the gateway's own logs
/// unless `RUST_LOG` says otherwise; access logs are kept either way.
pub fn init_at(level: Option<log::LevelFilter>) {
    let default = match level {
        Some(l) => format!("{},{ACCESS_TARGET}=info", l.as_str().to_ascii_lowercase()),
        None => "info".to_string(),
    };
    let env = env_logger::Env::default().default_filter_or(default);
    env_logger::Builder::from_env(env)
        .format(|buf, record| {
            if record.target() == ACCESS_TARGET {
                writeln!(buf, "{}", record.args())
            } else {
                writeln!(
                    buf,
                    "{} {:5} {}: {}",
                    crate::ops::time::now(),
                    record.level(),
                    record.target(),
                    record.args()
                )
            }
        })
        .init();
}
