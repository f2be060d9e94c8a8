//! `type = "jwks"` sessions: the app's JWT, verified with the identity
//! provider's published key set (a JWKS URL, or OpenID discovery).
//!
//! The key set lives in memory behind an [`ArcSwapOption`], so verification
//! never waits on a lock. It is replaced by a scheduled refresh ([`JwksVerifier::run`])
//! and, when a token names a `kid` the set does not have, by one on-demand
//! refresh at most every `refresh_cooldown` (shared by all requests waiting
//! for it), so tokens with made-up kids cannot make the gateway hammer the
//! provider. A failed refresh keeps the keys already loaded.
//!
//! Only asymmetric keys are ever used: `oct` (HMAC) keys in the set are
//! skipped, and a token whose header `alg` is not in the configured list is
//! refused before any key is looked up. Signatures are checked by
//! jsonwebtoken; every claim is checked by [`ClaimRules`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde_json::{Map, Value};

use super::{ClaimRules, ServiceSession, Session, SessionError};

mod http;
mod keys;
use http::{describe, display_url, parse_http_url, redirect_policy};
use keys::{parse_key_set, Key, KeySet, Lookup};

/// Largest key set or discovery document read from the provider.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// First retry delay of the initial load (capped by `refresh_interval`).
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What a JWKS session source needs, already validated by config.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// Where the key set is: a JWKS URL, or None to use OpenID discovery on `discovery_issuer`.
    pub jwks_url: Option<String>,
    /// With jwks_url None: GET {issuer without trailing slash}/.well-known/openid-configuration, take `jwks_uri`.
    pub discovery_issuer: Option<String>,
    /// Asymmetric algorithms only (RS*, PS*, ES*, EdDSA); families may be
    /// mixed, since each key carries its own type.
    pub algorithms: Vec<Algorithm>,
    pub rules: ClaimRules,
    /// Scheduled refresh.
    pub refresh_interval: Duration,
    /// Minimum gap between refreshes triggered by unknown kids.
    pub refresh_cooldown: Duration,
    /// Per HTTP fetch.
    pub fetch_timeout: Duration,
}

/// Where the key set comes from.
#[derive(Debug)]
enum Source {
    Jwks(reqwest::Url),
    Discovery { issuer: String },
}

/// Verifies session JWTs against a provider's key set. Shared via `Arc`.
pub struct JwksVerifier {
    source: Source,
    algorithms: Vec<Algorithm>,
    /// One `Validation` per allowed algorithm: jsonwebtoken wants every
    /// algorithm of a `Validation` in the key's family.
    validations: Vec<(Algorithm, Validation)>,
    rules: ClaimRules,
    refresh_interval: Duration,
    refresh_cooldown: Duration,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    /// Serialises fetches, so an older answer never overwrites a newer one.
    fetch_lock: tokio::sync::Mutex<()>,
    /// When the last refresh triggered by an unknown kid started; held while
    /// it runs, so concurrent requests share it.
    on_demand: tokio::sync::Mutex<Option<Instant>>,
    refreshes_ok: AtomicU64,
    refreshes_failed: AtomicU64,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("source", &self.source)
            .field("algorithms", &self.algorithms)
            .field("user_id_claim", &self.rules.user_id_claim)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl JwksVerifier {
    /// Builds a verifier (no network); fails with a config-style message.
    pub fn new(opts: JwksOptions) -> Result<JwksVerifier, String> {
        if opts.algorithms.is_empty() {
            return Err("algorithms must list at least one algorithm".into());
        }
        if opts
            .algorithms
            .iter()
            .any(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err("a JWKS session source takes asymmetric algorithms only (RS*, PS*, ES*, EdDSA), never HS*".into());
        }
        if opts.refresh_interval.is_zero() {
            return Err("refresh_interval must be more than zero".into());
        }
        if opts.fetch_timeout.is_zero() {
            return Err("fetch_timeout must be more than zero".into());
        }
        let source = match (&opts.jwks_url, &opts.discovery_issuer) {
            (Some(url), _) => Source::Jwks(parse_http_url(url, "jwks_url")?),
            (None, Some(issuer)) => {
                parse_http_url(issuer, "issuer")?;
                Source::Discovery {
                    issuer: issuer.trim_end_matches('/').to_string(),
                }
            }
            (None, None) => {
                return Err("a JWKS session source needs jwks_url or an issuer to discover".into())
            }
        };
        let validations = opts
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                // Claims are checked by ClaimRules with an injected clock.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.validate_aud = false;
                v.required_spec_claims = Default::default();
                (alg, v)
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(opts.fetch_timeout)
            .redirect(redirect_policy())
            .build()
            .map_err(|e| format!("cannot build the HTTP client for JWKS: {e}"))?;
        Ok(JwksVerifier {
            source,
            algorithms: opts.algorithms,
            validations,
            rules: opts.rules,
            refresh_interval: opts.refresh_interval,
            refresh_cooldown: opts.refresh_cooldown,
            client,
            keys: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
            on_demand: tokio::sync::Mutex::new(None),
            refreshes_ok: AtomicU64::new(0),
            refreshes_failed: AtomicU64::new(0),
        })
    }

    /// True once a key set has been loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Counters for metrics/tests: successful refreshes, failed refreshes.
    pub fn refresh_counts(&self) -> (u64, u64) {
        (
            self.refreshes_ok.load(Ordering::Relaxed),
            self.refreshes_failed.load(Ordering::Relaxed),
        )
    }

    /// Clock skew allowed on `exp`/`nbf`/`iat`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.rules.leeway
    }

