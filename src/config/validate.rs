//! Turns the parsed file into runtime [`Settings`], collecting every problem
//! as one line (`tenants[acme].session.algorithms: ...`) instead of stopping
//! at the first. Messages name keys, variables and files, never values of
//! secrets.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use super::file::{self, FileConfig, SessionSection, TenantSection};
use super::secret::resolve;
use super::{
    ConfigErrors, ServerSettings, SessionSettings, Settings, TenantSettings, UpstreamSettings,
};
use crate::policy::{Policy, Rule, UnknownRoutes};

mod limits;
use limits::rate;
mod certs;
mod endpoints;
use endpoints::{server, upstream};
mod redis_section;
mod services;
mod session;
#[cfg(test)]
mod tests;

struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }
}

pub(super) fn validate(raw: FileConfig, base_dir: &Path) -> Result<Settings, ConfigErrors> {
    let mut p = Problems(Vec::new());
    let notices = Vec::new();

    let server = server(&raw.server, base_dir, &mut p);
    let upstream = upstream(&raw.upstream, base_dir, &mut p);
    let policy = policy(&raw.policy, &mut p);
    let body = policy
        .as_ref()
        .map(|pol| body_policy(&raw.policy, pol, &mut p));

    if raw.tenants.is_empty() {
        p.add("tenants: at least one [[tenants]] is required");
    }
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.into_iter().enumerate() {
        let name = if t.id.is_empty() {
            format!("tenants[{i}]")
        } else {
            format!("tenants[{}]", t.id)
        };
        if t.id.is_empty() {
            p.add(format!("{name}.id: must not be empty"));
        } else if !ids.insert(t.id.clone()) {
            p.add(format!("{name}.id: duplicate tenant id"));
        }
        if t.api_key.is_empty() {
            p.add(format!("{name}.api_key: must not be empty"));
        } else if !keys.insert(t.api_key.clone()) {
            p.add(format!(
                "{name}.api_key: the same api_key is used by two tenants"
            ));
        }
        if raw.redis.is_some() && t.id.contains(['{', '}']) {
            // Redis keys carry the id as a hash tag (`sg:quota:{acme}:...`):
            // a brace would split a tenant's keys over Cluster slots.
            p.add(format!(
                "{name}.id: must not contain {{ or }} with [redis] (the id is the Redis Cluster hash tag of the tenant's keys)"
            ));
        }
        if let Some(q) = &t.quota {
            limits::quota(&name, q, raw.redis.is_some(), &mut p);
        }
        if let Some(t) = tenant(
            &name,
            t,
            base_dir,
            policy.as_ref(),
            raw.redis.is_some(),
            &mut p,
        ) {
            tenants.push(t);
        }
    }
    let redis = raw
        .redis
        .as_ref()
        .and_then(|r| redis_section::redis(r, &mut p));
    let audit = raw
        .audit
        .as_ref()
        .and_then(|a| limits::audit(a, raw.redis.is_some(), base_dir, &mut p));
    let log = limits::log(&raw.log, &mut p);

    match (server, upstream, policy, body) {
        (Some(server), Some(upstream), Some(policy), Some(body)) if p.0.is_empty() => {
            Ok(Settings {
                server,
                upstream,
                policy,
                body,
                tenants,
                redis,
                audit,
                log,
                notices,
            })
        }
        _ => Err(ConfigErrors(p.0)),
    }
}

fn body_policy(
    s: &file::PolicySection,
    policy: &Policy,
    p: &mut Problems,
) -> crate::body::BodyPolicy {
    use crate::body::{BodyPolicy, ServerOnlyMode, MAX_INSPECTED_BODY};
    let mut b = BodyPolicy::new(policy);
    b.server_only = match s.server_only_fields.as_deref() {
        None | Some("refuse") => ServerOnlyMode::Refuse,
        Some("strip") => ServerOnlyMode::Strip,
        Some("pass") => ServerOnlyMode::Pass,
        Some(_) => {
            p.add("policy.server_only_fields: must be \"refuse\", \"strip\" or \"pass\"");
            ServerOnlyMode::Refuse
        }
    };
    if let Some(n) = s.max_body_bytes {
        if n == 0 {
            p.add("policy.max_body_bytes: must be more than 0");
        }
        b.max_body_bytes = n;
    }
    if let Some(n) = s.max_inspected_body {
        if n == 0 || n > MAX_INSPECTED_BODY {
            p.add(format!(
                "policy.max_inspected_body: must be 1 to {MAX_INSPECTED_BODY} bytes"
            ));
        }
        b.max_inspected = n.min(MAX_INSPECTED_BODY);
    }
    b
}

fn policy(s: &file::PolicySection, p: &mut Problems) -> Option<Policy> {
    let unknown = match s.unknown_routes.as_deref() {
        None | Some("deny") => UnknownRoutes::Deny,
        Some("allow") => UnknownRoutes::Allow,
        Some(_) => {
            p.add("policy.unknown_routes: must be \"deny\" or \"allow\"");
            UnknownRoutes::Deny
        }
    };
    let rules = |key: &str, list: &[String], p: &mut Problems| -> Vec<Rule> {
        list.iter()
            .filter_map(|r| match Rule::from_str(r) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    p.add(format!("policy.{key}: \"{r}\": {e}"));
                    None
                }
            })
            .collect()
    };
    let allow = rules("allow", &s.allow, p);
    let deny = rules("deny", &s.deny, p);
    match Policy::new(unknown, &allow, &deny) {
        Ok(policy) => Some(policy),
        Err(first) => {
            // Policy::new stops at the first bad rule; try each alone so
            // every bad rule is reported (start-up only, the table is small).
            let before = p.0.len();
            for (key, rule, is_allow) in allow
                .iter()
                .map(|r| ("allow", r, true))
                .chain(deny.iter().map(|r| ("deny", r, false)))
            {
                let one = std::slice::from_ref(rule);
                let res = if is_allow {
                    Policy::new(unknown, one, &[])
                } else {
                    Policy::new(unknown, &[], one)
                };
                if let Err(e) = res {
                    p.add(format!("policy.{key}: {e}"));
                }
            }
            if p.0.len() == before {
                p.add(format!("policy: {first}"));
            }
            None
        }
    }
}

