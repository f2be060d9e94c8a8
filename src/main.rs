//! The `stream-gateway` binary: parse the CLI, load and validate the config,
//! start. Config errors print one line per problem and exit non-zero before
//! anything binds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stream_gateway::config;
use stream_gateway::policy::{Policy, UnknownRoutes};
use stream_gateway::server::{self, RunFlags};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod release_memory;
use release_memory::release_free_memory;

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
    /// Revoke (or with --lift, un-revoke) a user's sessions or one session,
    /// on every instance sharing the config's [redis].
    Revoke(RevokeArgs),
    /// Print a new random service-account token (first line: give it to the
    /// backend) and the `token_sha256 = "..."` line for its
    /// [[tenants.services]] entry (second line).
    ServiceToken,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["user", "jti", "token_hash", "token"])))]
struct RevokeArgs {
    /// Tenant id (`[[tenants]] id`).
    #[arg(long)]
    tenant: String,
    /// Every session of this user issued up to now (by `iat`; sessions
    /// without `iat`, such as opaque ids, until lifted).
    #[arg(long)]
    user: Option<String>,
    /// One JWT session, by its `jti` claim.
    #[arg(long)]
    jti: Option<String>,
    /// One session, by the SHA-256 (hex) of its token.
    #[arg(long)]
    token_hash: Option<String>,
    /// One session, by the token itself; "-" reads it from standard input
    /// (keeps it out of shell history). Only its hash (or jti) is stored.
    #[arg(long)]
    token: Option<String>,
    /// How long a single-session revocation is kept (use the token's
    /// remaining lifetime or more).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    keep: std::time::Duration,
    /// Remove the revocation instead.
    #[arg(long)]
    lift: bool,
}

fn main() -> ExitCode {
    stream_gateway::limits::on_prune(release_free_memory);
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => check(cli.config),
        Some(Command::Routes) => routes(cli.config),
        Some(Command::Revoke(args)) => revoke(cli.config, args),
        Some(Command::ServiceToken) => service_token(),
        None => run(
            cli.config.clone(),
            RunFlags {
                upgrade: cli.upgrade,
                daemon: cli.daemon,
                config: cli.config,
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
            if let Some(tls) = &settings.server.tls {
                println!(
                    "tls: {} certificate(s) (the default and one per SNI entry), ALPN {}",
                    tls.certs.count(),
                    if tls.h2 { "h2, http/1.1" } else { "http/1.1" }
                );
            }
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

fn revoke(path: Option<PathBuf>, args: RevokeArgs) -> ExitCode {
    use stream_gateway::revocation::{self, Target};
    let settings = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(redis) = &settings.redis else {
        eprintln!("error: revocations are kept in Redis: the config has no [redis] section");
        return ExitCode::from(1);
    };
    if !settings.tenants.iter().any(|t| t.id == args.tenant) {
        eprintln!("error: no tenant with id {:?} in the config", args.tenant);
        return ExitCode::from(1);
    }
    let now = stream_gateway::clock::unix_secs_exact();
    let until = now.saturating_add(args.keep.as_secs());
    let target = if let Some(u) = args.user {
        Target::User(u)
    } else if let Some(j) = args.jti {
        Target::Session {
            id: format!("jti:{j}"),
            until,
        }
    } else if let Some(h) = args.token_hash {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("error: --token-hash must be 64 hex digits (SHA-256)");
            return ExitCode::from(2);
        }
        Target::Session {
            id: format!("sha256:{}", h.to_ascii_lowercase()),
            until,
        }
    } else if let Some(t) = args.token {
        let token = if t == "-" {
            let mut buf = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf) {
                eprintln!("error: reading the token from standard input: {e}");
                return ExitCode::from(2);
            }
            buf.trim().to_string()
        } else {
            t
        };
        Target::Session {
            id: stream_gateway::session::session_id(jwt_id(&token).as_deref(), &token),
            until,
        }
    } else {
        eprintln!("error: say what to revoke: --user, --jti, --token-hash or --token");
        return ExitCode::from(2);
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                // A person is waiting, not a request: allow more than the
                // per-request Redis timeout.
                let timeout = redis.timeout.max(std::time::Duration::from_secs(5));
                let conn = stream_gateway::redis_conn::Redis::connect(&redis.target, timeout)?;
                revocation::write(&conn, &args.tenant, &target, args.lift, now).await
            })
        });
    match result {
        Ok(()) => {
            let what = match &target {
                Target::User(u) => format!("user {u}"),
                Target::Session { id, .. } => format!("session {id}"),
            };
            let verb = if args.lift {
                "lifted revocation of"
            } else {
                "revoked"
            };
            let bound = redis
                .revocation_poll
                .map(|d| format!("within {}", humantime::format_duration(d)))
                .unwrap_or_else(|| "never: redis.revocation_poll is 0s".into());
            println!(
                "{verb} {what} of tenant {}; every instance applies it {bound} (plus a Redis round trip)",
                args.tenant
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: redis: {e}");
            ExitCode::from(1)
        }
    }
}

/// A new service token and its config line. Only the hash goes in the
/// config; the token is shown this once.
fn service_token() -> ExitCode {
    match stream_gateway::service::new_token() {
        Ok((token, hash)) => {
            println!("{token}");
            println!("token_sha256 = \"{hash}\"");
            eprintln!(
                "note: the first line is the token (shown once: give it to the backend, which sends it with Stream-Auth-Type: service); paste the second line into its [[tenants.services]] entry"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The `jti` of a JWT, read without verifying (only to name it).
fn jwt_id(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("jti")?.as_str().map(str::to_string)
}

/// Log directives that keep pingora's crates at info or quieter.
const PINGORA_CAP: &str = "pingora=info,pingora_core=info,pingora_proxy=info,pingora_pool=info,pingora_http=info,pingora_timeout=info,pingora_runtime=info,pingora_error=info";

fn run(path: Option<PathBuf>, flags: RunFlags) -> ExitCode {
    let settings = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // `[log]`: RUST_LOG wins over `level` when set. pingora's own debug and
    // trace lines print whole request headers (the minted Stream token
    // included), so its crates are always capped at info.
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},{PINGORA_CAP}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{PINGORA_CAP}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log.json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    for n in &settings.notices {
        tracing::warn!("{n}");
    }
    let listen = settings.server.listen;
    let scheme = match (&settings.server.tls, settings.server.h2c) {
        (Some(t), _) if t.h2 => "https (h2, http/1.1)",
        (Some(_), _) => "https (http/1.1)",
        (None, true) => "http (http/1.1, h2c)",
        (None, false) => "http (http/1.1)",
    };
    let server = match server::build(settings, flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%listen, scheme, "stream-gateway starting");
    server.run_forever()
}
