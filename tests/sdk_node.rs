//! The official Stream Chat JS SDK (`stream-chat`, pinned in tests/sdk/package.json)
//! end to end through the built gateway to the fake Stream, over real sockets:
//! tests/sdk/scenario.mjs connects three users with app session tokens and exercises
//! watch, messages over the websocket, a reaction, a read mark, a refused server-side
//! call, a token refresh on code 40 and the route rate limit. This test checks what
//! the SDK reported and what Stream (the fake) received.

mod common;

use common::sdk::{ensure_node_modules, run_node};
use common::*;
use std::time::Duration;

/// SendMessage calls a user may make at once (route bucket).
const SEND_BURST: u32 = 3;
const CHANNEL: &str = "sdk-e2e";

fn scenario_setup() -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let limits = format!(
        "[tenants.limits]\n[[tenants.limits.routes]]\nroute = \"SendMessage\"\nrate = \"1/min\"\nburst = {SEND_BURST}"
    );
    let gw = Gateway::start(&gateway_config(&fake.url(), "", &limits));
    (fake, gw)
}

/// A session token for `user` expiring `secs` from now.
fn session_expiring(user: &str, secs: i64) -> String {
    hs_token(
        "HS256",
        SESSION_SECRET,
        serde_json::json!({"sub": user, "iat": now(), "exp": now() + secs}),
    )
}

