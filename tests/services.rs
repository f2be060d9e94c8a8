//! Service accounts through the built gateway: a backend marked with
//! `Stream-Auth-Type: service` reaches the server-side routes of its scope
//! with the tenant's server token (what the fake Stream checks like Stream
//! does), mix-ups of service and user credentials are refused before
//! anything reaches Stream, no websockets, the server token cache, audit
//! records, limits and metrics naming the service, `service-token`, config
//! validation.

mod common;

use std::time::Duration;

use common::fake_stream::connect_query;
use common::ws::{assert_refused, connect, urlencode};
use common::*;
use serde_json::{json, Value};
use stream_gateway::session::token_hash;

const BILLING: &str = "sgs_billing-0123456789abcdefghijklmnopqrstuv";
const OPS: &str = "sgs_ops-0123456789abcdefghijklmnopqrstuvwxyz";

/// `billing`: UpdateApp and SendMessage (`extra` appended to its table);
/// `ops`: "*".
fn services(extra: &str) -> String {
    format!(
        r#"
[[tenants.services]]
name = "billing"
token_sha256 = "{}"
operations = ["UpdateApp", "POST /channels/{{type}}/{{id}}/message"]
{extra}

[[tenants.services]]
name = "ops"
token_sha256 = "{}"
operations = ["*"]
"#,
        token_hash(BILLING),
        token_hash(OPS)
    )
}

fn setup(tenant_extra: &str, top_extra: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), tenant_extra, top_extra));
    (fake, gw)
}

fn as_service(req: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    req.header("authorization", token)
        .header("stream-auth-type", "service")
}

fn url(gw: &Gateway, path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{}{path}{sep}api_key={API_KEY}", gw.url())
}

/// The only request the upstream got.
fn only_request(fake: &FakeStream) -> Recorded {
    let reqs = fake.wait_for_requests(1, Duration::from_secs(5));
    assert_eq!(reqs.len(), 1, "upstream requests: {reqs:#?}");
    reqs.into_iter().next().unwrap()
}

/// The credential must not appear anywhere in what the upstream got.
fn assert_not_forwarded(r: &Recorded, token: &str) {
    assert!(!r.raw_query.clone().unwrap_or_default().contains(token));
    for (k, v) in &r.headers {
        assert!(
            !v.contains(token),
            "service credential leaked in header {k}"
        );
    }
    assert!(!String::from_utf8_lossy(&r.body).contains(token));
}

