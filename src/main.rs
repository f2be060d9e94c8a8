//! The `stream-gateway` binary: parse the CLI, load and validate the config,
//! start. Config errors print one line per problem and exit non-zero before
//! anything binds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stream_gateway::config;
use stream_gateway::policy::{Policy, UnknownRoutes};
use stream_gateway::server::{self, RunFlags};

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stream-gateway",
    version,
    about = "Auth gateway and reverse proxy for the Stream Chat API"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Take over the listeners of a running instance (pingora graceful upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and exit (non-zero with one line per problem).
    Check,
    /// Print the route policy table (with the config's overrides if --config is given).
    Routes,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => check(cli.config),
        Some(Command::Routes) => routes(cli.config),
        None => run(
            cli.config,
            RunFlags {
                upgrade: cli.upgrade,
                daemon: cli.daemon,
            },
        ),
    }
}

fn load(path: Option<PathBuf>) -> Result<config::Settings, ExitCode> {
    let Some(path) = path else {
        eprintln!("error: --config <FILE> is required");
        return Err(ExitCode::from(2));
    };
    config::load(&path).map_err(|errors| {
        for line in &errors.0 {
            eprintln!("error: {line}");
        }
        ExitCode::from(1)
    })
}

fn check(path: Option<PathBuf>) -> ExitCode {
    match load(path) {
        Ok(settings) => {
            for n in &settings.notices {
                eprintln!("note: {n}");
            }
            println!("config ok: {} tenant(s)", settings.tenants.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn routes(path: Option<PathBuf>) -> ExitCode {
    let policy = match path {
        Some(_) => match load(path) {
            Ok(s) => s.policy,
            Err(code) => return code,
        },
        None => match Policy::new(UnknownRoutes::Deny, &[], &[]) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    print!("{}", policy.render());
    ExitCode::SUCCESS
}

fn run(path: Option<PathBuf>, flags: RunFlags) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for n in &settings.notices {
        tracing::warn!("{n}");
    }
    let listen = settings.server.listen;
    let server = match server::build(settings, flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%listen, "stream-gateway starting");
    server.run_forever()
}
