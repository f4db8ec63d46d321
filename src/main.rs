//! The `flex-gateway` command: parse arguments, load config, build, run.

use clap::{Args, Parser, Subcommand};
use flex_gateway::{config, ops, server};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// A YAML file, or a directory read as conf.d (every *.yaml / *.yml)
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/flex-gateway/conf.d"
    )]
    config: PathBuf,
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
}

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{}: {} problem(s) found", path.display(), errors.0.len());
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match load(&config.config) {
            Ok(c) => {
                let routes: usize = c.listeners.iter().map(|l| l.routes.len()).sum();
                println!(
                    "{}: OK ({} gateway(s), {} listener(s), {} route binding(s))",
                    config.config.display(),
                    c.gateways.len(),
                    c.listeners.len(),
                    routes
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run {
            config,
            upgrade,
            daemon,
        } => {
            ops::logging::init();
            let c = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            log::info!(
                "flex-gateway {} loaded {} ({})",
                env!("CARGO_PKG_VERSION"),
                config.config.display(),
                c.gateways.join(", ")
            );
            let flags = server::ProcessFlags { upgrade, daemon };
            server::build(c, &config.config, flags).run_forever()
        }
    }
}
