//! Validation of `[[tenants.services]]`: the name, exactly one credential
//! (`token_sha256`, or `jwt_claim` + `jwt_value` checked by the tenant's
//! jwt/jwks session verifier), the scope (every entry must name something in
//! the route table), the service's own bucket and quota windows.
//!
//! Messages name keys and services, never a hash or a claim value's secret
//! (a hash is not a secret, but there is no reason to echo it).

use std::collections::HashSet;
use std::str::FromStr;

use super::super::file;
use super::limits::rate_at;
use super::Problems;
use crate::exchange::{CONNECT_OPERATION, LONGPOLL_OPERATION};
use crate::limits::{same_shape, RouteSelector};
use crate::policy::{Policy, Rule};
use crate::service::{parse_hash, Scope, ServiceCredential, ServiceQuota, ServiceSettings};
use crate::session::ServiceClaim;

/// Longest service name (it is a metric label and part of Redis keys).
const MAX_NAME_LEN: usize = 64;

/// Which session source the tenant has: JWT service credentials need one
/// that verifies JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionKind {
    None,
    Jwt,
    Jwks,
    Opaque,
}

/// The tenant's services, and the claims of those that present JWTs (for
/// the session verifier's rules, most specific first).
pub(super) fn services(
    tenant: &str,
    list: &[file::ServiceSection],
    session: SessionKind,
    policy: Option<&Policy>,
    has_redis: bool,
    p: &mut Problems,
) -> (Vec<ServiceSettings>, Vec<ServiceClaim>) {
    let mut out = Vec::new();
    let mut claims: Vec<ServiceClaim> = Vec::new();
    let mut names = HashSet::new();
    let mut hashes: Vec<([u8; 32], String)> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let key = if s.name.is_empty() {
            format!("{tenant}.services[{i}]")
        } else {
            format!("{tenant}.services[{}]", s.name)
        };
        let before = p.0.len();
        if s.name.is_empty() {
            p.add(format!("{key}.name: must not be empty"));
        } else if s.name.len() > MAX_NAME_LEN
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            p.add(format!(
                "{key}.name: letters, digits, '_' and '-' only, at most {MAX_NAME_LEN} (it is a metric label)"
            ));
        } else if !names.insert(s.name.clone()) {
            p.add(format!("{key}.name: duplicate service name in this tenant"));
        }
        let credential = credential(&key, s, session, &mut hashes, &mut claims, p);
        let scope = scope(&key, &s.operations, policy, p);
        let rate = s
            .limits
            .as_ref()
            .and_then(|r| rate_at(&format!("{key}.limits"), r, p));
        let quota = match &s.quota {
            Some(q) => {
                if !has_redis {
                    p.add(format!("{key}.quota: shared quotas need a [redis] section"));
                }
                ServiceQuota {
                    per_minute: q.requests_per_minute.filter(|n| *n > 0),
                    per_day: q.requests_per_day.filter(|n| *n > 0),
                }
            }
            None => ServiceQuota::default(),
        };
        if p.0.len() != before {
            continue;
        }
        if let (Some(credential), Some(scope)) = (credential, scope) {
            out.push(ServiceSettings {
                name: s.name.clone(),
                credential,
                scope,
                rate,
                quota,
            });
        }
    }
    // A token that carries the claims of two services goes to the one that
    // also names its subject.
    claims.sort_by_key(|c| c.subject.is_none());
    (out, claims)
}

