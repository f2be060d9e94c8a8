//! Configuration: the file's serde shape (`file`), secret references
//! (`secret`), and validation (`validate`) into the runtime types below.
//!
//! Everything is checked before anything binds: [`load`] either returns a
//! complete [`Settings`] or every problem it found, one line each, with no
//! secret values and no text copied from the file.

pub mod file;
pub mod secret;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::policy::Policy;
use crate::session::{JwksOptions, JwtVerifier, OpaqueOptions};
pub use secret::Secret;

/// Everything the gateway needs to run, validated.
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub policy: Policy,
    pub body: crate::body::BodyPolicy,
    pub tenants: Vec<TenantSettings>,
    pub redis: Option<RedisSettings>,
    pub audit: Option<crate::audit::AuditSettings>,
    pub log: LogSettings,
    /// Things that parsed but that this build does not enforce yet; printed by
    /// `check` and logged at start so nobody believes they are active.
    pub notices: Vec<String>,
}

pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub grace_period: Option<Duration>,
    pub graceful_shutdown_timeout: Option<Duration>,
    /// Limits on what a client may send (hostile input).
    pub client: ClientLimits,
    /// TLS on `listen`; `None`: plain HTTP.
    pub tls: Option<ListenerTls>,
    /// Cleartext HTTP/2 by prior knowledge on a plain listener.
    pub h2c: bool,
    /// Plain HTTP/1.1 requests without a body served by the gateway's own
    /// loop instead of pingora's proxy loop (`proxy/fast.rs`).
    pub fast_path: bool,
    /// `trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

/// `[server.tls]`, validated: the certificates (loaded, keys checked) and
/// whether HTTP/2 is offered in ALPN.
pub struct ListenerTls {
    pub certs: crate::tls::CertSet,
    pub h2: bool,
}

/// Limits on a client's request head and body reads (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub body_timeout: Duration,
    /// Time a new plain-TCP connection has to send its whole first request
    /// head (`server/drain.rs`).
    pub header_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> ClientLimits {
        ClientLimits {
            // /connect carries up to 16 KiB of JSON, percent-encoded (up to
            // 48 KiB), in its query; `http` refuses targets over 64 KiB.
            max_uri_bytes: 56 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// `[log]`: how the gateway's own log lines (stderr) look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub json: bool,
    /// A tracing filter (`info`, `stream_gateway=debug,info`); `RUST_LOG`
    /// wins when set.
    pub level: String,
}

pub struct RedisSettings {
    /// Which deployment and where (URLs may hold passwords: never printed).
    pub target: crate::redis_conn::RedisTarget,
    /// Longest any request waits on Redis.
    pub timeout: Duration,
    pub on_error: crate::quota::OnRedisError,
    /// How often revocations are read from Redis; `None`: not at all.
    pub revocation_poll: Option<Duration>,
    /// How long a socket counts in the fleet-wide websocket caps without a
    /// heartbeat (renewed every third of it): the bound on a crashed
    /// instance's stale counts.
    pub connection_lease: Duration,
}

pub struct UpstreamSettings {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header value sent upstream (`host` or `host:port`).
    pub authority: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub websocket_idle_timeout: Duration,
    /// The CA bundle (absolute path, checked) that replaces the system's
    /// roots for the upstream's certificate; `None`: the system's roots.
    pub ca_file: Option<String>,
}

pub struct TenantSettings {
    pub id: String,
    pub api_key: String,
    pub api_secret: Secret,
    pub stream_token_ttl: Duration,
    pub allow_anonymous: bool,
    /// Close an open websocket (code-40 frame) once its session expires.
    pub close_on_session_expiry: bool,
    pub token_cache_size: u64,
    /// Local rate limits (governor buckets).
    pub per_user: Option<crate::limits::Rate>,
    pub per_ip: Option<crate::limits::Rate>,
    pub per_tenant: Option<crate::limits::Rate>,
    pub route_limits: Vec<(crate::limits::RouteSelector, crate::limits::Rate)>,
    /// Shared per-tenant quota (needs `[redis]`).
    pub quota: crate::quota::Quota,
    /// Concurrent websockets in this process, per user and per tenant.
    pub max_connections_per_user: Option<u32>,
    pub max_connections: Option<u32>,
    /// Also count those caps across every instance sharing `[redis]`
    /// (`connection_caps = "fleet"`).
    pub fleet_connection_caps: bool,
    /// `None` only for anonymous-only tenants.
    pub session: Option<SessionSettings>,
    /// Also read the session from this cookie (any session type).
    pub cookie: Option<CookieSettings>,
    /// CORS: exact web origins allowed to call from a browser; empty: no
    /// CORS headers (and no Origin check).
    pub allowed_origins: Vec<String>,
    /// Service accounts (their JWT claims are also in the session
    /// verifier's rules).
    pub services: Vec<crate::service::ServiceSettings>,
}

/// A tenant's session source, validated; built into a
/// [`crate::session::SessionSource`] once the shared Redis connection exists.
pub enum SessionSettings {
    Jwt(Box<JwtVerifier>),
    Jwks(Box<JwksOptions>),
    Opaque(OpaqueOptions),
}

/// `cookie = "sid"` and the web origins besides the gateway's own whose
/// requests may carry it (none: same-origin and non-browser clients only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    /// `scheme://host[:port]`, compared exactly with the `Origin` header.
    pub allowed_origins: Vec<String>,
}

/// Every problem found in a config file, one human-readable line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![format!(
            "cannot read config file {}: {e}",
            path.display()
        )])
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, base_dir)
}

/// Parses and validates config text; `base_dir` anchors relative `file:` paths.
pub fn parse(text: &str, base_dir: &Path) -> Result<Settings, ConfigErrors> {
    let raw: file::FileConfig = toml::from_str(text).map_err(|e| {
        // toml's Display quotes the offending line of the file, which may hold
        // a literal secret: report only the message and the position.
        let at = e
            .span()
            .map(|span| {
                let (line, col) = line_col(text, span.start);
                format!(" (line {line}, column {col})")
            })
            .unwrap_or_default();
        ConfigErrors(vec![format!(
            "config: {}{at}",
            redact_values(e.message().trim())
        )])
    })?;
    validate::validate(raw, base_dir)
}

/// serde's "invalid type/value" messages quote the offending value, which
/// may be a secret written with the wrong type (`api_secret = 1234...`):
/// keep the kinds, drop the quoted values. Other messages quote only key
/// and variant names, which are safe and useful.
fn redact_values(msg: &str) -> String {
    if !(msg.starts_with("invalid type") || msg.starts_with("invalid value")) {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push_str("<redacted>");
            }
            Some(_) => {}
            None if c == '`' || c == '"' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_do_not_echo_values() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[[tenants]]\nid = \"a\"\napi_key = \"k\"\napi_secret = 918273645546372819\n";
        let err = parse(text, Path::new(".")).err().unwrap().to_string();
        assert!(!err.contains("918273645546372819"), "{err}");
        assert!(err.contains("line 8"), "{err}");
        let err = redact_values("invalid type: string \"hunter2\", expected a boolean");
        assert_eq!(err, "invalid type: string <redacted>, expected a boolean");
        assert_eq!(redact_values("unknown field `foo`"), "unknown field `foo`");
    }
}
