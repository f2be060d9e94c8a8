//! The service-account path of the decision, without sockets: telling
//! services from users, scopes, websockets, the server token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use crate::config::{Secret, SessionSettings, TenantSettings};
use crate::exchange::{Exchange, Forward, ForwardAuth, Refused};
use crate::limits::RouteSelector;
use crate::policy::{Policy, UnknownRoutes};
use crate::refusal::Refusal;
use crate::revocation::Revocations;
use crate::service::{
    parse_hash, Scope, ServiceAuthError, ServiceCredential, ServiceQuota, ServiceSettings,
};
use crate::session::{token_hash, JwtKey, JwtOptions, JwtVerifier, ServiceClaim};
use crate::tenant::Tenants;

const NOW: u64 = 1_800_000_000;
const BILLING: &str = "sgs_billing-token";
const ADMIN: &str = "sgs_admin-token";

fn account(name: &str, credential: ServiceCredential, scope: Scope) -> ServiceSettings {
    ServiceSettings {
        name: name.into(),
        credential,
        scope,
        rate: None,
        quota: ServiceQuota::default(),
    }
}

fn hashed(token: &str) -> ServiceCredential {
    ServiceCredential::TokenSha256(parse_hash(&token_hash(token)).unwrap())
}

fn tenant(key: &str, services: Vec<ServiceSettings>, claims: Vec<ServiceClaim>) -> TenantSettings {
    TenantSettings {
        id: format!("t-{key}"),
        api_key: key.into(),
        api_secret: Secret::from_bytes(format!("stream-secret-{key}")),
        stream_token_ttl: Duration::from_secs(3600),
        allow_anonymous: false,
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
        services,
        session: Some(SessionSettings::Jwt(Box::new(
            JwtVerifier::new(JwtOptions {
                algorithms: vec![Algorithm::HS256],
                key: JwtKey::Secret(Secret::from_bytes("app-secret")),
                user_id_claim: "sub".into(),
                issuer: None,
                audience: None,
                leeway_secs: 0,
                tenant_claim: None,
                services: claims,
            })
            .unwrap(),
        ))),
    }
}

/// Tenant k1: `billing` (token, two operations), `admin` (token, "*"),
/// `idp` (a JWT with scope chat:admin); tenant k2: no services.
fn exchange(unknown: UnknownRoutes) -> Exchange {
    let k1 = tenant(
        "k1",
        vec![
            account(
                "billing",
                hashed(BILLING),
                Scope::Only(vec![
                    RouteSelector::Operation("UpdateApp".into()),
                    RouteSelector::Route {
                        method: "POST".into(),
                        template: "/channels/{a}/{b}/message".into(),
                    },
                ]),
            ),
            account("admin", hashed(ADMIN), Scope::All),
            account(
                "idp",
                ServiceCredential::Jwt,
                Scope::Only(vec![RouteSelector::Operation("GetApp".into())]),
            ),
        ],
        vec![ServiceClaim {
            service: "idp".into(),
            claim: "scope".into(),
            value: "chat:admin".into(),
            subject: None,
        }],
    );
    Exchange::new(
        Tenants::new(vec![k1, tenant("k2", Vec::new(), Vec::new())], None).unwrap(),
        Policy::new(unknown, &[], &[]).unwrap(),
        Arc::new(Revocations::new()),
    )
}

fn decide(
    x: &Exchange,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    websocket: bool,
) -> Result<Forward, Refused> {
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let fut = std::pin::pin!(x.decide_traced(method, path, query, headers, websocket, NOW));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => panic!("a service decision awaited something"),
    }
}

fn headers(token: Option<&str>, auth_type: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(t) = token {
        h.insert("authorization", HeaderValue::from_str(t).unwrap());
    }
    if let Some(a) = auth_type {
        h.insert("stream-auth-type", HeaderValue::from_str(a).unwrap());
    }
    h
}

fn service(token: &str) -> HeaderMap {
    headers(Some(token), Some("service"))
}

fn jwt(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"app-secret"),
    )
    .unwrap()
}

fn refusal(r: Result<Forward, Refused>) -> (Refusal, Option<String>) {
    match r {
        Ok(f) => panic!("forwarded {}", f.path_and_query),
        Err(r) => (r.refusal, r.service.map(|s| s.name.clone())),
    }
}

#[test]
fn a_scoped_service_gets_the_server_token_and_its_query_as_sent() {
    let x = exchange(UnknownRoutes::Deny);
    let f = decide(
        &x,
        "PATCH",
        "/app?api_key=k1&user_id=carol&authorization=sgs_billing-token&stream-auth-type=service",
        &headers(None, Some("service")),
        false,
    )
    .unwrap();
    assert_eq!(f.path_and_query, "/app?user_id=carol&api_key=k1");
    assert_eq!(&*f.operation, "UpdateApp");
    assert!(f.user_id().is_none());
    assert_eq!(f.service().map(|s| s.name.as_str()), Some("billing"));
    let token = match &f.auth {
        ForwardAuth::Service { token, .. } => Arc::clone(token),
        _ => panic!("service auth expected"),
    };
    let again = decide(
        &x,
        "POST",
        "/channels/messaging/general/message?api_key=k1",
        &service(&format!("Bearer {BILLING}")),
        false,
    )
    .unwrap();
    match &again.auth {
        ForwardAuth::Service { token: t, .. } => assert!(Arc::ptr_eq(t, &token), "cached"),
        _ => panic!("service auth expected"),
    }
}

