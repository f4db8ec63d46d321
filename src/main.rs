//! The `flex-gateway` command: parse arguments, load config, build, run.

use clap::{Args, Parser, Subcommand};
use flex_gateway::{config, ops, server};
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc: fewer cycles per allocation and less fragmentation than glibc's
// malloc under Pingora's many small per-request allocations (benches/README.md)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "flex-gateway",
    version,
    about = "A declarative API gateway on Cloudflare Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// A YAML file, or a directory read as conf.d (every *.yaml / *.yml);
    /// given several times, all are read in that order into one config
    /// (an empty directory among several is skipped)
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/flex-gateway/conf.d"
    )]
    config: Vec<PathBuf>,
}

impl ConfigArg {
    fn shown(&self) -> String {
        config::load::shown(&self.config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configuration
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take the listening sockets over from a running instance (zero-downtime upgrade)
        #[arg(short = 'u', long)]
        upgrade: bool,
        /// Run in the background
        #[arg(short = 'd', long)]
        daemon: bool,
    },
    /// Check the configuration; list every problem and exit non-zero if there is any
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Zero-downtime binary upgrade of the running gateway (what `systemctl reload` runs):
    /// start the new binary, hand the listening sockets over, drain the old process
    Upgrade {
        #[command(flatten)]
        config: ConfigArg,
        /// The binary to start (default: this one)
        #[arg(long)]
        binary: Option<PathBuf>,
        /// How long the new process may take to become ready, in seconds
        #[arg(long, default_value_t = 15)]
        timeout: u64,
    },
    /// Ask a running gateway's admin listener for a probe; exit 0 on 200 (a container HEALTHCHECK)
    Probe {
        /// The admin address (default: FLEXGW_ADMIN_ADDRESS, else 127.0.0.1:9901; 0.0.0.0 is asked on 127.0.0.1)
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
        /// `/ready` or `/live`
        #[arg(long, default_value = "/ready")]
        path: String,
        /// Seconds to wait for the answer
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
}

fn load(arg: &ConfigArg) -> Result<config::Config, ExitCode> {
    if let Err(why) = config::environment::check() {
        eprintln!("flex-gateway: {why}");
        return Err(ExitCode::from(1));
    }
    config::load(&arg.config).map_err(|errors| {
        eprintln!("{errors}");
        if errors.0.len() > 1 {
            eprintln!("{}: {} problem(s) found", arg.shown(), errors.0.len());
        }
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe {
            address,
            path,
            timeout,
        } => match ops::probe::run(address, &path, std::time::Duration::from_secs(timeout)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("flex-gateway probe: {why}");
                ExitCode::from(1)
            }
        },
        Command::Validate { config } => match load(&config) {
            Ok(c) => {
                for n in &c.notices {
                    println!("note: {n}");
                }
                let routes: usize = c.listeners.iter().map(|l| l.routes.len()).sum();
                println!(
                    "{}: OK ({} gateway(s), {} listener(s), {} route binding(s))",
                    config.shown(),
                    c.gateways.len(),
                    c.listeners.len(),
                    routes
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Upgrade {
            config,
            binary,
            timeout,
        } => {
            let upgrade = ops::upgrade::Upgrade {
                config: config.config,
                binary,
                timeout: std::time::Duration::from_secs(timeout),
            };
            match upgrade.run() {
                Ok(r) => {
                    println!(
                        "upgraded: pid {} -> {} in {} ms (the old process drains in-flight requests)",
                        r.old_pid,
                        r.new_pid,
                        r.took.as_millis()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flex-gateway upgrade: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run {
            config,
            upgrade,
            daemon,
        } => {
            // until the lifecycle task installs the reload handler, a SIGHUP
            // (`systemctl kill -s HUP`) must not end the process
            // SAFETY: setting a signal disposition to SIG_IGN touches no memory.
            unsafe {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
            }
            ops::init::reap_orphans_if_pid1();
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            ops::logging::init_at(c.log_level);
            log::info!(
                "flex-gateway {} loaded {} ({})",
                env!("CARGO_PKG_VERSION"),
                config.shown(),
                c.gateways.join(", ")
            );
            for n in &c.notices {
                log::warn!("{n}");
            }
            // an upgraded process inherits the old one's listening sockets
            let inherits = match upgrade {
                true => std::fs::read_to_string(&c.server.pid_file)
                    .ok()
                    .and_then(|pid| pid.trim().parse().ok())
                    .map(server::listening_addresses)
                    .unwrap_or_default(),
                false => Default::default(),
            };
            if let Err(why) = server::check_listeners(&c, &inherits) {
                eprintln!("flex-gateway: {why}");
                return ExitCode::from(1);
            }
            let flags = server::ProcessFlags { upgrade, daemon };
            server::build(c, &config.config, flags).run_forever()
        }
    }
}
