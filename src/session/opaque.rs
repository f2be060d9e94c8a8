//! `type = "redis"` sessions: opaque session ids that the app keeps in Redis
//! (Rails, Express, Django, Laravel), looked up by a key template such as
//! `"session:{token}"`.
//!
//! The stored value is either the user id itself, or JSON with the user id at
//! a dotted field path (`"passport.user"`); a JSON number is taken as its
//! decimal text. With `ttl_is_expiry`, the key's TTL is the session's expiry
//! (a key without TTL never expires here). An unknown key is a session that
//! ended: 401 code 40, so the SDK asks the app for a fresh one. Redis failing
//! is 503: an authentication source that cannot answer never lets anyone in.
//!
//! A short local cache (`cache_ttl`, 0 turns it off) keeps Redis off the hot
//! path; it is the bound on how long a session deleted in Redis can still be
//! used through this instance (revocations are checked on every request,
//! cached or not).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::cache::digest;
use super::{session_id, valid_user_id, Session, SessionError};
use crate::redis_conn::Redis;

/// Longest session id accepted (bytes); longer ones are malformed, not 40.
pub const MAX_SESSION_ID_LEN: usize = 512;

/// A `{token}` key template, validated by config.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    prefix: String,
    suffix: String,
}

impl KeyTemplate {
    /// `template` must contain `{token}` exactly once.
    pub fn parse(template: &str) -> Result<KeyTemplate, String> {
        match template.split_once("{token}") {
            Some((prefix, suffix)) if !suffix.contains("{token}") => Ok(KeyTemplate {
                prefix: prefix.to_string(),
                suffix: suffix.to_string(),
            }),
            Some(_) => Err("must contain {token} only once".into()),
            None => Err("must contain {token}, e.g. \"session:{token}\"".into()),
        }
    }

    pub fn key(&self, token: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + token.len() + self.suffix.len());
        k.push_str(&self.prefix);
        k.push_str(token);
        k.push_str(&self.suffix);
        k
    }
}

/// What an opaque session source does, validated by config.
#[derive(Debug, Clone)]
pub struct OpaqueOptions {
    pub key: KeyTemplate,
    /// Dotted path of the user id in a JSON value; `None`: the value is the id.
    pub user_id_field: Option<Vec<String>>,
    /// Dotted path of a field that must equal the tenant id.
    pub tenant_field: Option<(Vec<String>, String)>,
    pub ttl_is_expiry: bool,
    /// `Duration::ZERO`: every request asks Redis.
    pub cache_ttl: Duration,
    pub cache_size: u64,
}

pub struct OpaqueSessions {
    opts: OpaqueOptions,
    redis: Arc<Redis>,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Session>, ahash::RandomState>>,
}

