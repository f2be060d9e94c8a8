//! Tenants: one Stream app each (key, secret, session source, token cache),
//! looked up by the `api_key` the client sends.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::TenantSettings;
use crate::connections::ConnectionLimits;
use crate::limits::LocalLimits;
use crate::session::CachedVerifier;
use crate::stream_token::TokenMinter;

pub struct Tenant {
    pub id: String,
    pub api_key: String,
    pub allow_anonymous: bool,
    pub close_on_session_expiry: bool,
    pub session: Option<CachedVerifier>,
    pub minter: TokenMinter,
    pub connections: Arc<ConnectionLimits>,
    pub limits: LocalLimits,
    pub quota: crate::quota::Quota,
}

pub struct Tenants {
    by_key: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    pub fn new(settings: Vec<TenantSettings>) -> Tenants {
        let by_key = settings
            .into_iter()
            .map(|t| {
                let tenant = Tenant {
                    minter: TokenMinter::new(&t.api_secret, t.stream_token_ttl, t.token_cache_size),
                    connections: ConnectionLimits::new(
                        t.max_connections_per_user,
                        t.max_connections,
                    ),
                    limits: t.route_limits.into_iter().fold(
                        LocalLimits::new(t.per_user, t.per_ip, t.per_tenant),
                        |l, (sel, rate)| l.with_route(sel, rate),
                    ),
                    quota: t.quota,
                    id: t.id,
                    api_key: t.api_key.clone(),
                    allow_anonymous: t.allow_anonymous,
                    close_on_session_expiry: t.close_on_session_expiry,
                    session: t
                        .session
                        .map(|v| CachedVerifier::new(v, t.token_cache_size)),
                };
                (t.api_key, Arc::new(tenant))
            })
            .collect();
        Tenants { by_key }
    }

    pub fn by_api_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_key.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_key.values()
    }
}