    /// Verifies `token` at Unix time `now`. Not ready → `Unavailable`.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Session, SessionError> {
        let claims = self.decode(token).await?;
        self.rules.check(&claims, token, now)
    }

    /// Verifies `token` as a service account's credential.
    pub async fn verify_service(
        &self,
        token: &str,
        now: u64,
    ) -> Result<ServiceSession, SessionError> {
        let claims = self.decode(token).await?;
        self.rules.check_service(&claims, now)
    }

    /// The claims of a token whose algorithm, key and signature verified.
    async fn decode(&self, token: &str) -> Result<Map<String, Value>, SessionError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| SessionError::Malformed)?;
        let alg = header.alg;
        let Some(validation) = self
            .validations
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
        else {
            return Err(SessionError::AlgorithmNotAllowed);
        };
        let kid = header.kid.as_deref();
        let Some(mut set) = self.keys.load_full() else {
            return Err(SessionError::Unavailable);
        };
        let mut found = set.find(kid, alg);
        if matches!(found, Lookup::Missing) && self.refresh_for_unknown_key(set.generation).await {
            set = self.keys.load_full().ok_or(SessionError::Unavailable)?;
            found = set.find(kid, alg);
        }
        let key = match found {
            Lookup::Found(i) => &set.keys[i].key,
            Lookup::Missing | Lookup::Ambiguous => return Err(SessionError::UnknownKey),
            Lookup::WrongAlg => return Err(SessionError::AlgorithmNotAllowed),
        };
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(
            |e| match e.kind() {
                K::InvalidSignature => SessionError::BadSignature,
                K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                    SessionError::AlgorithmNotAllowed
                }
                _ => SessionError::Malformed,
            },
        )?;
        Ok(data.claims)
    }

    /// A token named a key the set (at `seen_generation`) lacks. Refreshes at
    /// most once per cooldown; requests arriving meanwhile wait for that one
    /// fetch. True when the set may have changed and is worth a second look.
    async fn refresh_for_unknown_key(&self, seen_generation: u64) -> bool {
        let mut last = self.on_demand.lock().await;
        let current = self.keys.load().as_ref().map(|s| s.generation);
        if current != Some(seen_generation) {
            // Someone refreshed while this request waited.
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < self.refresh_cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        self.refresh().await.is_ok()
    }

    /// Fetches the key set now and swaps it in. On any failure the keys
    /// already loaded stay. `Ok(number of usable keys)`.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one_at_a_time = self.fetch_lock.lock().await;
        match self.fetch_keys().await {
            Ok(keys) => {
                let n = keys.len();
                let generation = self.keys.load().as_ref().map_or(1, |s| s.generation + 1);
                self.keys
                    .store(Some(Arc::new(KeySet::new(keys, generation))));
                self.refreshes_ok.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(keys = n, "JWKS refreshed");
                Ok(n)
            }
            Err(e) => {
                self.refreshes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys already loaded");
                Err(e)
            }
        }
    }

    /// Runs forever: the first load (retrying from 1 s, doubling up to
    /// `refresh_interval`), then a refresh every `refresh_interval`.
    pub async fn run(&self) {
        let mut delay = FIRST_RETRY.min(self.refresh_interval);
        while !self.is_ready() {
            if self.refresh().await.is_err() {
                tracing::info!(retry_in = ?delay, "JWKS not loaded yet");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(self.refresh_interval);
            }
        }
        loop {
            tokio::time::sleep(self.refresh_interval).await;
            // Failures are logged by refresh(); the old keys stay.
            let _ = self.refresh().await;
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<Key>, String> {
        let url = match &self.source {
            Source::Jwks(url) => url.clone(),
            Source::Discovery { issuer } => self.discover(issuer).await?,
        };
        let body = self.get(&url).await?;
        let keys = parse_key_set(&body, &self.algorithms)
            .map_err(|e| format!("{}: {e}", display_url(&url)))?;
        if keys.is_empty() {
            return Err(format!(
                "{}: no usable signing key for the allowed algorithms",
                display_url(&url)
            ));
        }
        Ok(keys)
    }

    /// OpenID discovery: the `jwks_uri` of `{issuer}/.well-known/openid-configuration`.
    async fn discover(&self, issuer: &str) -> Result<reqwest::Url, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: Option<String>,
        }
        let url = parse_http_url(
            &format!("{issuer}/.well-known/openid-configuration"),
            "discovery URL",
        )?;
        let body = self.get(&url).await?;
        let shown = display_url(&url);
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| format!("{shown}: not an OpenID configuration: {e}"))?;
        if doc.issuer.as_deref().map(|i| i.trim_end_matches('/')) != Some(issuer) {
            return Err(format!(
                "{shown}: the document's issuer is not the configured issuer"
            ));
        }
        let jwks_uri = doc
            .jwks_uri
            .ok_or_else(|| format!("{shown}: no jwks_uri"))?;
        let jwks_uri = parse_http_url(&jwks_uri, "jwks_uri")?;
        if url.scheme() == "https" && jwks_uri.scheme() != "https" {
            return Err(format!("{shown}: jwks_uri is not https"));
        }
        Ok(jwks_uri)
    }

    /// GET `url`, 2xx only, at most [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &reqwest::Url) -> Result<Vec<u8>, String> {
        let shown = display_url(url);
        let mut resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{shown}: {}", describe(e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{shown}: HTTP {status}"));
        }
        let too_big = || format!("{shown}: response larger than {MAX_DOCUMENT_BYTES} bytes");
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{shown}: {}", describe(e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests;
