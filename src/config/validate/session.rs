//! Validation of `[tenants.session]` of `type = "jwt"` into a verifier:
//! algorithms of one family, the key that fits them, claims settings.

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::Algorithm;

use super::super::file;
use super::super::secret::{resolve, Secret};
use super::Problems;
use crate::session::{JwtKey, JwtOptions, JwtVerifier};

pub(super) fn jwt(
    name: &str,
    j: file::JwtSection,
    base_dir: &Path,
    stream_secret: Option<&Secret>,
    p: &mut Problems,
) -> Option<JwtVerifier> {
    let key_name = format!("{name}.session");
    if j.cookie.is_some() {
        p.add(format!(
            "{key_name}.cookie: cookie sessions are not implemented in this version"
        ));
    }
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
    };
    match JwtVerifier::new(opts) {
        Ok(v) => Some(v),
        Err(e) => {
            p.add(format!("{key_name}: {e}"));
            None
        }
    }
}
