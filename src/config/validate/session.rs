//! Validation of `[tenants.session]`: `type = "jwt"` into a verifier
//! (algorithms of one family, the key that fits them, claims settings),
//! `type = "redis"` into opaque-session options, and the session cookie.

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::Algorithm;

use super::super::file;
use super::super::secret::{resolve, Secret};
use super::super::CookieSettings;
use super::Problems;
use crate::session::{
    ClaimRules, JwksOptions, JwtKey, JwtOptions, JwtVerifier, KeyTemplate, OpaqueOptions,
    ServiceClaim,
};

pub(super) fn jwt(
    name: &str,
    tenant_id: &str,
    j: file::JwtSection,
    base_dir: &Path,
    stream_secret: Option<&Secret>,
    services: Vec<ServiceClaim>,
    p: &mut Problems,
) -> Option<JwtVerifier> {
    let key_name = format!("{name}.session");
    let mut algorithms = Vec::new();
    if j.algorithms.is_empty() {
        p.add(format!(
            "{key_name}.algorithms: list at least one algorithm, e.g. [\"HS256\"]"
        ));
    }
    for a in &j.algorithms {
        if a.eq_ignore_ascii_case("none") {
            p.add(format!("{key_name}.algorithms: \"none\" is never allowed"));
            continue;
        }
        match Algorithm::from_str(a) {
            Ok(alg) => algorithms.push(alg),
            Err(_) => p.add(format!("{key_name}.algorithms: unknown algorithm \"{a}\"")),
        }
    }
    let key = match (&j.secret, &j.public_key) {
        (Some(s), None) => match resolve(s, base_dir) {
            // With the Stream secret as session key, any Stream token (leaked
            // from elsewhere) would pass as a session: refuse the setup.
            Ok(s) if stream_secret.is_some_and(|st| st.ct_eq(&s)) => {
                p.add(format!(
                    "{key_name}.secret: must differ from the tenant's api_secret"
                ));
                None
            }
            Ok(s) => Some(JwtKey::Secret(s)),
            Err(e) => {
                p.add(format!("{key_name}.secret: {e}"));
                None
            }
        },
        (None, Some(k)) => match resolve(k, base_dir) {
            Ok(s) => Some(JwtKey::PublicPem(s.expose().to_vec())),
            Err(e) => {
                p.add(format!("{key_name}.public_key: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            p.add(format!(
                "{key_name}: set either secret or public_key, not both"
            ));
            None
        }
        (None, None) => {
            p.add(format!(
                "{key_name}: set secret (HS*) or public_key (RS*, PS*, ES*, EdDSA)"
            ));
            None
        }
    };
    let user_id_claim = j
        .user_id_claim
        .unwrap_or_else(|| file::DEFAULT_USER_ID_CLAIM.into());
    if user_id_claim.is_empty() {
        p.add(format!("{key_name}.user_id_claim: must not be empty"));
    }
    let audience = j.audience.map(file::StringOrList::into_vec);
    if audience
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.iter().any(String::is_empty))
    {
        p.add(format!("{key_name}.audience: must not be empty"));
    }
    if j.issuer.as_deref() == Some("") {
        p.add(format!("{key_name}.issuer: must not be empty"));
    }
    if algorithms.is_empty() || algorithms.len() != j.algorithms.len() {
        return None;
    }
    let opts = JwtOptions {
        algorithms,
        key: key?,
        user_id_claim,
        issuer: j.issuer,
        audience,
        leeway_secs: j.leeway.map_or(0, |d| d.as_secs()),
        tenant_claim: tenant_claim(&key_name, j.tenant_claim, tenant_id, p),
        services,
    };
    match JwtVerifier::new(opts) {
        Ok(v) => Some(v),
        Err(e) => {
            p.add(format!("{key_name}: {e}"));
            None
        }
    }
}