impl OpaqueSessions {
    pub fn new(opts: OpaqueOptions, redis: Arc<Redis>) -> OpaqueSessions {
        let cache = (!opts.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(opts.cache_size)
                .time_to_live(opts.cache_ttl)
                .build_with_hasher(ahash::RandomState::new())
        });
        OpaqueSessions { opts, redis, cache }
    }

    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<Session>, SessionError> {
        if token.is_empty()
            || token.len() > MAX_SESSION_ID_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(SessionError::Malformed);
        }
        if let Some(s) = self.cache.as_ref().and_then(|c| c.get(&digest(token))) {
            if now > s.expires_at {
                return Err(SessionError::Expired);
            }
            return Ok(s);
        }
        let key = self.opts.key.key(token);
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .redis
            .call(|mut conn| async move {
                redis::pipe()
                    .get(&key)
                    .pttl(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(|why| {
                crate::metrics::redis_error("session");
                tracing::warn!(error = %why, "redis unavailable for session lookups");
                SessionError::Unavailable
            })?;
        let value = value.ok_or(SessionError::Unknown)?;
        let session = Arc::new(self.parse(&value, pttl, token, now)?);
        if let Some(c) = &self.cache {
            c.insert(digest(token), Arc::clone(&session));
        }
        Ok(session)
    }

    fn parse(
        &self,
        value: &[u8],
        pttl: i64,
        token: &str,
        now: u64,
    ) -> Result<Session, SessionError> {
        // PTTL -2: the key went away between GET and PTTL (deleted, expired).
        if pttl == -2 {
            return Err(SessionError::Unknown);
        }
        let text = std::str::from_utf8(value).map_err(|_| SessionError::Malformed)?;
        let user_id = match &self.opts.user_id_field {
            None => text.trim().to_string(),
            Some(path) => {
                let json: Value =
                    serde_json::from_str(text).map_err(|_| SessionError::Malformed)?;
                if let Some((tpath, expected)) = &self.opts.tenant_field {
                    if field(&json, tpath).as_deref() != Some(expected.as_str()) {
                        return Err(SessionError::WrongTenant);
                    }
                }
                field(&json, path).ok_or(SessionError::MissingUserId)?
            }
        };
        if user_id.is_empty() {
            return Err(SessionError::MissingUserId);
        }
        if !valid_user_id(&user_id) {
            return Err(SessionError::InvalidUserId);
        }
        // PTTL -1: no expiry.
        let expires_at = match pttl {
            ms if ms > 0 && self.opts.ttl_is_expiry => {
                now.saturating_add(u64::try_from(ms).unwrap_or(0).div_ceil(1000))
            }
            _ => u64::MAX,
        };
        Ok(Session {
            user_id,
            expires_at,
            issued_at: None,
            id: session_id(None, token),
            stream_token: Default::default(),
        })
    }
}

/// The string (or integer, as text) at a dotted path of a JSON value.
fn field(json: &Value, path: &[String]) -> Option<String> {
    let mut v = json;
    for part in path {
        v = v.get(part.as_str())?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(user_id_field: Option<&str>, ttl_is_expiry: bool) -> OpaqueSessions {
        OpaqueSessions::new(
            OpaqueOptions {
                key: KeyTemplate::parse("session:{token}").unwrap(),
                user_id_field: user_id_field.map(|f| f.split('.').map(String::from).collect()),
                tenant_field: Some((vec!["tenant".into()], "acme".into())),
                ttl_is_expiry,
                cache_ttl: Duration::ZERO,
                cache_size: 10,
            },
            Arc::new(Redis::new("redis://127.0.0.1:1", Duration::from_millis(10)).unwrap()),
        )
    }

    #[test]
    fn key_templates() {
        assert_eq!(
            KeyTemplate::parse("s:{token}:v").unwrap().key("ab"),
            "s:ab:v"
        );
        assert!(KeyTemplate::parse("session").is_err());
        assert!(KeyTemplate::parse("{token}{token}").is_err());
    }

    #[test]
    fn values_give_users_or_the_right_error() {
        let s = sessions(Some("passport.user"), true);
        let ok = s
            .parse(
                br#"{"tenant":"acme","passport":{"user":42}}"#,
                5_500,
                "t",
                100,
            )
            .unwrap();
        assert_eq!((ok.user_id.as_str(), ok.expires_at), ("42", 106));
        assert_eq!(ok.id, format!("sha256:{}", super::super::token_hash("t")));
        let cases: [(&[u8], SessionError); 5] = [
            (br#"{"tenant":"acme"}"#, SessionError::MissingUserId),
            (
                br#"{"tenant":"other","passport":{"user":"a"}}"#,
                SessionError::WrongTenant,
            ),
            (
                br#"{"tenant":"acme","passport":{"user":"a b"}}"#,
                SessionError::InvalidUserId,
            ),
            (b"not json", SessionError::Malformed),
            (
                br#"{"tenant":"acme","passport":{"user":true}}"#,
                SessionError::MissingUserId,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(
                s.parse(v, -1, "t", 100),
                Err(want),
                "{:?}",
                std::str::from_utf8(v)
            );
        }
        assert_eq!(
            s.parse(
                br#"{"tenant":"acme","passport":{"user":"a"}}"#,
                -1,
                "t",
                100
            )
            .unwrap()
            .expires_at,
            u64::MAX
        );
        assert_eq!(s.parse(b"{}", -2, "t", 100), Err(SessionError::Unknown));
    }

    #[test]
    fn plain_values_and_ttl_off() {
        let s = sessions(None, false);
        let ok = s.parse(b"alice\n", 5_000, "t", 100).unwrap();
        assert_eq!((ok.user_id.as_str(), ok.expires_at), ("alice", u64::MAX));
    }

    #[tokio::test]
    async fn malformed_ids_never_reach_redis() {
        // Redis at port 1 is unreachable: a malformed id must fail before.
        let s = sessions(None, true);
        for t in ["", "a b", "tab\there", &"x".repeat(MAX_SESSION_ID_LEN + 1)] {
            assert_eq!(
                s.verify(t, 1).await.err(),
                Some(SessionError::Malformed),
                "{t:?}"
            );
        }
        assert_eq!(
            s.verify("ok", 1).await.err(),
            Some(SessionError::Unavailable)
        );
    }
}
