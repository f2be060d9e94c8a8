//! Tenants: one Stream app each (key, secret, session source, token cache,
//! service accounts), looked up by the `api_key` the client sends.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{CookieSettings, SessionSettings, TenantSettings};
use crate::connections::ConnectionLimits;
use crate::limits::LocalLimits;
use crate::redis_conn::Redis;
use crate::session::{CachedJwks, CachedVerifier, JwksVerifier, OpaqueSessions, SessionSource};
use crate::stream_token::TokenMinter;

pub struct Tenant {
    pub id: String,
    pub api_key: String,
    pub allow_anonymous: bool,
    pub close_on_session_expiry: bool,
    pub session: Option<SessionSource>,
    /// Session cookie (with its allowed origins), when enabled.
    pub cookie: Option<CookieSettings>,
    /// CORS origins (exact); empty: CORS off.
    pub allowed_origins: Vec<String>,
    pub minter: TokenMinter,
    pub connections: Arc<ConnectionLimits>,
    /// The connection caps are also counted fleet-wide through Redis.
    pub fleet_connection_caps: bool,
    pub limits: LocalLimits,
    pub quota: crate::quota::Quota,
    /// Service accounts (trusted backends with server-side tokens).
    pub services: crate::service::Services,
}

pub struct Tenants {
    /// ahash: looked up by `api_key` on every request.
    by_key: HashMap<String, Arc<Tenant>, ahash::RandomState>,
}

impl Tenants {
    /// `redis` is the shared connection of `[redis]`; opaque sessions need it
    /// (config validation guarantees it is there when they are used).
    pub fn new(
        settings: Vec<TenantSettings>,
        redis: Option<&Arc<Redis>>,
    ) -> Result<Tenants, String> {
        let by_key = settings
            .into_iter()
            .map(|t| {
                let session = match t.session {
                    None => None,
                    Some(SessionSettings::Jwt(v)) => Some(SessionSource::Jwt(Box::new(
                        CachedVerifier::new(*v, t.token_cache_size),
                    ))),
                    Some(SessionSettings::Jwks(o)) => {
                        let v = JwksVerifier::new(*o)
                            .map_err(|e| format!("tenant {}: session: {e}", t.id))?;
                        Some(SessionSource::Jwks(Box::new(CachedJwks::new(
                            Arc::new(v),
                            t.token_cache_size,
                        ))))
                    }
                    Some(SessionSettings::Opaque(o)) => {
                        let redis = redis.ok_or_else(|| {
                            format!("tenant {}: redis sessions need [redis]", t.id)
                        })?;
                        Some(SessionSource::Opaque(Box::new(OpaqueSessions::new(
                            o,
                            Arc::clone(redis),
                        ))))
                    }
                };
                let tenant = Tenant {
                    minter: TokenMinter::new(&t.api_secret, t.stream_token_ttl, t.token_cache_size)
                        .counted(&t.id),
                    connections: ConnectionLimits::new(
                        t.max_connections_per_user,
                        t.max_connections,
                    ),
                    fleet_connection_caps: t.fleet_connection_caps,
                    limits: t
                        .services
                        .iter()
                        .filter_map(|s| s.rate.map(|r| (s.name.as_str(), r)))
                        .fold(
                            t.route_limits.into_iter().fold(
                                LocalLimits::new(t.per_user, t.per_ip, t.per_tenant),
                                |l, (sel, rate)| l.with_route(sel, rate),
                            ),
                            |l, (name, rate)| l.with_service(name, rate),
                        ),
                    services: crate::service::Services::new(t.services),
                    quota: t.quota,
                    id: t.id,
                    api_key: t.api_key.clone(),
                    allow_anonymous: t.allow_anonymous,
                    close_on_session_expiry: t.close_on_session_expiry,
                    session,
                    cookie: t.cookie,
                    allowed_origins: t.allowed_origins,
                };
                Ok((t.api_key, Arc::new(tenant)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Tenants { by_key })
    }

    pub fn by_api_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_key.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_key.values()
    }
}