/// `tenant_claim = "tenant"`: sessions must carry that claim, equal to the
/// tenant's `id`.
fn tenant_claim(
    key_name: &str,
    claim: Option<String>,
    tenant_id: &str,
    p: &mut Problems,
) -> Option<(String, String)> {
    let claim = claim?;
    if claim.is_empty() {
        p.add(format!("{key_name}.tenant_claim: must not be empty"));
        return None;
    }
    Some((claim, tenant_id.to_string()))
}

/// `type = "redis"`: key template, value format, expiry and cache.
pub(super) fn opaque(
    name: &str,
    tenant_id: &str,
    r: file::RedisSessionSection,
    cache_size: u64,
    p: &mut Problems,
) -> Option<OpaqueOptions> {
    let key_name = format!("{name}.session");
    let key = match r.key.as_deref().map(KeyTemplate::parse) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            p.add(format!("{key_name}.key: {e}"));
            None
        }
        None => {
            p.add(format!(
                "{key_name}.key: required for type = \"redis\", e.g. \"session:{{token}}\""
            ));
            None
        }
    };
    let path = |key: &str, v: &str, p: &mut Problems| -> Option<Vec<String>> {
        let parts: Vec<String> = v.split('.').map(String::from).collect();
        if parts.iter().any(String::is_empty) {
            p.add(format!(
                "{key_name}.{key}: a dotted field path such as \"user.id\""
            ));
            return None;
        }
        Some(parts)
    };
    let user_id_field = match r.user_id_field.as_deref() {
        Some(f) => Some(path("user_id_field", f, p)?),
        None => None,
    };
    let tenant_field = match r.tenant_claim.as_deref() {
        Some(_) if user_id_field.is_none() => {
            p.add(format!(
                "{key_name}.tenant_claim: needs JSON session values (set user_id_field)"
            ));
            None
        }
        Some(f) => Some((path("tenant_claim", f, p)?, tenant_id.to_string())),
        None => None,
    };
    Some(OpaqueOptions {
        key: key?,
        user_id_field,
        tenant_field,
        ttl_is_expiry: r.ttl_is_expiry.unwrap_or(true),
        cache_ttl: r.cache_ttl.unwrap_or(file::DEFAULT_SESSION_CACHE_TTL),
        cache_size,
    })
}

/// `cookie = "sid"`: the cookie name must be a cookie token; the optional
/// `allowed_origins` (exact `scheme://host[:port]` values, no wildcard) are
/// the other web origins whose requests may carry the cookie (without them,
/// the tenant's CORS `allowed_origins`; with neither, only the gateway's own
/// origin and non-browser clients: `credential::check_cookie_origin`).
pub(super) fn cookie(
    name: &str,
    cookie: Option<String>,
    origins: Option<Vec<String>>,
    p: &mut Problems,
) -> Option<CookieSettings> {
    let key_name = format!("{name}.session");
    let Some(cookie) = cookie else {
        if origins.is_some() {
            p.add(format!(
                "{key_name}.allowed_origins: only used with cookie = \"...\""
            ));
        }
        return None;
    };
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if cookie.is_empty() || !cookie.chars().all(token_char) {
        p.add(format!(
            "{key_name}.cookie: not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"
        ));
        return None;
    }
    let origins = origins.unwrap_or_default();
    let mut ok = true;
    for o in &origins {
        if let Err(e) = check_origin(o) {
            p.add(format!("{key_name}.allowed_origins: \"{o}\": {e}"));
            ok = false;
        }
    }
    ok.then_some(CookieSettings {
        name: cookie,
        allowed_origins: origins,
    })
}

/// An origin as browsers send it: `http(s)://host[:port]`, nothing after.
pub(super) fn check_origin(o: &str) -> Result<(), &'static str> {
    if o == "*" || o == "null" {
        return Err("a wildcard or null origin would let any site use the cookie");
    }
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '*', ' ']) {
        return Err("must be scheme://host[:port] with no path or wildcard");
    }
    if rest.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lower case, as browsers send it");
    }
    Ok(())
}