fn credential(
    key: &str,
    s: &file::ServiceSection,
    session: SessionKind,
    hashes: &mut Vec<([u8; 32], String)>,
    claims: &mut Vec<ServiceClaim>,
    p: &mut Problems,
) -> Option<ServiceCredential> {
    match (&s.token_sha256, &s.jwt_claim) {
        (Some(_), Some(_)) => {
            p.add(format!(
                "{key}: set either token_sha256 or jwt_claim (with jwt_value), not both"
            ));
            None
        }
        (None, None) => {
            p.add(format!(
                "{key}: set token_sha256 (the hash `stream-gateway service-token` prints) or jwt_claim + jwt_value (a JWT of the tenant's session issuer)"
            ));
            None
        }
        (Some(h), None) => {
            for (k, set) in [
                ("jwt_value", s.jwt_value.is_some()),
                ("subject", s.subject.is_some()),
            ] {
                if set {
                    p.add(format!("{key}.{k}: only used with jwt_claim"));
                }
            }
            let Some(hash) = parse_hash(h) else {
                p.add(format!(
                    "{key}.token_sha256: must be 64 hex digits (the SHA-256 of the token, as `stream-gateway service-token` prints it)"
                ));
                return None;
            };
            if let Some((_, other)) = hashes.iter().find(|(x, _)| *x == hash) {
                p.add(format!(
                    "{key}.token_sha256: the same token as service {other}"
                ));
                return None;
            }
            hashes.push((hash, s.name.clone()));
            Some(ServiceCredential::TokenSha256(hash))
        }
        (None, Some(claim)) => {
            let before = p.0.len();
            if claim.is_empty() {
                p.add(format!("{key}.jwt_claim: must not be empty"));
            }
            match s.jwt_value.as_deref() {
                None | Some("") => p.add(format!(
                    "{key}.jwt_value: required with jwt_claim (the value the claim must hold, e.g. \"chat:admin\")"
                )),
                Some(_) => {}
            }
            if s.subject.as_deref() == Some("") {
                p.add(format!("{key}.subject: must not be empty"));
            }
            if !matches!(session, SessionKind::Jwt | SessionKind::Jwks) {
                p.add(format!(
                    "{key}.jwt_claim: needs a [tenants.session] of type \"jwt\" or \"jwks\" to verify the token"
                ));
            }
            if p.0.len() != before {
                return None;
            }
            let c = ServiceClaim {
                service: s.name.clone(),
                claim: claim.clone(),
                value: s.jwt_value.clone().unwrap_or_default(),
                subject: s.subject.clone(),
            };
            if let Some(other) = claims
                .iter()
                .find(|o| o.claim == c.claim && o.value == c.value && o.subject == c.subject)
            {
                p.add(format!(
                    "{key}: the same jwt_claim, jwt_value and subject as service {}",
                    other.service
                ));
                return None;
            }
            claims.push(c);
            Some(ServiceCredential::Jwt)
        }
    }
}

fn scope(
    key: &str,
    operations: &[String],
    policy: Option<&Policy>,
    p: &mut Problems,
) -> Option<Scope> {
    let key = format!("{key}.operations");
    if operations.is_empty() {
        p.add(format!(
            "{key}: list the operations it may call (names or \"METHOD /path\" from `stream-gateway routes`), or [\"*\"]"
        ));
        return None;
    }
    if operations.iter().any(|o| o.trim() == "*") {
        if operations.len() > 1 {
            p.add(format!(
                "{key}: \"*\" already allows every route; list it alone"
            ));
            return None;
        }
        return Some(Scope::All);
    }
    let before = p.0.len();
    let routes = policy.map(|pol| pol.table().routes());
    let websocket = |op: &str| op == CONNECT_OPERATION || op == LONGPOLL_OPERATION;
    let mut list = Vec::new();
    for entry in operations {
        match Rule::from_str(entry) {
            Ok(Rule::Operation(op)) => {
                if websocket(&op) {
                    p.add(format!(
                        "{key}: \"{op}\": service accounts never open websockets or long polls"
                    ));
                } else if routes.is_some_and(|rs| !rs.iter().any(|r| *r.operation == *op)) {
                    p.add(format!("{key}: no operation \"{op}\" in the route table"));
                } else {
                    list.push(RouteSelector::Operation(op));
                }
            }
            Ok(Rule::Route { method, template }) => {
                let found: Vec<_> = routes
                    .map(|rs| {
                        rs.iter()
                            .filter(|r| r.method == method && same_shape(&r.template, &template))
                            .collect()
                    })
                    .unwrap_or_default();
                if routes.is_some() && found.is_empty() {
                    p.add(format!(
                        "{key}: no route \"{method} {template}\" in the route table"
                    ));
                } else if found.iter().any(|r| websocket(&r.operation)) {
                    p.add(format!(
                        "{key}: \"{method} {template}\": service accounts never open websockets or long polls"
                    ));
                } else {
                    list.push(RouteSelector::Route { method, template });
                }
            }
            Err(e) => p.add(format!("{key}: \"{entry}\": {e}")),
        }
    }
    (p.0.len() == before).then_some(Scope::Only(list))
}
