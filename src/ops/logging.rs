//! Log set-up: env_logger on stderr, filtered by `RUST_LOG` (default `info`).
//! Access-log lines (target [`ACCESS_TARGET`]) are printed as the bare JSON
//! object, so a log shipper can parse them; everything else gets a level and
//! a timestamp. `RUST_LOG=info,access=off` switches the access log off.

use std::io::Write;

pub const ACCESS_TARGET: &str = "access";

pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
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