#[test]
fn out_of_scope_routes_name_the_service() {
    let x = exchange(UnknownRoutes::Deny);
    for (m, p) in [
        ("GET", "/app?api_key=k1"),
        ("DELETE", "/channels/messaging/general?api_key=k1"),
    ] {
        assert_eq!(
            refusal(decide(&x, m, p, &service(BILLING), false)),
            (Refusal::OutOfScope, Some("billing".into())),
            "{m} {p}"
        );
    }
    // "*": client and server routes alike; unknown routes follow the policy.
    for (m, p) in [("GET", "/app"), ("PATCH", "/app"), ("DELETE", "/users/x")] {
        let f = decide(&x, m, &format!("{p}?api_key=k1"), &service(ADMIN), false);
        assert!(f.is_ok(), "{m} {p}");
    }
    assert_eq!(
        refusal(decide(
            &x,
            "GET",
            "/nope?api_key=k1",
            &service(ADMIN),
            false
        )),
        (Refusal::UnknownRoute, Some("admin".into()))
    );
    let open = exchange(UnknownRoutes::Allow);
    assert!(decide(&open, "GET", "/nope?api_key=k1", &service(ADMIN), false).is_ok());
    assert_eq!(
        refusal(decide(
            &open,
            "GET",
            "/nope?api_key=k1",
            &service(BILLING),
            false
        ))
        .0,
        Refusal::OutOfScope
    );
}

#[test]
fn services_never_get_a_socket() {
    let x = exchange(UnknownRoutes::Deny);
    let q = "/connect?api_key=k1&json=%7B%22user_id%22%3A%22x%22%7D&stream-auth-type=service";
    let h = headers(Some(ADMIN), None);
    for websocket in [true, false] {
        assert_eq!(
            refusal(decide(&x, "GET", q, &h, websocket)),
            (Refusal::ServiceWebsocket, Some("admin".into()))
        );
    }
    assert_eq!(
        refusal(decide(
            &x,
            "GET",
            "/longpoll?api_key=k1",
            &service(ADMIN),
            false
        ))
        .0,
        Refusal::ServiceWebsocket
    );
    assert!(matches!(
        refusal(decide(&x, "GET", "/app?api_key=k1", &service(ADMIN), true)).0,
        Refusal::BadRequest(_)
    ));
}

#[test]
fn mix_ups_of_services_and_users_are_refused() {
    use ServiceAuthError::*;
    let x = exchange(UnknownRoutes::Deny);
    let user = jwt(serde_json::json!({"sub": "alice", "exp": NOW + 60}));
    let idp =
        jwt(serde_json::json!({"sub": "client-1", "scope": "openid chat:admin", "exp": NOW + 60}));
    let cases: Vec<(HeaderMap, &str, Refusal)> = vec![
        // a service token without the marker (or marked anonymous / jwt)
        (
            headers(Some(BILLING), None),
            "k1",
            Refusal::ServiceAuth(Unmarked),
        ),
        (
            headers(Some(BILLING), Some("jwt")),
            "k1",
            Refusal::ServiceAuth(Unmarked),
        ),
        (
            headers(Some(BILLING), Some("anonymous")),
            "k1",
            Refusal::ServiceAuth(Unmarked),
        ),
        // the marker without a credential, or with something else
        (
            headers(None, Some("service")),
            "k1",
            Refusal::ServiceAuth(Missing),
        ),
        (service("sgs_wrong"), "k1", Refusal::ServiceAuth(Unknown)),
        (service(&user), "k1", Refusal::ServiceAuth(Unknown)),
        (service("opaque-thing"), "k1", Refusal::ServiceAuth(Unknown)),
        // another tenant's service token, and a JWT where no service has one
        (service(BILLING), "k2", Refusal::ServiceAuth(Unknown)),
        (service(&idp), "k2", Refusal::ServiceAuth(Unknown)),
        // a service JWT on the user path
        (
            headers(Some(&idp), None),
            "k1",
            Refusal::ServiceAuth(UsedAsUser),
        ),
    ];
    for (h, key, want) in cases {
        let (got, service) = refusal(decide(&x, "GET", &format!("/app?api_key={key}"), &h, false));
        assert_eq!(got, want, "{h:?} {key}");
        assert_eq!(got.code(), 5);
        assert_eq!(got.status(), 401);
        assert!(service.is_none());
    }
    // The service JWT with the marker is the idp service; the user session
    // without it is a user.
    let f = decide(&x, "GET", "/app?api_key=k1", &service(&idp), false).unwrap();
    assert_eq!(f.service().map(|s| s.name.as_str()), Some("idp"));
    let f = decide(
        &x,
        "GET",
        "/app?api_key=k1",
        &headers(Some(&user), None),
        false,
    )
    .unwrap();
    assert_eq!(f.user_id(), Some("alice"));
    // An expired service JWT is expired (code 40), like any token.
    let old = jwt(serde_json::json!({"scope": ["chat:admin"], "exp": NOW - 1}));
    assert_eq!(
        refusal(decide(&x, "GET", "/app?api_key=k1", &service(&old), false)).0,
        Refusal::SessionExpired
    );
}
