//! Service accounts: trusted backends of a tenant that call Stream through
//! the gateway with a server-side Stream token (`{"server": true}`), within
//! a scope of operations.
//!
//! What lives here: how a service request is told apart from a user request
//! ([`classify`]: the `Stream-Auth-Type: service` marker, the `sgs_` prefix
//! of random service tokens), the accounts of a tenant and the lookup of a
//! random token by its SHA-256 in constant time ([`Services`]), the scope
//! ([`Scope`]), and making a new token (`stream-gateway service-token`).
//!
//! What does not: verifying a service JWT (the tenant's session verifier,
//! `session::claims`), the server token (`stream_token`), the per-service
//! buckets (`limits`) and quota (`quota`), the request flow (`exchange`).
//!
//! The two kinds are never guessed from the token's shape: a service request
//! says so with the marker, and a random service token carries the prefix, so
//! a token of one kind presented as the other is refused before anything
//! verifies it (and before an opaque-session lookup could see it).

use std::sync::Arc;

use crate::credential::Credential;
use crate::limits::RouteSelector;

/// The `Stream-Auth-Type` value (header, or the `stream-auth-type` query
/// parameter) that marks a service request, next to Stream's own `jwt` and
/// `anonymous`.
pub const AUTH_TYPE: &str = "service";

/// Prefix of every random service token (`stream-gateway service-token`).
/// Reserved: a credential with it is never taken as a user session.
pub const TOKEN_PREFIX: &str = "sgs_";

/// Bytes of OS randomness in a new token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// Why a request was refused as a service, or as a user holding a service
/// credential. All answer 401, Stream code 5 (never 40: a new token of the
/// same kind would not fix a mix-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAuthError {
    /// A `sgs_` token without `Stream-Auth-Type: service`.
    Unmarked,
    /// `Stream-Auth-Type: service` without a credential.
    Missing,
    /// Marked as a service, but the credential is no service credential of
    /// this tenant (wrong token, a user session, a JWT without the claim).
    Unknown,
    /// A service JWT presented as a user session.
    UsedAsUser,
}

impl ServiceAuthError {
    pub fn message(self) -> &'static str {
        match self {
            ServiceAuthError::Unmarked => {
                "a service token (sgs_...) is only accepted with Stream-Auth-Type: service"
            }
            ServiceAuthError::Missing => {
                "Stream-Auth-Type: service needs a service credential in the Authorization header"
            }
            ServiceAuthError::Unknown => "the credential is not a service credential of this app",
            ServiceAuthError::UsedAsUser => {
                "a service credential cannot be used as a user session (send Stream-Auth-Type: service)"
            }
        }
    }

    /// Bounded metric label (`stream_gateway_session_failures_total{reason}`).
    pub fn reason(self) -> &'static str {
        match self {
            ServiceAuthError::Unmarked => "service_token_unmarked",
            ServiceAuthError::Missing => "service_missing",
            ServiceAuthError::Unknown => "service_unknown",
            ServiceAuthError::UsedAsUser => "service_as_user",
        }
    }
}

/// What a request presents, once the marker and the prefix are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// The user path (a session token, anonymous, or nothing).
    User(Credential),
    /// A service request and its credential (a `sgs_` token or a JWT).
    Service(String),
}

/// Tells the two kinds apart from the marker (`marked`) and the credential.
pub fn classify(marked: bool, credential: Credential) -> Result<Presented, ServiceAuthError> {
    match (marked, credential) {
        (true, Credential::Token(t)) => Ok(Presented::Service(t)),
        (true, Credential::Anonymous | Credential::Missing) => Err(ServiceAuthError::Missing),
        (false, Credential::Token(t)) if t.starts_with(TOKEN_PREFIX) => {
            Err(ServiceAuthError::Unmarked)
        }
        (false, c) => Ok(Presented::User(c)),
    }
}

/// Which routes a service may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `"*"`: every route of the table (client and server side), and
    /// routes unknown to the table where `[policy] unknown_routes = "allow"`.
    All,
    /// Operation names or method + template (placeholder names ignored).
    Only(Vec<RouteSelector>),
}

