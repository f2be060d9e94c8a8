//! Every refusal the gateway answers itself, and the one place that turns a
//! refusal into Stream's error JSON and an HTTP status.
//!
//! Stream's SDKs decide what to do from the body's `code` (40 makes the JS SDK
//! call its `tokenProvider` again and retry, with no retry limit), so the codes
//! here are chosen with care: only a session that verified but has expired
//! gets 40. Nothing in here ever includes a token, a cookie or a secret.

use bytes::Bytes;
use serde::Serialize;

/// Stream's documented error-code page, sent as `more_info` like Stream does.
pub const MORE_INFO: &str = "https://getstream.io/chat/docs/api_errors_response";

/// Why the gateway refused a request. Variants are named for what went wrong;
/// [`Refusal::status`] and [`Refusal::code`] map them to Stream's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `api_key`, or one no tenant has (Stream code 2).
    UnknownApiKey,
    /// No credential where one is required.
    MissingCredential,
    /// Two different credentials in one request (header and query, or repeats).
    ConflictingCredentials,
    /// Anonymous access asked for where the tenant does not allow it.
    AnonymousNotAllowed,
    /// Anonymous access asked for on a route that needs a user.
    AnonymousRouteNotAllowed,
    /// The session verified but has expired: code 40, so the SDK refreshes.
    SessionExpired,
    /// `nbf` in the future (code 41).
    SessionNotYetValid,
    /// `iat` in the future (code 42).
    SessionIssuedInFuture,
    /// Signature did not verify (code 43).
    BadSignature,
    /// Malformed token, wrong algorithm, wrong issuer/audience, bad user id (code 5).
    InvalidSession(&'static str),
    /// Server-side-only route (code 17).
    ServerRoute,
    /// A service credential on the user path, a service request without a
    /// service credential of the tenant, and the like (401, code 5).
    ServiceAuth(crate::service::ServiceAuthError),
    /// A route outside the service account's scope (code 17).
    OutOfScope,
    /// A service account asking for a websocket or a long poll (code 17):
    /// a server token has no user to connect as.
    ServiceWebsocket,
    /// The websocket `json.user_id` (or `user_details.id`) is not the
    /// session's user (code 17).
    IdentityMismatch,
    /// Route not in the table and unknown routes are denied (code 17).
    UnknownRoute,
    /// A cookie session from an origin not in `allowed_origins` (code 17).
    OriginNotAllowed,
    /// Over a local rate limit (code 9); the details feed the 429 headers.
    RateLimited(crate::limits::Limited),
    /// Over the tenant's shared quota (code 9): its limit and window end.
    QuotaExceeded { limit: u64, reset_at: u64 },
    /// Redis could not count the request and `on_redis_error = "deny"`.
    QuotaUnavailable,
    /// The session source cannot verify now: JWKS keys not loaded yet, or
    /// Redis (opaque sessions) unreachable (503).
    SessionUnavailable,
    /// Over the concurrent-websocket cap for the user or tenant (code 71).
    TooManyConnections,
    /// Fleet-wide websocket caps could not be counted (Redis failed) and
    /// `on_redis_error = "deny"` (503, code -1, like the quota's).
    ConnectionsUnavailable,
    /// Path failed normalisation (code 4).
    BadPath(String),
    /// Malformed request apart from the path (code 4).
    BadRequest(&'static str),
    /// A client request body carrying a field only server-side calls may set
    /// (code 4, naming the field).
    ServerOnlyField(String),
    /// A request body over `max_body_bytes`, or too large to inspect (413,
    /// code 22).
    PayloadTooLarge,
    /// Request target over `server.max_uri_bytes` (414, code 4).
    UriTooLong,
    /// Request headers over `server.max_header_bytes` or
    /// `server.max_headers` (431, code 24: Stream's MaxHeaderSizeExceeded).
    HeadersTooLarge(&'static str),
    /// Upstream refused the connection or failed mid-way (502).
    UpstreamUnavailable,
    /// Upstream did not answer within the configured timeout (504).
    UpstreamTimeout,
    /// Our own fault (500).
    Internal,
}

#[derive(Serialize)]
struct StreamErrorBody<'a> {
    code: i32,
    message: &'a str,
    #[serde(rename = "StatusCode")]
    status_code: u16,
    duration: &'a str,
    more_info: &'a str,
    details: [u8; 0],
}

impl Refusal {
    /// HTTP status, as Stream's docs table pairs it with the code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::UnknownApiKey
            | Refusal::MissingCredential
            | Refusal::AnonymousNotAllowed
            | Refusal::SessionExpired
            | Refusal::SessionNotYetValid
            | Refusal::SessionIssuedInFuture
            | Refusal::BadSignature
            | Refusal::InvalidSession(_)
            | Refusal::ServiceAuth(_) => 401,
            Refusal::AnonymousRouteNotAllowed
            | Refusal::ServerRoute
            | Refusal::OutOfScope
            | Refusal::ServiceWebsocket
            | Refusal::UnknownRoute
            | Refusal::OriginNotAllowed
            | Refusal::IdentityMismatch => 403,
            Refusal::ConflictingCredentials
            | Refusal::BadPath(_)
            | Refusal::BadRequest(_)
            | Refusal::ServerOnlyField(_) => 400,
            Refusal::PayloadTooLarge => 413,
            Refusal::UriTooLong => 414,
            Refusal::HeadersTooLarge(_) => 431,
            Refusal::TooManyConnections
            | Refusal::RateLimited(_)
            | Refusal::QuotaExceeded { .. } => 429,
            Refusal::QuotaUnavailable
            | Refusal::SessionUnavailable
            | Refusal::ConnectionsUnavailable => 503,
            Refusal::UpstreamUnavailable => 502,
            Refusal::UpstreamTimeout => 504,
            Refusal::Internal => 500,
        }
    }

    /// Stream error code (`code` in the body).
    pub fn code(&self) -> i32 {
        match self {
            Refusal::UnknownApiKey => 2,
            Refusal::MissingCredential
            | Refusal::AnonymousNotAllowed
            | Refusal::InvalidSession(_)
            | Refusal::ServiceAuth(_) => 5,
            Refusal::SessionExpired => 40,
            Refusal::SessionNotYetValid => 41,
            Refusal::SessionIssuedInFuture => 42,
            Refusal::BadSignature => 43,
            Refusal::AnonymousRouteNotAllowed
            | Refusal::ServerRoute
            | Refusal::OutOfScope
            | Refusal::ServiceWebsocket
            | Refusal::UnknownRoute
            | Refusal::OriginNotAllowed
            | Refusal::IdentityMismatch => 17,
            Refusal::ConflictingCredentials
            | Refusal::BadPath(_)
            | Refusal::BadRequest(_)
            | Refusal::UriTooLong
            | Refusal::ServerOnlyField(_) => 4,
            // Stream's own code for 431 (MaxHeaderSizeExceeded).
            Refusal::HeadersTooLarge(_) => 24,
            Refusal::PayloadTooLarge => 22,
            Refusal::TooManyConnections => 71,
            Refusal::RateLimited(_) | Refusal::QuotaExceeded { .. } => 9,
            Refusal::QuotaUnavailable
            | Refusal::SessionUnavailable
            | Refusal::ConnectionsUnavailable => -1,
            // 23 (RequestTimeout) is retryable in the JS SDK, like a timeout should be.
            Refusal::UpstreamTimeout => 23,
            Refusal::UpstreamUnavailable | Refusal::Internal => -1,
        }
    }

    /// Human-readable message; never carries client-supplied secrets.
    pub fn message(&self) -> String {
        match self {
            Refusal::UnknownApiKey => "api_key not found".into(),
            Refusal::MissingCredential => {
                "missing session token: send it in the Authorization header".into()
            }
            Refusal::ConflictingCredentials => {
                "conflicting credentials: more than one session token in the request".into()
            }
            Refusal::AnonymousNotAllowed => "anonymous access is not enabled for this app".into(),
            Refusal::AnonymousRouteNotAllowed => {
                "anonymous users may not call this endpoint".into()
            }
            Refusal::SessionExpired => "session token is expired, please refresh it".into(),
            Refusal::SessionNotYetValid => "session token is not valid yet (nbf)".into(),
            Refusal::SessionIssuedInFuture => "session token used before issued at (iat)".into(),
            Refusal::BadSignature => "session token signature is invalid".into(),
            Refusal::InvalidSession(why) => format!("session token is not valid: {why}"),
            Refusal::ServerRoute => {
                "this endpoint is server-side only and cannot be called through the gateway".into()
            }
            Refusal::ServiceAuth(e) => e.message().into(),
            Refusal::OutOfScope => "this endpoint is not in the service account's scope".into(),
            Refusal::ServiceWebsocket => {
                "service accounts cannot open websockets or long polls".into()
            }
            Refusal::UnknownRoute => "this endpoint is not allowed through the gateway".into(),
            Refusal::OriginNotAllowed => {
                "cookie sessions are only accepted from the app's allowed origins".into()
            }
            Refusal::IdentityMismatch => {
                "the connect payload's user does not match the session".into()
            }
            Refusal::TooManyConnections => "too many concurrent connections".into(),
            Refusal::ConnectionsUnavailable => {
                "connections cannot be counted right now, try again".into()
            }
            Refusal::QuotaExceeded { .. } => "the app's request quota is used up for now".into(),
            Refusal::QuotaUnavailable => "the quota service is unavailable, try again".into(),
            Refusal::SessionUnavailable => {
                "sessions cannot be verified right now, try again".into()
            }
            Refusal::RateLimited(_) => {
                "too many requests, check the response headers for when to retry".into()
            }
            Refusal::BadPath(why) => format!("bad request path: {why}"),
            Refusal::BadRequest(why) => format!("bad request: {why}"),
            Refusal::UriTooLong => "request URI too long".into(),
            Refusal::HeadersTooLarge(why) => format!("request headers too large: {why}"),
            Refusal::ServerOnlyField(field) => {
                format!("bad request: the field \"{field}\" can only be set by server-side calls")
            }
            Refusal::PayloadTooLarge => "request body too large".into(),
            Refusal::UpstreamUnavailable => "upstream Stream API is unavailable".into(),
            Refusal::UpstreamTimeout => "upstream Stream API did not answer in time".into(),
            Refusal::Internal => "internal gateway error".into(),
        }
    }

    /// The audit/metrics `decision` of a request refused this way.
    pub fn decision(&self) -> &'static str {
        match self {
            Refusal::ServerRoute => "refused_server_route",
            Refusal::UnknownRoute => "refused_unknown_route",
            Refusal::OutOfScope | Refusal::ServiceWebsocket => "refused_out_of_scope",
            Refusal::UnknownApiKey
            | Refusal::MissingCredential
            | Refusal::AnonymousNotAllowed
            | Refusal::AnonymousRouteNotAllowed
            | Refusal::SessionExpired
            | Refusal::SessionNotYetValid
            | Refusal::SessionIssuedInFuture
            | Refusal::BadSignature
            | Refusal::InvalidSession(_)
            | Refusal::ServiceAuth(_)
            | Refusal::SessionUnavailable
            | Refusal::OriginNotAllowed
            | Refusal::IdentityMismatch => "unauthenticated",
            Refusal::RateLimited(_)
            | Refusal::TooManyConnections
            | Refusal::ConnectionsUnavailable => "rate_limited",
            Refusal::QuotaExceeded { .. } | Refusal::QuotaUnavailable => "quota_exceeded",
            Refusal::ConflictingCredentials
            | Refusal::BadPath(_)
            | Refusal::BadRequest(_)
            | Refusal::ServerOnlyField(_)
            | Refusal::UriTooLong
            | Refusal::HeadersTooLarge(_)
            | Refusal::PayloadTooLarge => "bad_request",
            Refusal::UpstreamUnavailable | Refusal::UpstreamTimeout => "upstream_error",
            Refusal::Internal => "internal_error",
        }
    }

    /// Why a session was not accepted, as a bounded metric label; `None`
    /// for refusals that are not about the session.
    pub fn session_failure(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::MissingCredential => "missing",
            Refusal::AnonymousNotAllowed => "anonymous_not_allowed",
            Refusal::SessionExpired => "expired",
            Refusal::SessionNotYetValid => "not_yet_valid",
            Refusal::SessionIssuedInFuture => "issued_in_future",
            Refusal::BadSignature => "bad_signature",
            Refusal::SessionUnavailable => "source_unavailable",
            Refusal::OriginNotAllowed => "origin_not_allowed",
            Refusal::ServiceAuth(e) => e.reason(),
            Refusal::InvalidSession(why) => match *why {
                "malformed token" => "malformed",
                "algorithm not allowed" => "algorithm_not_allowed",
                "wrong issuer" => "wrong_issuer",
                "wrong audience" => "wrong_audience",
                "missing exp claim" => "missing_exp",
                "missing user id claim" => "missing_user_id",
                "user id not allowed by Stream" => "invalid_user_id",
                "session is for another app" => "wrong_tenant",
                "session revoked" => "revoked",
                _ => "invalid",
            },
            _ => return None,
        })
    }

    /// The JSON body in Stream's `APIError` shape.
    pub fn body(&self) -> Bytes {
        let message = self.message();
        let body = StreamErrorBody {
            code: self.code(),
            message: &message,
            status_code: self.status(),
            duration: "0.00ms",
            more_info: MORE_INFO,
            details: [],
        };
        // Serialising a struct of plain strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_streams_api_error_shape() {
        let v: serde_json::Value = serde_json::from_slice(&Refusal::SessionExpired.body()).unwrap();
        assert_eq!(v["code"], 40);
        assert_eq!(v["StatusCode"], 401);
        assert_eq!(v["duration"], "0.00ms");
        assert_eq!(v["more_info"], MORE_INFO);
        assert_eq!(v["details"], serde_json::json!([]));
        assert!(v["message"].as_str().unwrap().contains("expired"));
    }

    #[test]
    fn only_expiry_is_code_40() {
        let all = [
            Refusal::UnknownApiKey,
            Refusal::MissingCredential,
            Refusal::ConflictingCredentials,
            Refusal::AnonymousNotAllowed,
            Refusal::AnonymousRouteNotAllowed,
            Refusal::SessionNotYetValid,
            Refusal::SessionIssuedInFuture,
            Refusal::BadSignature,
            Refusal::InvalidSession("x"),
            Refusal::ServerRoute,
            Refusal::ServiceAuth(crate::service::ServiceAuthError::Unmarked),
            Refusal::ServiceAuth(crate::service::ServiceAuthError::Missing),
            Refusal::ServiceAuth(crate::service::ServiceAuthError::Unknown),
            Refusal::ServiceAuth(crate::service::ServiceAuthError::UsedAsUser),
            Refusal::OutOfScope,
            Refusal::ServiceWebsocket,
            Refusal::UnknownRoute,
            Refusal::IdentityMismatch,
            Refusal::TooManyConnections,
            Refusal::ConnectionsUnavailable,
            Refusal::QuotaExceeded {
                limit: 1,
                reset_at: 1,
            },
            Refusal::QuotaUnavailable,
            Refusal::RateLimited(crate::limits::Limited {
                limit: 1,
                retry_after_secs: 1,
                which: "per_user",
            }),
            Refusal::SessionUnavailable,
            Refusal::OriginNotAllowed,
            Refusal::ServerOnlyField("role".into()),
            Refusal::PayloadTooLarge,
            Refusal::BadPath("x".into()),
            Refusal::BadRequest("x"),
            Refusal::UpstreamUnavailable,
            Refusal::UpstreamTimeout,
            Refusal::Internal,
        ];
        for r in all {
            assert_ne!(r.code(), 40, "{r:?}");
        }
        assert_eq!(Refusal::SessionExpired.code(), 40);
    }
}