/// The value of the sample of `name` with all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| {
            let rest = &l[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_service_reaches_a_server_route_with_a_server_token() {
    let (fake, gw) = setup("", &services(""));
    let resp = as_service(client().patch(url(&gw, "/app?user_id=carol")), BILLING)
        .header("content-type", "application/json")
        .body(r#"{"disable_auth_checks":false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-fake-upstream"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["fake"]["auth"], "server");
    let r = only_request(&fake);
    match &r.auth {
        Ok(StreamAuth::Server { iat, exp, .. }) => {
            let (iat, exp) = (iat.unwrap(), exp.unwrap());
            assert_eq!(exp - iat, 3600, "stream_token_ttl");
            assert!((iat - now()).abs() <= 5);
        }
        other => panic!("the upstream did not take a server token: {other:?}"),
    }
    let token = r.header("authorization").unwrap();
    let claims = jwt_claims(token);
    let mut keys: Vec<_> = claims.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["exp", "iat", "server"], "no user_id: {claims}");
    assert_eq!(claims["server"], true);
    assert_eq!(r.header_all("stream-auth-type"), ["jwt"]);
    assert_eq!(r.query_all("api_key"), [API_KEY]);
    assert_eq!(
        r.query_all("user_id"),
        ["carol"],
        "a server-side call names its user"
    );
    assert_eq!(r.body, br#"{"disable_auth_checks":false}"#);
    assert_not_forwarded(&r, BILLING);

    // A client route in scope, with fields only server-side calls may set
    // (users get 400 for them): forwarded as sent.
    fake.clear();
    let sent = r#"{"message":{"text":"paid","html":"<b>paid</b>"},"user_id":"carol"}"#;
    let resp = as_service(
        client().post(url(&gw, "/channels/messaging/invoices/message")),
        &format!("Bearer {BILLING}"),
    )
    .header("content-type", "application/json")
    .body(sent)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    assert!(
        matches!(r.auth, Ok(StreamAuth::Server { .. })),
        "{:?}",
        r.auth
    );
    assert_eq!(r.body, sent.as_bytes());
    assert_not_forwarded(&r, BILLING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_routes_are_403_code_17_and_star_allows_all() {
    let (fake, gw) = setup("", &services(""));
    for (method, path) in [
        ("GET", "/app"),
        ("GET", "/channeltypes"),
        ("DELETE", "/channels/messaging/general"),
    ] {
        let req = client().request(method.parse().unwrap(), url(&gw, path));
        let resp = as_service(req, BILLING).send().await.unwrap();
        let body = assert_gateway_refusal(resp, 403, 17).await;
        assert!(
            body["message"].as_str().unwrap().contains("scope"),
            "{body}"
        );
    }
    assert!(fake.requests().is_empty(), "nothing reached Stream");

    // "*": server and client routes alike.
    for (method, path) in [("GET", "/channeltypes"), ("GET", "/app")] {
        fake.clear();
        let req = client().request(method.parse().unwrap(), url(&gw, path));
        let resp = as_service(req, OPS).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
        assert!(matches!(
            only_request(&fake).auth,
            Ok(StreamAuth::Server { .. })
        ));
    }
    // Routes the table does not know stay refused (unknown_routes = "deny").
    fake.clear();
    let resp = as_service(client().get(url(&gw, "/not/a/route")), OPS)
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 403, 17).await;
    // Users still cannot call the server route the services can.
    let resp = client()
        .get(url(&gw, "/channeltypes"))
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 403, 17).await;
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_user_credentials_are_never_taken_for_each_other() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let idp = r#"
[[tenants.services]]
name = "idp-backend"
jwt_claim = "scope"
jwt_value = "chat:admin"
operations = ["ListChannelTypes", "GetApp"]
"#;
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        "",
        &format!("{}{idp}", services("")),
    ));
    let service_jwt = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "backend-1", "scope": "openid chat:admin", "iat": now(), "exp": now() + 600}),
    );
    let alice = session_for("alice");
    let app = url(&gw, "/app");
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        (
            "a wrong service token",
            as_service(client().get(&app), "sgs_not-a-configured-token"),
            "not a service credential",
        ),
        (
            "a service token without the marker",
            client().get(&app).header("authorization", BILLING),
            "Stream-Auth-Type: service",
        ),
        (
            "a service token marked jwt",
            client()
                .get(&app)
                .header("authorization", BILLING)
                .header("stream-auth-type", "jwt"),
            "Stream-Auth-Type: service",
        ),
        (
            "a user session presented as a service",
            as_service(client().get(&app), &alice),
            "not a service credential",
        ),
        (
            "the marker without a credential",
            client().get(&app).header("stream-auth-type", "service"),
            "needs a service credential",
        ),
        (
            "a service JWT on the user path",
            client().get(&app).header("authorization", &service_jwt),
            "cannot be used as a user session",
        ),
        (
            "a service token in the query without the marker",
            client().get(format!("{app}&authorization={BILLING}")),
            "Stream-Auth-Type: service",
        ),
    ];
    for (what, req, message) in cases {
        let resp = req.send().await.unwrap();
        let body = assert_gateway_refusal(resp, 401, 5).await;
        let text = body["message"].as_str().unwrap();
        assert!(text.contains(message), "{what}: {body}");
        assert!(!text.contains(BILLING) && !text.contains(&alice), "{what}");
    }
    assert!(fake.requests().is_empty(), "nothing reached Stream");

    // The same credentials the right way round.
    let resp = as_service(client().get(url(&gw, "/channeltypes")), &service_jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    assert!(
        matches!(r.auth, Ok(StreamAuth::Server { .. })),
        "{:?}",
        r.auth
    );
    assert_not_forwarded(&r, &service_jwt);
    fake.clear();
    let resp = client()
        .get(&app)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(matches!(
        only_request(&fake).auth,
        Ok(StreamAuth::User { ref user_id, .. }) if user_id == "alice"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_never_opens_a_websocket() {
    let (fake, gw) = setup("", &services(""));
    // Marked: Stream's way of refusing a socket, code 17 (a server token has
    // no user to connect as), whatever the scope ("*" here).
    let marked = format!(
        "json={}&api_key={API_KEY}&authorization={OPS}&stream-auth-type=service",
        urlencode(r#"{"user_id":"ops"}"#)
    );
    let v = assert_refused(connect(&gw, &marked).await, 17, 403).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("websockets"),
        "{v}"
    );
    // Unmarked (the SDK's query says jwt): a service token is no session.
    let unmarked = connect_query(API_KEY, OPS, "ops");
    assert_refused(connect(&gw, &unmarked).await, 5, 401).await;
    // Without an upgrade: HTTP 403, code 17; the long poll too.
    for path in ["/connect", "/longpoll"] {
        let resp = as_service(client().get(url(&gw, path)), OPS)
            .send()
            .await
            .unwrap();
        assert_gateway_refusal(resp, 403, 17).await;
    }
    assert!(fake.requests().is_empty(), "nothing reached Stream");
}

/// The server token the upstream saw for one service request.
async fn server_token_seen(fake: &FakeStream, gw: &Gateway, token: &str) -> String {
    fake.clear();
    let resp = as_service(client().patch(url(gw, "/app")), token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(fake);
    assert!(
        matches!(r.auth, Ok(StreamAuth::Server { .. })),
        "{:?}",
        r.auth
    );
    r.header("authorization").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_token_is_cached_then_refreshed_before_it_expires() {
    let (fake, gw) = setup("", &services(""));
    let first = server_token_seen(&fake, &gw, BILLING).await;
    let again = server_token_seen(&fake, &gw, OPS).await;
    assert_eq!(first, again, "one cached server token for the tenant");
    let claims = jwt_claims(&first);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    // A user's token is a user's token.
    fake.clear();
    let resp = get_app(&gw, &session_for("alice")).await;
    assert_eq!(resp.status(), 200);
    let user = only_request(&fake)
        .header("authorization")
        .unwrap()
        .to_string();
    assert_ne!(user, first);
    assert_eq!(server_token_seen(&fake, &gw, BILLING).await, first);

    // ttl 2s: reused while 3/4 of its life is left, i.e. for about a second.
    let (fake, gw) = setup(r#"stream_token_ttl = "2s""#, &services(""));
    let first = server_token_seen(&fake, &gw, BILLING).await;
    let claims = jwt_claims(&first);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        2
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = server_token_seen(&fake, &gw, BILLING).await;
    assert_ne!(first, later, "re-minted after 3/4 of the ttl");
    assert!(jwt_claims(&later)["iat"].as_i64() > claims["iat"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_limits_and_metrics_name_the_service() {
    let (fake, gw) = setup(
        "",
        &format!(
            "{}\n[audit]\nsink = \"file\"\npath = \"audit.log\"",
            services(r#"limits = { rate = "1/min", burst = 2 }"#)
        ),
    );
    let audit_path = gw.config_path().parent().unwrap().join("audit.log");
    // 1-2 forwarded, 3 over its own bucket, 4 out of scope, 5 ops (its own
    // bucket: unlimited), 6 a user, 7 a wrong token.
    for _ in 0..2 {
        let resp = as_service(client().patch(url(&gw, "/app")), BILLING)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = as_service(client().patch(url(&gw, "/app")), BILLING)
        .send()
        .await
        .unwrap();
    let h = resp.headers().clone();
    assert_gateway_refusal(resp, 429, 9).await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((reset - now() - retry as i64).abs() <= 2);
    let resp = as_service(client().get(url(&gw, "/channeltypes")), BILLING)
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 403, 17).await;
    let resp = as_service(client().patch(url(&gw, "/app")), OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get_app(&gw, &session_for("alice")).await.status(), 200);
    let resp = as_service(client().patch(url(&gw, "/app")), "sgs_wrong")
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 401, 5).await;
    assert_eq!(fake.requests().len(), 4);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let records: Vec<Value> = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= 7 {
            assert_eq!(records.len(), 7, "{text}");
            break records;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got: Vec<(Value, Value, Value, Value, Value)> = records
        .iter()
        .map(|r| {
            (
                r["service"].clone(),
                r["user_id"].clone(),
                r["operation"].clone(),
                r["decision"].clone(),
                r["code"].clone(),
            )
        })
        .collect();
    let billing = json!("billing");
    let want = vec![
        (
            billing.clone(),
            Value::Null,
            json!("UpdateApp"),
            json!("forwarded"),
            Value::Null,
        ),
        (
            billing.clone(),
            Value::Null,
            json!("UpdateApp"),
            json!("forwarded"),
            Value::Null,
        ),
        (
            billing.clone(),
            Value::Null,
            json!("UpdateApp"),
            json!("rate_limited"),
            json!(9),
        ),
        (
            billing.clone(),
            Value::Null,
            json!("ListChannelTypes"),
            json!("refused_out_of_scope"),
            json!(17),
        ),
        (
            json!("ops"),
            Value::Null,
            json!("UpdateApp"),
            json!("forwarded"),
            Value::Null,
        ),
        (
            Value::Null,
            json!("alice"),
            json!("GetApp"),
            json!("forwarded"),
            Value::Null,
        ),
        (
            Value::Null,
            Value::Null,
            json!("UpdateApp"),
            json!("unauthenticated"),
            json!(5),
        ),
    ];
    assert_eq!(got, want);
    assert!(
        records[5].get("service").is_none(),
        "user records keep their fields: {}",
        records[5]
    );
    assert_eq!(records[0]["route"], "/app");
    assert_eq!(records[0]["status"], 200);
    assert_eq!(records[0]["tenant"], "acme");

    let text = metrics_text(&gw).await;
    let service = |decision: &str, op: &str, service: &str| {
        sample(
            &text,
            "stream_gateway_service_requests_total",
            &[
                ("tenant", "acme"),
                ("service", service),
                ("operation", op),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(service("forwarded", "UpdateApp", "billing"), 2.0);
    assert_eq!(service("rate_limited", "UpdateApp", "billing"), 1.0);
    assert_eq!(
        service("refused_out_of_scope", "ListChannelTypes", "billing"),
        1.0
    );
    assert_eq!(service("forwarded", "UpdateApp", "ops"), 1.0);
    assert_eq!(
        sample(
            &text,
            "stream_gateway_service_rate_limited_total",
            &[("service", "billing"), ("limit", "per_service")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "stream_gateway_session_failures_total",
            &[("reason", "service_unknown")]
        ),
        1.0
    );
    // Everyone's requests, services' too, in the tenant's totals.
    assert_eq!(
        sample(
            &text,
            "stream_gateway_requests_total",
            &[("operation", "UpdateApp"), ("decision", "forwarded")]
        ),
        3.0
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("alice"), "a user id in a metric: {line}");
    }
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    for (what, haystack) in [
        ("audit", &audit),
        ("metrics", &text),
        ("logs", &gw.stderr()),
    ] {
        for secret in [BILLING, OPS, STREAM_SECRET] {
            assert!(!haystack.contains(secret), "a credential in the {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_requests_count_against_the_tenant_quota_and_their_own() {
    use common::redis::RedisServer;
    let redis = RedisServer::start();
    let (fake, gw) = setup(
        "",
        &format!(
            "{}\n[tenants.quota]\nrequests_per_minute = 4\n\n[redis]\nurl = \"{}\"\ntimeout = \"500ms\"",
            services("quota = { requests_per_minute = 2 }"),
            redis.url()
        ),
    );
    if now() % 60 > 50 {
        tokio::time::sleep(Duration::from_secs((61 - now() % 60) as u64)).await;
    }
    let billing = || async {
        as_service(client().patch(url(&gw, "/app")), BILLING)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(billing().await.status(), 200);
    assert_eq!(billing().await.status(), 200);
    let resp = billing().await;
    assert_eq!(resp.headers()["x-ratelimit-limit"], "2", "its own window");
    assert_gateway_refusal(resp, 429, 9).await;
    // The tenant's window counted billing's two: two more for anyone.
    assert_eq!(get_app(&gw, &session_for("alice")).await.status(), 200);
    let resp = as_service(client().patch(url(&gw, "/app")), OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get_app(&gw, &session_for("bob")).await;
    assert_eq!(
        resp.headers()["x-ratelimit-limit"],
        "4",
        "the tenant's window"
    );
    assert_gateway_refusal(resp, 429, 9).await;
    assert_eq!(fake.requests().len(), 4);
}

/// `stream-gateway service-token` once: (token, hex of the hash line).
fn service_token() -> (String, String) {
    let out = run_cli(&["service-token"], &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let hex = lines[1]
        .strip_prefix("token_sha256 = \"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a config line: {}", lines[1]));
    (lines[0].to_string(), hex.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_token_prints_a_fresh_token_and_its_hash_line_that_work() {
    use base64::Engine;
    let (token, hex) = service_token();
    let random = token.strip_prefix("sgs_").expect("the sgs_ prefix");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(random)
        .expect("base64url");
    assert_eq!(bytes.len(), 32, "256 bits");
    assert!(
        bytes.iter().collect::<std::collections::HashSet<_>>().len() > 16,
        "looks random"
    );
    assert_eq!(hex, token_hash(&token));
    assert_eq!(hex.len(), 64);
    let (other, other_hex) = service_token();
    assert_ne!(token, other);
    assert_ne!(hex, other_hex);

    let config = format!(
        "[[tenants.services]]\nname = \"cli\"\ntoken_sha256 = \"{hex}\"\noperations = [\"ListChannelTypes\"]"
    );
    let (fake, gw) = setup("", &config);
    let resp = as_service(client().get(url(&gw, "/channeltypes")), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(matches!(
        only_request(&fake).auth,
        Ok(StreamAuth::Server { .. })
    ));
    let resp = as_service(client().get(url(&gw, "/channeltypes")), &other)
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 401, 5).await;
}

#[test]
fn service_config_problems_are_one_line_each() {
    let hash = token_hash(BILLING);
    let err = check_fails(&format!(
        r#"
[[tenants.services]]
name = "typo"
token_sha256 = "{hash}"
operations = ["UpdateAp", "GET /no/such/route", "SendMessage"]

[[tenants.services]]
name = "badhash"
token_sha256 = "{short}"
operations = ["*"]

[[tenants.services]]
name = "both"
token_sha256 = "{other}"
jwt_claim = "scope"
jwt_value = "chat:admin"
operations = ["*"]

[[tenants.services]]
name = "neither"
operations = ["*"]

[[tenants.services]]
name = "typo"
token_sha256 = "{third}"
operations = ["*"]

[[tenants.services]]
name = "sockets"
token_sha256 = "{fourth}"
operations = ["Connect"]

[[tenants.services]]
name = "empty"
token_sha256 = "{fifth}"
operations = []
"#,
        short = &hash[..60],
        other = token_hash("sgs_2"),
        third = token_hash("sgs_3"),
        fourth = token_hash("sgs_4"),
        fifth = token_hash("sgs_5"),
    ));
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    let expect = [
        "tenants[acme].services[typo].operations: no operation \"UpdateAp\" in the route table",
        "tenants[acme].services[typo].operations: no route \"GET /no/such/route\" in the route table",
        "tenants[acme].services[badhash].token_sha256: must be 64 hex digits",
        "tenants[acme].services[both]: set either token_sha256 or jwt_claim",
        "tenants[acme].services[neither]: set token_sha256",
        "tenants[acme].services[typo].name: duplicate service name",
        "tenants[acme].services[sockets].operations: \"Connect\": service accounts never open websockets",
        "tenants[acme].services[empty].operations: list the operations",
    ];
    for want in expect {
        assert_eq!(
            lines.iter().filter(|l| l.contains(want)).count(),
            1,
            "{want:?} in:\n{err}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{err}");
    assert!(!err.contains(&hash[..16]), "a hash echoed: {err}");

    // A JWT credential needs a session source that verifies JWTs, and a
    // value; a service quota needs [redis].
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = gateway_config_with_session(
        "http://127.0.0.1:1",
        "",
        "type = \"redis\"\nkey = \"session:{token}\"",
        r#"
[[tenants.services]]
name = "idp"
jwt_claim = "scope"
operations = ["*"]
quota = { requests_per_minute = 10 }
"#,
    )
    .replace("@LISTEN@", "127.0.0.1:1")
    .replace("@ADMIN@", "127.0.0.1:2");
    std::fs::write(&path, config).unwrap();
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "tenants[acme].services[idp].jwt_value: required with jwt_claim",
        "tenants[acme].services[idp].jwt_claim: needs a [tenants.session] of type \"jwt\" or \"jwks\"",
        "tenants[acme].services[idp].quota: shared quotas need a [redis] section",
    ] {
        assert!(err.contains(want), "{want:?} in:\n{err}");
    }
}