#[test]
fn official_js_sdk_end_to_end_through_the_gateway() {
    ensure_node_modules();
    let sdk_version = {
        let pkg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(common::sdk::sdk_dir().join("node_modules/stream-chat/package.json"))
                .expect("read stream-chat's package.json"),
        )
        .expect("package.json is JSON");
        pkg["version"].as_str().expect("version").to_string()
    };
    let (fake, gw) = scenario_setup();

    let alice = session_for("alice");
    let bob = session_for("bob");
    let carol_short = session_expiring("carol", 5);
    let carol_fresh = session_for("carol");
    let sessions = [&alice, &bob, &carol_short, &carol_fresh];
    let ran = run_node(
        "scenario.mjs",
        &[
            ("GATEWAY_URL", gw.url()),
            ("STREAM_API_KEY", API_KEY.to_string()),
            ("CHANNEL", CHANNEL.to_string()),
            ("ALICE_TOKEN", alice.clone()),
            ("BOB_TOKEN", bob.clone()),
            ("CAROL_TOKEN_SHORT", carol_short.clone()),
            ("CAROL_TOKEN_FRESH", carol_fresh.clone()),
            ("SEND_BURST", SEND_BURST.to_string()),
        ],
        Duration::from_secs(120),
    );
    assert!(ran.status_ok, "scenario failed; {}", ran.describe());
    let r = ran.result_json();
    eprintln!("scenario result: {r:#}");
    assert_eq!(r["ok"], true, "{r:#}");
    let cid = format!("messaging:{CHANNEL}");

    // What the SDK saw.
    let agent = format!("stream-chat-js-v{sdk_version}-node");
    assert!(
        r["user_agent"]
            .as_str()
            .is_some_and(|a| a == agent || a.starts_with(&format!("{agent}|"))),
        "{}",
        r["user_agent"]
    );
    assert_eq!(r["watch"]["cid"], cid.as_str());
    assert_eq!(r["bob_received"]["user"], "alice");
    assert_eq!(r["bob_received"]["id"], r["message"]["id"]);
    assert_eq!(r["bob_received"]["in_state"], true);
    assert_eq!(r["reaction"]["type"], "love");
    assert_eq!(r["reaction"]["own_reactions"], serde_json::json!(["love"]));
    assert_eq!(r["reaction"]["alice_state_counts"]["love"], 1);
    assert_eq!(r["read"]["event"], "message.read");
    assert_eq!(
        r["read"]["alice_sees_last_read_message_id"],
        r["message"]["id"]
    );
    for call in ["updateAppSettings", "createChannelType"] {
        let e = &r["server_only"][call];
        assert_eq!(e["refused"], true, "{call}: {e}");
        assert_eq!(e["status"], 403, "{call}: {e}");
        assert_eq!(e["code"], 17, "{call}: {e}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("StreamChat error code 17: ")),
            "{call}: {e}"
        );
    }
    assert_eq!(r["rate_limit"]["accepted"], SEND_BURST, "{r:#}");
    assert_eq!(r["rate_limit"]["status"], 429, "{r:#}");
    assert_eq!(r["rate_limit"]["code"], 9, "{r:#}");
    let calls = r["token_refresh"]["provider_calls"].as_u64().unwrap();
    assert!(calls >= 2, "carol's tokenProvider calls: {calls}");
    assert_eq!(r["token_refresh"]["message_user"], "carol");
    // Regression: an open socket closed for session expiry must come back
    // (close 1001, not 1000, which the SDK treats as final).
    assert_eq!(
        r["token_refresh"]["carol_socket_events_after_expiry"], true,
        "carol's socket did not come back after her session expired: {r}"
    );
    assert_eq!(r["provider_calls"]["alice"], 1);
    assert_eq!(r["provider_calls"]["bob"], 1);

    // What Stream received.
    let reqs = fake.requests();
    eprintln!("Stream received:");
    for q in &reqs {
        eprintln!("  {} {} as {:?}", q.method, q.path, q.user_id());
    }
    for req in &reqs {
        let raw_query = req.raw_query.clone().unwrap_or_default();
        for s in sessions {
            assert!(
                !raw_query.contains(s.as_str()) && !req.path.contains(s.as_str()),
                "an app session reached Stream in {} {}",
                req.method,
                req.path
            );
            for (k, v) in &req.headers {
                assert!(!v.contains(s.as_str()), "an app session in header {k}");
            }
            assert!(!String::from_utf8_lossy(&req.body).contains(s.as_str()));
        }
        assert!(
            req.auth.is_ok(),
            "Stream refused {} {}: {:?}",
            req.method,
            req.path,
            req.auth
        );
        assert_eq!(
            req.header("x-stream-client")
                .or(req.query_param("X-Stream-Client")),
            r["user_agent"].as_str(),
            "{} {}: every request came from the SDK",
            req.method,
            req.path
        );
    }
    let sockets: Vec<_> = reqs.iter().filter(|q| q.path == "/connect").collect();
    let socket_users: Vec<_> = sockets.iter().filter_map(|q| q.user_id()).collect();
    for u in ["alice", "bob", "carol"] {
        assert!(
            socket_users.contains(&u),
            "no /connect for {u}: {socket_users:?}"
        );
    }
    for s in &sockets {
        let minted = s.query_param("authorization").expect("authorization");
        assert_eq!(jwt_claims(minted)["user_id"], s.user_id().unwrap());
    }

    let sends: Vec<_> = reqs
        .iter()
        .filter(|q| {
            q.method == "POST" && q.path == format!("/channels/{}/message", cid.replace(':', "/"))
        })
        .collect();
    let by = |u: &str| sends.iter().filter(|q| q.user_id() == Some(u)).count();
    assert_eq!(
        by("alice"),
        SEND_BURST as usize,
        "the refused send never reached Stream"
    );
    // Bob only reacts and reads (his reactions check carol's socket below).
    assert_eq!(by("bob"), 0);
    assert_eq!(by("carol"), 1);
    let first = sends
        .iter()
        .find(|q| q.user_id() == Some("alice"))
        .expect("alice's message reached Stream");
    let minted = first.header("authorization").expect("authorization");
    assert_eq!(jwt_claims(minted)["user_id"], "alice");
    assert_eq!(first.header("stream-auth-type"), Some("jwt"));
    assert_eq!(first.query_param("user_id"), Some("alice"));
    assert_eq!(
        first.body_json()["message"]["text"],
        r["message"]["text"],
        "the message body arrived as sent"
    );
    // Carol's send after her session expired went through with a fresh mint for her.
    let carol_send = sends.iter().find(|q| q.user_id() == Some("carol")).unwrap();
    assert_eq!(
        jwt_claims(carol_send.header("authorization").unwrap())["user_id"],
        "carol"
    );

    let reaction = reqs
        .iter()
        .find(|q| q.method == "POST" && q.path.ends_with("/reaction"))
        .expect("the reaction reached Stream");
    assert_eq!(reaction.user_id(), Some("bob"));
    assert_eq!(
        reaction.path,
        format!(
            "/messages/{}/reaction",
            r["message"]["id"].as_str().unwrap()
        )
    );
    let read = reqs
        .iter()
        .find(|q| q.method == "POST" && q.path.ends_with("/read"))
        .expect("the read mark reached Stream");
    assert_eq!(read.user_id(), Some("bob"));
    assert!(
        !reqs
            .iter()
            .any(|q| q.path == "/app" || q.path == "/channeltypes"),
        "a server-side call reached Stream"
    );

    // Events Stream pushed over the sockets: bob got alice's message.new.
    let pushed = fake.pushed();
    assert!(
        pushed.iter().any(|p| p.user_id == "bob"
            && p.event["type"] == "message.new"
            && p.event["message"]["id"] == r["message"]["id"]),
        "no message.new pushed to bob"
    );
    assert!(pushed
        .iter()
        .any(|p| p.user_id == "alice" && p.event["type"] == "reaction.new"));
    assert!(pushed
        .iter()
        .any(|p| p.user_id == "alice" && p.event["type"] == "message.read"));
}