impl Scope {
    pub fn allows(&self, method: &str, template: &str, operation: &str) -> bool {
        match self {
            Scope::All => true,
            // A route the table does not know has no name to list.
            Scope::Only(_) if operation == crate::policy::UNKNOWN_OPERATION => false,
            Scope::Only(list) => list.iter().any(|s| s.matches(method, template, operation)),
        }
    }
}

/// How a service proves itself.
#[derive(Clone, PartialEq, Eq)]
pub enum ServiceCredential {
    /// A random token, stored as its SHA-256 only.
    TokenSha256([u8; 32]),
    /// A JWT of the tenant's session verifier carrying a claim (the claim
    /// rules live in the verifier, `session::ServiceClaim`).
    Jwt,
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceCredential::TokenSha256(_) => f.write_str("TokenSha256([redacted])"),
            ServiceCredential::Jwt => f.write_str("Jwt"),
        }
    }
}

/// A service's own windows of the shared quota (needs `[redis]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceQuota {
    pub per_minute: Option<u64>,
    pub per_day: Option<u64>,
}

/// One service account, validated.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Letters, digits, `_` and `-` (1-64): safe in metric labels and Redis keys.
    pub name: String,
    pub credential: ServiceCredential,
    pub scope: Scope,
    /// Its own bucket (`limits = { rate, burst }`).
    pub rate: Option<crate::limits::Rate>,
    pub quota: ServiceQuota,
}

/// A service account at run time.
#[derive(Debug)]
pub struct ServiceAccount {
    pub name: String,
    pub credential: ServiceCredential,
    pub scope: Scope,
    pub quota: ServiceQuota,
}

/// The service accounts of a tenant.
#[derive(Debug, Default)]
pub struct Services {
    accounts: Vec<Arc<ServiceAccount>>,
}

