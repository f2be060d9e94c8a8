//! Unit tests of the whole per-request decision, without sockets.

use super::*;
use crate::config::Secret;
use crate::policy::UnknownRoutes;
use crate::session::{JwtKey, JwtOptions, JwtVerifier};
use crate::stream_token::TokenMinter;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::future::Future;
use std::time::Duration;

const NOW: u64 = 1_800_000_000;

/// `decide` for JWT sessions, which never wait on anything: polled once.
trait DecideSync {
    fn decide_sync(
        &self,
        method: &str,
        path: &str,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        websocket: bool,
        now: u64,
    ) -> Result<Forward, Refusal>;
}

impl DecideSync for Exchange {
    fn decide_sync(
        &self,
        method: &str,
        path: &str,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        websocket: bool,
        now: u64,
    ) -> Result<Forward, Refusal> {
        let fut = std::pin::pin!(self.decide(method, path, raw_query, headers, websocket, now));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("a JWT session decision awaited something"),
        }
    }
}

fn exchange(allow_anonymous: bool) -> Exchange {
    let tenant = |key: &str, with_session: bool| crate::config::TenantSettings {
        id: format!("t-{key}"),
        api_key: key.into(),
        api_secret: Secret::from_bytes(format!("stream-secret-{key}")),
        stream_token_ttl: Duration::from_secs(3600),
        allow_anonymous,
        token_cache_size: 10,
        per_user: None,
        per_ip: None,
        per_tenant: None,
        route_limits: Vec::new(),
        quota: Default::default(),
        close_on_session_expiry: true,
        max_connections_per_user: None,
        max_connections: None,
        fleet_connection_caps: false,
        cookie: None,
        allowed_origins: Vec::new(),
        services: Vec::new(),
        session: with_session.then(|| {
            crate::config::SessionSettings::Jwt(Box::new(
                JwtVerifier::new(JwtOptions {
                    algorithms: vec![Algorithm::HS256],
                    key: JwtKey::Secret(Secret::from_bytes("app-secret")),
                    user_id_claim: "sub".into(),
                    issuer: None,
                    audience: None,
                    leeway_secs: 0,
                    tenant_claim: None,
                    services: Vec::new(),
                })
                .unwrap(),
            ))
        }),
    };
    let _ = TokenMinter::new;
    Exchange::new(
        Tenants::new(vec![tenant("k1", true), tenant("k2", true)], None).unwrap(),
        Policy::new(UnknownRoutes::Deny, &[], &[]).unwrap(),
        Arc::new(Revocations::new()),
    )
}

fn session(user: &str, exp: u64) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(b"app-secret"),
    )
    .unwrap()
}

fn auth(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_str(v).unwrap());
    h
}

#[test]
fn forwards_client_route_with_swapped_query() {
    let x = exchange(false);
    let f = x.decide_sync(
        "GET",
        "//channels/messaging/general/",
        Some("api_key=k1&user_id=mallory&authorization=x&state=true"),
        &auth(&format!("Bearer {}", session("alice", NOW + 60))),
        false,
        NOW,
    );
    // header token and a different query token conflict
    assert_eq!(f.err(), Some(Refusal::ConflictingCredentials));
    let f = x
        .decide_sync(
            "GET",
            "//channels/messaging/general/",
            Some("api_key=k1&user_id=mallory&state=true"),
            &auth(&format!("Bearer {}", session("alice", NOW + 60))),
            false,
            NOW,
        )
        .unwrap();
    assert_eq!(
        f.path_and_query,
        "/channels/messaging/general?state=true&api_key=k1&user_id=alice"
    );
    assert_eq!(f.tenant.id, "t-k1");
    assert!(matches!(f.auth, ForwardAuth::User { .. }));
    assert_eq!(f.user_id(), Some("alice"));
}

#[test]
fn refusals_in_flow_order() {
    let x = exchange(false);
    let good = auth(&session("alice", NOW + 60));
    let cases: Vec<(&str, &str, Option<&str>, HeaderMap, Refusal)> = vec![
        (
            "GET",
            "/channels",
            None,
            good.clone(),
            Refusal::UnknownApiKey,
        ),
        (
            "GET",
            "/channels",
            Some("api_key=nope"),
            good.clone(),
            Refusal::UnknownApiKey,
        ),
        (
            "GET",
            "/channels",
            Some("api_key=k1&API_KEY=k2"),
            good.clone(),
            Refusal::BadRequest("more than one api_key"),
        ),
        (
            "GET",
            "/app",
            Some("api_key=k1"),
            HeaderMap::new(),
            Refusal::MissingCredential,
        ),
        (
            "GET",
            "/app",
            Some("api_key=k1"),
            auth(&session("alice", NOW - 1)),
            Refusal::SessionExpired,
        ),
        (
            "PATCH",
            "/app",
            Some("api_key=k1"),
            good.clone(),
            Refusal::ServerRoute,
        ),
        (
            "GET",
            "/nope",
            Some("api_key=k1"),
            good.clone(),
            Refusal::UnknownRoute,
        ),
        (
            "GET",
            "/a%2Fb",
            Some("api_key=k1"),
            good.clone(),
            Refusal::BadPath("path contains an encoded slash".into()),
        ),
        (
            "GET",
            "/app",
            Some("api_key=k1;x"),
            good.clone(),
            Refusal::BadRequest("';' is not allowed in the query string"),
        ),
    ];
    for (m, p, q, h, want) in cases {
        let got = x.decide_sync(m, p, q, &h, false, NOW).err();
        match (&got, &want) {
            (Some(Refusal::BadPath(_)), Refusal::BadPath(_)) => {}
            _ => assert_eq!(got.as_ref(), Some(&want), "{m} {p} {q:?}"),
        }
    }
}

