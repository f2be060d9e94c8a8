//! stream-gateway: a reverse proxy and auth gateway for the Stream Chat API.
//!
//! Front-end apps send their own session; the gateway verifies it, checks the
//! route against Stream's route table, and forwards the request with a
//! short-lived per-user Stream JWT minted with the tenant's secret.
//!
//! # Layout
//! - [`config`]: the TOML file's shape, secret references, validation into
//!   runtime settings.
//! - [`policy`]: path normalisation and the route table compiled from
//!   Stream's specs (`src/policy/data/`), with config overrides.
//! - [`session`]: session sources (static-key JWT, JWKS, opaque ids in
//!   Redis), the verified-session cache, Stream's user-id rules.
//! - [`credential`]: finding the client's token (header, query, Bearer,
//!   session cookie with its origin check).
//! - [`revocation`]: revoked users/sessions (Redis, polled) and the registry
//!   of open sockets that closes revoked or expired ones.
//! - [`redis_conn`]: the shared Redis connection with its per-call timeout.
//! - [`query`]: query-string parsing and the parameter swap.
//! - [`stream_token`]: minting and caching per-user Stream tokens, and the
//!   tenant's server-side token for service accounts.
//! - [`service`]: service accounts (trusted backends): telling them from
//!   users (marker, token prefix), their tokens, scopes, `service-token`.
//! - [`tenant`]: tenants by `api_key`.
//! - [`limits`]: local rate limits (governor) per user, IP and tenant.
//! - [`quota`]: per-tenant quotas shared through Redis.
//! - [`connections`]: concurrent websocket caps (per user, per tenant), in
//!   this process or fleet-wide through Redis (`connections::fleet`).
//! - [`exchange`]: the per-request decision, free of pingora, and the
//!   reloadable routing (tenants + policy + body policy).
//! - [`cors`]: per-tenant allowed origins, preflights.
//! - [`body`]: body size cap and server-only fields (table derived from
//!   Stream's specs).
//! - [`audit`]: audit records, bounded queue, stdout/file/Redis sinks.
//! - [`clock`]: coarse clocks for deadlines and seconds, the `Date` value.
//! - [`metrics`]: the Prometheus registry served on `/metrics`.
//! - [`refusal`]: refusals and Stream's error JSON (the one place).
//! - [`proxy`]: the pingora `ProxyHttp` implementation.
//! - [`tls`]: the client listener's certificates (PEM loading, SNI
//!   selection, reload) and the upstream CA bundle check.
//! - [`upstream`]: the upstream peer, TLS, timeouts, DNS refresh, the
//!   kill-switch stream of websocket connections.
//! - [`websocket`]: `/connect` payload checks and Stream-style socket refusals.
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`server`]: assembling the pingora server from settings; background
//!   services (JWKS refresh, revocation poll, socket sweep, audit writer,
//!   SIGHUP reload).

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod body;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod connections;
pub mod cors;
pub mod credential;
pub mod exchange;
pub mod headers;
pub mod ip_text;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod query;
pub mod quota;
pub mod redis_conn;
pub mod refusal;
pub mod revocation;
pub mod server;
pub mod service;
pub mod session;
pub mod stream_token;
pub mod tenant;
pub mod tls;
pub mod upstream;
pub mod websocket;