fn tenant(
    name: &str,
    t: TenantSection,
    base_dir: &Path,
    policy: Option<&Policy>,
    has_redis: bool,
    p: &mut Problems,
) -> Option<TenantSettings> {
    let route_limits = t
        .limits
        .as_ref()
        .map(|l| limits::route_limits(name, &l.routes, policy, p))
        .unwrap_or_default();
    let api_secret = match resolve(&t.api_secret, base_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            p.add(format!("{name}.api_secret: {e}"));
            None
        }
    };
    let allowed_origins = t.allowed_origins.clone().unwrap_or_default();
    for o in &allowed_origins {
        if let Err(e) = session::check_origin(o) {
            p.add(format!("{name}.allowed_origins: \"{o}\": {e}"));
        }
    }
    let kind = match &t.session {
        None => services::SessionKind::None,
        Some(SessionSection::Jwt(_)) => services::SessionKind::Jwt,
        Some(SessionSection::Jwks(_)) => services::SessionKind::Jwks,
        Some(SessionSection::Redis(_)) => services::SessionKind::Opaque,
    };
    let (service_settings, service_claims) =
        services::services(name, &t.services, kind, policy, has_redis, p);
    let ttl = t.stream_token_ttl.unwrap_or(file::DEFAULT_STREAM_TOKEN_TTL);
    if ttl.as_secs() < 1 {
        p.add(format!("{name}.stream_token_ttl: must be at least 1s"));
    }
    let (session, mut cookie) = match t.session {
        None if t.allow_anonymous => (None, None),
        None => {
            p.add(format!(
                "{name}.session: a [tenants.session] is required unless allow_anonymous = true"
            ));
            (None, None)
        }
        Some(SessionSection::Jwt(j)) => {
            let cookie = session::cookie(name, j.cookie.clone(), j.allowed_origins.clone(), p);
            let v = session::jwt(
                name,
                &t.id,
                j,
                base_dir,
                api_secret.as_ref(),
                service_claims,
                p,
            );
            (v.map(|v| SessionSettings::Jwt(Box::new(v))), cookie)
        }
        Some(SessionSection::Jwks(j)) => {
            let cookie = session::cookie(name, j.cookie.clone(), j.allowed_origins.clone(), p);
            let o = session::jwks(name, &t.id, j, service_claims, p);
            (o.map(|o| SessionSettings::Jwks(Box::new(o))), cookie)
        }
        Some(SessionSection::Redis(r)) => {
            if !has_redis {
                p.add(format!(
                    "{name}.session: type = \"redis\" needs a [redis] section"
                ));
            }
            let cookie = session::cookie(name, r.cookie.clone(), r.allowed_origins.clone(), p);
            let size = t.token_cache_size.unwrap_or(file::DEFAULT_TOKEN_CACHE_SIZE);
            let o = session::opaque(name, &t.id, r, size, p);
            (o.map(SessionSettings::Opaque), cookie)
        }
    };
    // Cookie sessions without origins of their own accept the tenant's CORS
    // origins (a browser app the tenant allows may carry the cookie too).
    if let Some(c) = cookie.as_mut().filter(|c| c.allowed_origins.is_empty()) {
        c.allowed_origins = allowed_origins.clone();
    }
    Some(TenantSettings {
        id: t.id,
        api_key: t.api_key,
        api_secret: api_secret?,
        stream_token_ttl: ttl,
        allow_anonymous: t.allow_anonymous,
        close_on_session_expiry: t.close_on_session_expiry.unwrap_or(true),
        token_cache_size: t.token_cache_size.unwrap_or(file::DEFAULT_TOKEN_CACHE_SIZE),
        per_user: rate(
            name,
            "per_user",
            t.limits.as_ref().and_then(|l| l.per_user.as_ref()),
            p,
        ),
        per_ip: rate(
            name,
            "per_ip",
            t.limits.as_ref().and_then(|l| l.per_ip.as_ref()),
            p,
        ),
        route_limits,
        quota: t
            .quota
            .as_ref()
            .map_or_else(Default::default, |q| crate::quota::Quota {
                per_minute: q.requests_per_minute.filter(|n| *n > 0),
                per_day: q.requests_per_day.filter(|n| *n > 0),
                user_per_minute: q.user_requests_per_minute.filter(|n| *n > 0),
                user_per_day: q.user_requests_per_day.filter(|n| *n > 0),
                lease: q.lease.unwrap_or(1),
            }),
        per_tenant: rate(
            name,
            "per_tenant",
            t.limits.as_ref().and_then(|l| l.per_tenant.as_ref()),
            p,
        ),
        max_connections_per_user: t.limits.as_ref().and_then(|l| l.max_connections_per_user),
        max_connections: t.limits.as_ref().and_then(|l| l.max_connections),
        fleet_connection_caps: limits::connection_caps(name, t.limits.as_ref(), has_redis, p),
        session,
        cookie,
        allowed_origins,
        services: service_settings,
    })
}