#[test]
fn anonymous_needs_tenant_opt_in_and_a_client_route() {
    let mut h = HeaderMap::new();
    h.insert("stream-auth-type", HeaderValue::from_static("anonymous"));
    let closed = exchange(false);
    assert_eq!(
        closed
            .decide_sync("GET", "/app", Some("api_key=k1"), &h, false, NOW)
            .err(),
        Some(Refusal::AnonymousNotAllowed)
    );
    let open = exchange(true);
    let f = open
        .decide_sync("GET", "/app", Some("api_key=k1&user_id=x"), &h, false, NOW)
        .unwrap();
    assert!(matches!(f.auth, ForwardAuth::Anonymous));
    assert_eq!(f.path_and_query, "/app?api_key=k1");
    assert_eq!(
        open.decide_sync("PATCH", "/app", Some("api_key=k1"), &h, false, NOW)
            .err(),
        Some(Refusal::ServerRoute)
    );
}

#[test]
fn minted_tokens_are_reused_per_user() {
    let x = exchange(false);
    let h = auth(&session("alice", NOW + 600));
    let a = x
        .decide_sync("GET", "/app", Some("api_key=k1"), &h, false, NOW)
        .unwrap();
    let b = x
        .decide_sync("GET", "/app", Some("api_key=k1"), &h, false, NOW + 5)
        .unwrap();
    match (a.auth, b.auth) {
        (ForwardAuth::User { token: t1, .. }, ForwardAuth::User { token: t2, .. }) => {
            assert!(Arc::ptr_eq(&t1, &t2))
        }
        _ => panic!("expected user auth"),
    }
}

#[test]
fn connect_binds_identity_and_moves_credentials_into_the_query() {
    let x = exchange(false);
    let token = session("alice", NOW + 60);
    let json = r#"{"user_id":"alice","user_details":{"id":"alice"},"user_token":"APP-TOKEN"}"#;
    let q = format!(
        "json={}&api_key=k1&authorization={token}&stream-auth-type=jwt&X-Stream-Client=js",
        crate::query::encode(json)
    );
    let f = x
        .decide_sync("GET", "/connect", Some(&q), &HeaderMap::new(), true, NOW)
        .unwrap();
    assert!(f.websocket);
    assert_eq!(f.session.as_ref().map(|s| s.expires_at), Some(NOW + 60));
    assert!(!f.path_and_query.contains(&token), "app token forwarded");
    assert!(
        !f.path_and_query.contains("APP-TOKEN"),
        "user_token forwarded"
    );
    let pairs = crate::query::parse(f.path_and_query.split_once('?').unwrap().1).unwrap();
    let get = |k: &str| {
        pairs
            .iter()
            .filter(|p| p.key == k)
            .map(|p| p.value.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("api_key"), ["k1"]);
    assert_eq!(get("stream-auth-type"), ["jwt"]);
    assert_eq!(get("X-Stream-Client"), ["js"]);
    let minted = match &f.auth {
        ForwardAuth::User { token, .. } => token.token().to_string(),
        _ => panic!("user expected"),
    };
    assert_eq!(get("authorization"), [minted]);
    let forwarded: serde_json::Value = serde_json::from_str(&get("json")[0]).unwrap();
    assert_eq!(
        forwarded,
        serde_json::json!({"user_id": "alice", "user_details": {"id": "alice"}})
    );

    let other = format!(
        "json={}&api_key=k1&authorization={token}",
        crate::query::encode(r#"{"user_id":"mallory"}"#)
    );
    assert_eq!(
        x.decide_sync(
            "GET",
            "/connect",
            Some(&other),
            &HeaderMap::new(),
            true,
            NOW
        )
        .err(),
        Some(Refusal::IdentityMismatch)
    );
    // upgrades anywhere else are refused
    assert_eq!(
        x.decide_sync("GET", "/app", Some("api_key=k1"), &auth(&token), true, NOW)
            .err(),
        Some(Refusal::BadRequest(
            "websocket upgrades are only allowed on /connect"
        ))
    );
}

#[test]
fn longpoll_json_is_checked_when_present() {
    let x = exchange(false);
    let token = session("alice", NOW + 60);
    let h = auth(&token);
    let json = r#"{"user_id":"alice","user_token":"APP-TOKEN"}"#;
    let q = format!("json={}&api_key=k1", crate::query::encode(json));
    let f = x
        .decide_sync("GET", "/longpoll", Some(&q), &h, false, NOW)
        .unwrap();
    assert!(!f.path_and_query.contains("APP-TOKEN"));
    let bad = format!(
        "json={}&api_key=k1",
        crate::query::encode(r#"{"user_id":"mallory"}"#)
    );
    assert_eq!(
        x.decide_sync("GET", "/api/v2/longpoll", Some(&bad), &h, false, NOW)
            .err(),
        Some(Refusal::IdentityMismatch)
    );
    // later polls carry only connection_id
    let f = x
        .decide_sync(
            "GET",
            "/longpoll",
            Some("connection_id=c1&api_key=k1"),
            &h,
            false,
            NOW,
        )
        .unwrap();
    assert_eq!(f.path_and_query, "/longpoll?connection_id=c1&api_key=k1");
}
