//! The `flex-gateway` command: parse arguments, load config, build, run.

use clap::{Args, Parser, Subcommand};
use flex_gateway::config::sources::Source;
use flex_gateway::{config, ops, server};
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc: fewer cycles per allocation and less fragmentation than glibc's
// malloc under Pingora's many small per-request allocations (benches/README.md);
// counted for `flexgw_heap_allocations_total` (~1 ns each)
#[global_allocator]
static GLOBAL: ops::heap::Counting<mimalloc::MiMalloc> = ops::heap::Counting(mimalloc::MiMalloc);

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
        /// `text`, or `github` (errors as GitHub Actions annotations on their lines)
        #[arg(long, default_value = "text", value_parser = ["text", "github"])]
        format: String,
    },
    /// What a configuration changes against another (files, or a running gateway):
    /// resources added, removed and changed, and whether a hot reload applies it.
    /// Exit 0: no change; 2: changes; 1: invalid (with the errors)
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// The configuration it replaces (a file or conf.d; repeatable)
        #[arg(long, conflicts_with = "against_admin")]
        against: Vec<PathBuf>,
        /// The running gateway's admin listener (host:port or http://host:port)
        #[arg(long)]
        against_admin: Option<String>,
        /// `text`, `json`, or `github` (annotations for pull requests)
        #[arg(long, default_value = "text", value_parser = ["text", "json", "github"])]
        format: String,
    },
    /// A running gateway's configuration generation, files and their state (applied,
    /// refused with errors, pending), listeners, routes and upstream health.
    /// Exit 0; 2 when its last reload was refused; 1 when it cannot be asked
    Status {
        /// The admin address (default: FLEXGW_ADMIN_ADDRESS, else 127.0.0.1:9901)
        #[arg(long)]
        admin: Option<String>,
        /// `text` or `json` (the admin answers as they are)
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Wait until the gateway has applied (exit 0) or refused (exit 2) exactly the files
        /// under this file or directory (by name and content); exit 1 if it does not within --wait
        #[arg(long)]
        expect: Vec<PathBuf>,
        /// Seconds to wait for --expect
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Print the JSON Schema (draft 2020-12) of the configuration files, for editors
    /// (`# yaml-language-server: $schema=...`) and CI; made from the tables `validate` reads with
    Schema,
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
    load_as(&arg.config, "text").map(|(c, _)| c)
}

/// Load `paths`: the config and the files read, or every problem printed
/// in `format` (`text` on stderr; `github` annotations or `json` on
/// stdout) and exit 1.
fn load_as(paths: &[PathBuf], format: &str) -> Result<(config::Config, Vec<Source>), ExitCode> {
    if let Err(why) = config::environment::check() {
        eprintln!("flex-gateway: {why}");
        return Err(ExitCode::from(1));
    }
    let (loaded, sources) = config::load::load_sources(paths);
    let errors = match loaded {
        Ok(c) => return Ok((c, sources)),
        Err(errors) => errors,
    };
    match format {
        "github" => errors
            .0
            .iter()
            .for_each(|e| println!("{}", ops::plan::github_error(e))),
        "json" => println!(
            "{}",
            serde_json::json!({"valid": false, "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>()})
        ),
        _ => {
            eprintln!("{errors}");
            if errors.0.len() > 1 {
                let shown = config::load::shown(paths);
                eprintln!("{shown}: {} problem(s) found", errors.0.len());
            }
        }
    }
    Err(ExitCode::from(1))
}

/// Load `paths` for `plan`, or say there is no plan.
fn plan_side(paths: &[PathBuf], format: &str) -> Result<ops::plan::Side, ExitCode> {
    let (c, sources) = load_as(paths, format).inspect_err(|_| {
        eprintln!("{}: invalid; no plan", config::load::shown(paths));
    })?;
    Ok(ops::plan::Side::local(c, &sources))
}

fn plan(config: &ConfigArg, against: &[PathBuf], admin: Option<&str>, format: &str) -> ExitCode {
    let new = match plan_side(&config.config, format) {
        Ok(side) => side,
        Err(code) => return code,
    };
    let old = match (admin, against.is_empty()) {
        (Some(url), _) => {
            let fetched = ops::probe::admin_address(url).and_then(|addr| {
                let answer =
                    ops::status::admin_json(addr, "/config", std::time::Duration::from_secs(5))?;
                ops::plan::Side::admin(answer)
            });
            match fetched {
                Ok(side) => side,
                Err(why) => {
                    eprintln!("flex-gateway plan: {why}");
                    return ExitCode::from(1);
                }
            }
        }
        (None, false) => match plan_side(against, format) {
            Ok(side) => side,
            Err(code) => return code,
        },
        (None, true) => {
            eprintln!("flex-gateway plan: say what the configuration replaces: --against FILE|DIR or --against-admin ADDRESS");
            return ExitCode::from(1);
        }
    };
    let p = ops::plan::plan(&old, &new);
    match format {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&p.json()).unwrap_or_default()
        ),
        "github" => print!("{}", p.github()),
        _ => print!("{}", p.text()),
    }
    ExitCode::from(p.exit_code())
}

/// `flex-gateway status`: with `expect`, first wait until the gateway has
/// read exactly those files.
fn status(admin: Option<&str>, format: &str, expect: &[PathBuf], wait: u64) -> ExitCode {
    let addr = match admin.map_or_else(ops::probe::default_admin, ops::probe::admin_address) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("flex-gateway status: {why}");
            return ExitCode::from(1);
        }
    };
    if !expect.is_empty() {
        match ops::status::wait_for(addr, expect, std::time::Duration::from_secs(wait)) {
            Ok(ops::status::Outcome::Applied) => {}
            Ok(ops::status::Outcome::Refused) => {
                eprintln!("flex-gateway status: the gateway refused these files; the previous configuration serves");
            }
            Err(why) => {
                eprintln!("flex-gateway status: {why}");
                return ExitCode::from(1);
            }
        }
    }
    let (config, upstreams) = match ops::status::fetch(addr, std::time::Duration::from_secs(5)) {
        Ok(answers) => answers,
        Err(why) => {
            eprintln!("flex-gateway status: {why}");
            return ExitCode::from(1);
        }
    };
    let (text, refused) = ops::status::render(&config, &upstreams);
    match format {
        "json" => println!(
            "{}",
            serde_json::json!({"config": config, "upstreams": upstreams})
        ),
        _ => print!("{text}"),
    }
    ExitCode::from(if refused { 2 } else { 0 })
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
        Command::Schema => {
            use std::io::Write;
            let schema = config::jsonschema::schema();
            let text = serde_json::to_string_pretty(&schema).expect("the schema is JSON");
            match writeln!(std::io::stdout().lock(), "{text}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1), // a closed pipe: nothing to say it to
            }
        }
        Command::Validate { config, format } if format == "github" => {
            match load_as(&config.config, "github") {
                Ok(_) => {
                    println!("{}: OK", config.shown());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Plan {
            config,
            against,
            against_admin,
            format,
        } => plan(&config, &against, against_admin.as_deref(), &format),
        Command::Status {
            admin,
            format,
            expect,
            wait,
        } => status(admin.as_deref(), &format, &expect, wait),
        Command::Validate { config, .. } => match load(&config) {
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
                // SIGUSR1 (logrotate: reopen the log files) likewise
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            }
            ops::init::reap_orphans_if_pid1();
            let (c, sources) = match load_as(&config.config, "text") {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            ops::logging::init_at(c.log_level);
            ops::logging::apply_outputs(c.logging.as_ref());
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
            server::build(c, sources, &config.config, flags).run_forever()
        }
    }
}
