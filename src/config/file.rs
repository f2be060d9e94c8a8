//! The user-facing config file, exactly as serde reads it from TOML.
//!
//! These structs only describe the file's shape (`deny_unknown_fields`
//! everywhere, humantime durations, defaults as named constants). Checking
//! values and resolving secrets happens in `validate.rs`, which turns them into
//! the runtime types in `mod.rs`. See `config/gateway.toml` for every key.

use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_THREADS: usize = 1;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longer than Stream's ~30 s health-check period plus the SDK's 10 s grace.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_STREAM_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_USER_ID_CLAIM: &str = "sub";
pub const DEFAULT_TOKEN_CACHE_SIZE: u64 = 100_000;
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
pub const DEFAULT_REVOCATION_POLL: Duration = Duration::from_secs(1);
/// Lease of a socket's entry in the fleet-wide websocket counts; renewed
/// every third of it.
pub const DEFAULT_CONNECTION_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_SESSION_CACHE_TTL: Duration = Duration::from_secs(2);
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub const DEFAULT_JWKS_REFRESH_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    pub redis: Option<RedisSection>,
    pub audit: Option<AuditSection>,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub admin_listen: Option<String>,
    pub threads: Option<usize>,
    #[serde(default)]
    pub work_stealing: bool,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub graceful_shutdown_timeout: Option<Duration>,
    /// Longest request target (path and query) taken, in bytes (414 over it).
    pub max_uri_bytes: Option<usize>,
    /// Most request header bytes (names + values) taken (431 over it).
    pub max_header_bytes: Option<usize>,
    /// Most request header fields taken (431 over it).
    pub max_headers: Option<usize>,
    /// Longest wait for each read of a client's request body.
    #[serde(default, with = "humantime_serde")]
    pub client_body_timeout: Option<Duration>,
    /// Longest time a new connection takes to send its whole first request
    /// head (slow-header clients are cut off).
    #[serde(default, with = "humantime_serde")]
    pub client_header_timeout: Option<Duration>,
    /// TLS on `listen` (HTTPS, with HTTP/2 by ALPN).
    pub tls: Option<TlsSection>,
    /// Cleartext HTTP/2 (prior knowledge) on a plain `listen`.
    #[serde(default)]
    pub h2c: bool,
    /// The gateway's own HTTP/1.1 loop for plain bodiless requests
    /// (`proxy/fast.rs`); default true.
    pub fast_path: Option<bool>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the
    /// client (`client_ip.rs`); default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[server.tls]`: the default certificate, and more chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM chain, server certificate first (`file:PATH`).
    pub cert: String,
    /// PEM private key (`file:PATH` or `env:NAME`).
    pub key: String,
    /// Offer HTTP/2 in ALPN (default true).
    pub h2: Option<bool>,
    #[serde(default)]
    pub sni: Vec<SniSection>,
}

/// `[[server.tls.sni]]`: a certificate served to the listed host names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniSection {
    /// `"chat.acme.example"`, `"*.acme.example"`, or a list of them.
    pub hosts: StringOrList,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub url: String,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub websocket_idle_timeout: Option<Duration>,
    /// PEM CA bundle trusted for an https:// upstream instead of the
    /// system's roots (`file:PATH`).
    pub ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub unknown_routes: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub server_only_fields: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_inspected_body: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub id: String,
    pub api_key: String,
    pub api_secret: String,
    #[serde(default, with = "humantime_serde")]
    pub stream_token_ttl: Option<Duration>,
    #[serde(default)]
    pub allow_anonymous: bool,
    pub close_on_session_expiry: Option<bool>,
    /// Web origins allowed to call through the gateway from a browser (CORS).
    pub allowed_origins: Option<Vec<String>>,
    pub token_cache_size: Option<u64>,
    pub session: Option<SessionSection>,
    pub limits: Option<LimitsSection>,
    pub quota: Option<QuotaSection>,
    /// `[[tenants.services]]`: trusted backends with server-side tokens.
    #[serde(default)]
    pub services: Vec<ServiceSection>,
}