/// `type = "jwks"`: where the keys are, asymmetric algorithms only, and
/// issuer and audience required unless explicitly turned off.
pub(super) fn jwks(
    name: &str,
    tenant_id: &str,
    j: file::JwksSection,
    services: Vec<ServiceClaim>,
    p: &mut Problems,
) -> Option<JwksOptions> {
    let key_name = format!("{name}.session");
    let before = p.0.len();
    let url_ok = |u: &str| u.starts_with("https://") || u.starts_with("http://");
    if let Some(u) = &j.jwks_url {
        if !url_ok(u) {
            p.add(format!(
                "{key_name}.jwks_url: must be an https:// or http:// URL"
            ));
        }
    }
    let issuer = j.issuer.clone().filter(|i| !i.is_empty());
    if j.jwks_url.is_none() && issuer.is_none() {
        p.add(format!(
            "{key_name}: set jwks_url, or issuer (keys found by OpenID discovery)"
        ));
    }
    if j.jwks_url.is_none() && issuer.as_deref().is_some_and(|i| !url_ok(i)) {
        p.add(format!(
            "{key_name}.issuer: discovery needs an https:// or http:// issuer URL"
        ));
    }
    let verify_issuer = j.verify_issuer.unwrap_or(true);
    if verify_issuer && issuer.is_none() {
        p.add(format!(
            "{key_name}.issuer: required for jwks sessions (or verify_issuer = false to accept tokens of any issuer)"
        ));
    }
    let audience = j.audience.map(file::StringOrList::into_vec);
    if audience
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.iter().any(String::is_empty))
    {
        p.add(format!("{key_name}.audience: must not be empty"));
    }
    let verify_audience = j.verify_audience.unwrap_or(true);
    if verify_audience && audience.is_none() {
        p.add(format!(
            "{key_name}.audience: required for jwks sessions (or verify_audience = false to accept tokens for any audience)"
        ));
    }
    let names = if j.algorithms.is_empty() {
        vec!["RS256".to_string()]
    } else {
        j.algorithms.clone()
    };
    let mut algorithms = Vec::new();
    for a in &names {
        match Algorithm::from_str(a) {
            _ if a.eq_ignore_ascii_case("none") => {
                p.add(format!("{key_name}.algorithms: \"none\" is never allowed"))
            }
            Ok(alg) if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac => p.add(format!(
                "{key_name}.algorithms: {a} is symmetric; an identity provider's keys are public (RS*, PS*, ES*, EdDSA)"
            )),
            Ok(alg) => algorithms.push(alg),
            Err(_) => p.add(format!("{key_name}.algorithms: unknown algorithm \"{a}\"")),
        }
    }
    let user_id_claim = j
        .user_id_claim
        .unwrap_or_else(|| file::DEFAULT_USER_ID_CLAIM.into());
    if user_id_claim.is_empty() {
        p.add(format!("{key_name}.user_id_claim: must not be empty"));
    }
    let refresh_interval = j
        .refresh_interval
        .unwrap_or(file::DEFAULT_JWKS_REFRESH_INTERVAL);
    if refresh_interval < std::time::Duration::from_secs(1) {
        p.add(format!("{key_name}.refresh_interval: must be at least 1s"));
    }
    let fetch_timeout = j.fetch_timeout.unwrap_or(file::DEFAULT_JWKS_FETCH_TIMEOUT);
    if fetch_timeout.is_zero() {
        p.add(format!("{key_name}.fetch_timeout: must be more than 0s"));
    }
    let tenant = tenant_claim(&key_name, j.tenant_claim, tenant_id, p);
    if p.0.len() != before {
        return None;
    }
    Some(JwksOptions {
        jwks_url: j.jwks_url,
        discovery_issuer: issuer.clone(),
        algorithms,
        rules: ClaimRules {
            user_id_claim,
            issuer: issuer.filter(|_| verify_issuer),
            audience: audience
                .filter(|_| verify_audience)
                .map(|a| a.into_iter().collect()),
            tenant,
            leeway: j.leeway.map_or(0, |d| d.as_secs()),
            services,
        },
        refresh_interval,
        refresh_cooldown: j
            .refresh_cooldown
            .unwrap_or(file::DEFAULT_JWKS_REFRESH_COOLDOWN),
        fetch_timeout,
    })
}