impl Services {
    pub fn new(settings: impl IntoIterator<Item = ServiceSettings>) -> Services {
        Services {
            accounts: settings
                .into_iter()
                .map(|s| {
                    Arc::new(ServiceAccount {
                        name: s.name,
                        credential: s.credential,
                        scope: s.scope,
                        quota: s.quota,
                    })
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<ServiceAccount>> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The account whose token hash is the SHA-256 of `token`. Every hash
    /// is compared, each in constant time, so the answer's timing says
    /// nothing about how close a guess came (or which account it was near).
    pub fn by_token(&self, token: &str) -> Option<&Arc<ServiceAccount>> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for a in &self.accounts {
            if let ServiceCredential::TokenSha256(h) = &a.credential {
                if bool::from(h.ct_eq(&digest)) && found.is_none() {
                    found = Some(a);
                }
            }
        }
        found
    }

    /// True when some account authenticates with a JWT.
    pub fn has_jwt(&self) -> bool {
        self.accounts
            .iter()
            .any(|a| a.credential == ServiceCredential::Jwt)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceAccount>> {
        self.accounts.iter()
    }
}

/// Parses `token_sha256` (64 hex digits, any case).
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// A new random service token and the SHA-256 (hex) to put in config:
/// `sgs_` + base64url (no padding) of 32 bytes of OS randomness.
pub fn new_token() -> Result<(String, String), String> {
    use base64::Engine;
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = crate::session::token_hash(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(t: &str) -> Credential {
        Credential::Token(t.into())
    }

    #[test]
    fn the_marker_and_the_prefix_decide_never_the_shape() {
        use Presented::*;
        use ServiceAuthError::*;
        let cases: Vec<(bool, Credential, Result<Presented, ServiceAuthError>)> = vec![
            (true, tok("sgs_abc"), Ok(Service("sgs_abc".into()))),
            (true, tok("a.b.c"), Ok(Service("a.b.c".into()))),
            (true, tok("opaque-id"), Ok(Service("opaque-id".into()))),
            (true, Credential::Missing, Err(Missing)),
            (true, Credential::Anonymous, Err(Missing)),
            (false, tok("sgs_abc"), Err(Unmarked)),
            (false, tok("a.b.c"), Ok(User(tok("a.b.c")))),
            (false, tok("SGS_abc"), Ok(User(tok("SGS_abc")))),
            (
                false,
                Credential::Anonymous,
                Ok(User(Credential::Anonymous)),
            ),
            (false, Credential::Missing, Ok(User(Credential::Missing))),
        ];
        for (marked, cred, want) in cases {
            assert_eq!(classify(marked, cred.clone()), want, "{marked} {cred:?}");
        }
    }

    fn route(m: &str, t: &str) -> RouteSelector {
        RouteSelector::Route {
            method: m.into(),
            template: t.into(),
        }
    }

    #[test]
    fn scope_matches_operations_and_route_shapes() {
        let s = Scope::Only(vec![
            RouteSelector::Operation("QueryChannels".into()),
            route("POST", "/channels/{a}/{b}/message"),
        ]);
        assert!(s.allows("POST", "/channels", "QueryChannels"));
        assert!(s.allows("POST", "/channels/{type}/{id}/message", "SendMessage"));
        assert!(!s.allows("GET", "/channels/{type}/{id}/message", "Other"));
        assert!(!s.allows("PATCH", "/app", "UpdateApp"));
        assert!(!s.allows("GET", "unknown", crate::policy::UNKNOWN_OPERATION));
        assert!(Scope::All.allows("PATCH", "/app", "UpdateApp"));
        assert!(Scope::All.allows("GET", "unknown", crate::policy::UNKNOWN_OPERATION));
    }

    fn services() -> Services {
        let account = |name: &str, credential| ServiceSettings {
            name: name.into(),
            credential,
            scope: Scope::All,
            rate: None,
            quota: ServiceQuota::default(),
        };
        let hash = |t: &str| parse_hash(&crate::session::token_hash(t)).unwrap();
        Services::new([
            account("billing", ServiceCredential::TokenSha256(hash("sgs_one"))),
            account("idp", ServiceCredential::Jwt),
            account("search", ServiceCredential::TokenSha256(hash("sgs_two"))),
        ])
    }

    #[test]
    fn tokens_are_found_by_their_hash_only() {
        let s = services();
        assert_eq!(
            s.by_token("sgs_one").map(|a| a.name.as_str()),
            Some("billing")
        );
        assert_eq!(
            s.by_token("sgs_two").map(|a| a.name.as_str()),
            Some("search")
        );
        assert!(s.by_token("sgs_three").is_none());
        assert!(s.by_token("").is_none());
        assert!(s.has_jwt());
        assert_eq!(s.by_name("idp").map(|a| a.name.as_str()), Some("idp"));
        let debug = format!("{:?}", s.by_name("billing").unwrap().credential);
        assert!(!debug.contains(&crate::session::token_hash("sgs_one")[..8]));
    }

    #[test]
    fn hashes_parse_from_64_hex_digits() {
        let h = crate::session::token_hash("x");
        assert_eq!(parse_hash(&h), parse_hash(&h.to_ascii_uppercase()));
        assert!(parse_hash(&h).is_some());
        assert!(parse_hash(&h[..63]).is_none());
        assert!(parse_hash(&format!("{}g", &h[..63])).is_none());
        assert!(parse_hash(&format!("{h}0")).is_none());
        assert!(parse_hash("é").is_none());
    }

    #[test]
    fn new_tokens_have_the_prefix_256_random_bits_and_their_hash() {
        use base64::Engine;
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a.strip_prefix(TOKEN_PREFIX).unwrap())
            .unwrap();
        assert_eq!(raw.len(), TOKEN_BYTES);
        assert_eq!(ha, crate::session::token_hash(&a));
        let s = Services::new([ServiceSettings {
            name: "x".into(),
            credential: ServiceCredential::TokenSha256(parse_hash(&ha).unwrap()),
            scope: Scope::All,
            rate: None,
            quota: ServiceQuota::default(),
        }]);
        assert!(s.by_token(&a).is_some());
    }
}
