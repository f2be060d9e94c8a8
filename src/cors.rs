//! CORS for browser apps: a tenant lists the web origins that may call it
//! (`allowed_origins`, exact `scheme://host[:port]`). The gateway answers
//! preflight `OPTIONS` itself (never forwarded), adds
//! `Access-Control-Allow-Origin` and `Vary: Origin` to every answer for an
//! allowed origin (refusals included, so the SDK can read a code 40 and
//! refresh its token), and refuses requests, preflights and websocket
//! upgrades from any other origin (403, code 17). A tenant without
//! `allowed_origins` gets no CORS headers and no Origin check.

use http::HeaderValue;

use crate::headers::RequestHeaders;

use crate::tenant::Tenant;

/// Methods the Stream SDKs use.
pub const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers the Stream SDKs send (plus the request id).
pub const ALLOW_HEADERS: &str =
    "authorization, stream-auth-type, x-stream-client, x-client-request-id, content-type, x-request-id";
/// Response headers a browser app may read.
pub const EXPOSE_HEADERS: &str =
    "x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after";
/// How long a browser may cache a preflight answer (seconds).
pub const MAX_AGE: &str = "600";

/// What CORS says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin`, or the tenant does not do CORS (or is unknown).
    Off,
    /// An allowed origin: echo it; `credentials` when the tenant takes
    /// session cookies.
    Allowed {
        origin: HeaderValue,
        credentials: bool,
    },
    /// An origin the tenant does not list.
    Refused,
}

/// Checks the request's `Origin` against the tenant's list.
pub fn check(tenant: Option<&Tenant>, headers: &impl RequestHeaders) -> Cors {
    let Some(t) = tenant.filter(|t| !t.allowed_origins.is_empty()) else {
        return Cors::Off;
    };
    let mut origins = headers.all("origin");
    match (origins.next(), origins.next()) {
        (None, _) => Cors::Off,
        (Some(o), None) if t.allowed_origins.iter().any(|a| a.as_bytes() == o) => {
            match HeaderValue::from_bytes(o) {
                Ok(origin) => Cors::Allowed {
                    origin,
                    credentials: t.cookie.is_some(),
                },
                Err(_) => Cors::Refused,
            }
        }
        _ => Cors::Refused,
    }
}

/// A CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
pub fn is_preflight(method: &http::Method, headers: &impl RequestHeaders) -> bool {
    method == http::Method::OPTIONS && headers.contains("access-control-request-method")
}

/// The headers an allowed origin's answers carry, as (name, value) pairs.
/// `preflight` adds the allowed methods and headers and the cache time.
pub fn headers(
    origin: &HeaderValue,
    credentials: bool,
    preflight: bool,
) -> Vec<(&'static str, HeaderValue)> {
    let mut out = vec![
        ("access-control-allow-origin", origin.clone()),
        ("vary", HeaderValue::from_static("Origin")),
    ];
    if credentials {
        out.push((
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        ));
    }
    if preflight {
        out.push((
            "access-control-allow-methods",
            HeaderValue::from_static(ALLOW_METHODS),
        ));
        out.push((
            "access-control-allow-headers",
            HeaderValue::from_static(ALLOW_HEADERS),
        ));
        out.push(("access-control-max-age", HeaderValue::from_static(MAX_AGE)));
    } else {
        out.push((
            "access-control-expose-headers",
            HeaderValue::from_static(EXPOSE_HEADERS),
        ));
    }
    out
}