/// One `[[tenants.services]]`: a service account. Its credential is
/// `token_sha256` (a random token, stored as its hash) or `jwt_claim` +
/// `jwt_value` (a JWT of the tenant's jwt/jwks session verifier); exactly
/// one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: String,
    pub token_sha256: Option<String>,
    pub jwt_claim: Option<String>,
    pub jwt_value: Option<String>,
    /// With `jwt_claim`: `sub` must also equal this.
    pub subject: Option<String>,
    /// Operation names, `"METHOD /path/{x}"` from the route table, or `"*"`.
    #[serde(default)]
    pub operations: Vec<String>,
    pub limits: Option<RateSection>,
    pub quota: Option<ServiceQuotaSection>,
}

/// A service's own windows of the shared quota (needs `[redis]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuotaSection {
    pub requests_per_minute: Option<u64>,
    pub requests_per_day: Option<u64>,
}

/// One `[tenants.session]`; `type` picks the variant.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SessionSection {
    Jwt(JwtSection),
    Jwks(JwksSection),
    Redis(RedisSessionSection),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub secret: Option<String>,
    pub public_key: Option<String>,
    pub user_id_claim: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<StringOrList>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    pub tenant_claim: Option<String>,
    pub cookie: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
}

/// `type = "jwks"`: tokens of an identity provider, keys from its JWKS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSection {
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<StringOrList>,
    /// `false` accepts tokens of any issuer (explicit opt-out).
    pub verify_issuer: Option<bool>,
    /// `false` accepts tokens for any audience (explicit opt-out).
    pub verify_audience: Option<bool>,
    pub user_id_claim: Option<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_cooldown: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub fetch_timeout: Option<Duration>,
    pub tenant_claim: Option<String>,
    pub cookie: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
}

/// `type = "redis"`: opaque session ids the app keeps in Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSessionSection {
    pub key: Option<String>,
    pub user_id_field: Option<String>,
    pub ttl_is_expiry: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    pub tenant_claim: Option<String>,
    pub cookie: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub per_user: Option<RateSection>,
    pub per_ip: Option<RateSection>,
    pub per_tenant: Option<RateSection>,
    pub max_connections_per_user: Option<u32>,
    pub max_connections: Option<u32>,
    /// Where the two caps above are counted: `"local"` (this process,
    /// default) or `"fleet"` (every instance sharing `[redis]`).
    pub connection_caps: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteRateSection>,
}

/// `[[tenants.limits.routes]]`: a tighter bucket per user for some routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRateSection {
    /// An operation name (`"SendMessage"`) or `"METHOD /path/{x}"`.
    pub route: String,
    pub rate: String,
    pub burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    pub rate: String,
    pub burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    pub requests_per_minute: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub user_requests_per_minute: Option<u64>,
    pub user_requests_per_day: Option<u64>,
    /// Requests each instance takes from the tenant's counters at a time.
    pub lease: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `"single"` (default), `"sentinel"` or `"cluster"`.
    pub mode: Option<String>,
    /// single: the server. cluster: one seed node (or use `nodes`).
    /// sentinel: only the master's credentials and db.
    pub url: Option<String>,
    /// cluster: seed node URLs.
    pub nodes: Option<Vec<String>>,
    /// sentinel: sentinel URLs.
    pub sentinels: Option<Vec<String>>,
    /// sentinel: the name the sentinels monitor the master under.
    pub master_name: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub on_redis_error: Option<String>,
    /// How often each instance reads the revocation list (`0s`: never).
    #[serde(default, with = "humantime_serde")]
    pub revocation_poll: Option<Duration>,
    /// Lease of a socket in the fleet-wide websocket counts.
    #[serde(default, with = "humantime_serde")]
    pub connection_lease: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub sink: String,
    pub path: Option<String>,
    pub max_file_bytes: Option<u64>,
    pub keep_files: Option<u32>,
    pub stream: Option<String>,
    pub stream_maxlen: Option<u64>,
    pub queue_size: Option<usize>,
    pub on_full: Option<String>,
    pub batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}
