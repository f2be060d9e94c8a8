//! The demo page (tests/sdk/web) in headless Chromium, two users through the built
//! gateway to the fake Stream: tests/sdk/browser.mjs (playwright-core driving
//! Debian's /usr/bin/chromium) opens the page as alice and as bob, alice sends a
//! message, bob's page shows it live, and bob's page is saved as a PNG (in the
//! test's temp dir and as `target/sdk-demo.png`). The page comes from
//! tests/sdk/serve.mjs on another loopback port: another origin than the gateway,
//! so every SDK call is a CORS request (the tenant's `allowed_origins`).

mod common;

use common::sdk::{ensure_node_modules, run_node, sdk_dir, target_dir};
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHANNEL: &str = "browser-demo";

/// `node serve.mjs --port 0`, killed (by handle) on drop.
struct StaticServer {
    child: Child,
    /// `http://127.0.0.1:PORT/web/`
    url: String,
}

impl StaticServer {
    fn start() -> StaticServer {
        let mut child = Command::new("node")
            .args(["serve.mjs", "--port", "0"])
            .current_dir(sdk_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node serve.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout pipe"))
            .read_line(&mut line)
            .expect("read serve.mjs's first line");
        let url = line
            .trim()
            .strip_prefix("serving ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("serve.mjs printed {line:?}")
            })
            .to_string();
        StaticServer { child, url }
    }

    /// `http://127.0.0.1:PORT`
    fn origin(&self) -> String {
        self.url.trim_end_matches("/web/").to_string()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn demo_page_in_chromium_two_users_chat_through_the_gateway() {
    ensure_node_modules();
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: install Debian's chromium (deploy/setup.sh does: apt-get install chromium)"
    );
    let page = StaticServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        &format!("allowed_origins = [\"{}\"]", page.origin()),
        "",
    ));
    let alice = session_for("alice");
    let bob = session_for("bob");

    let tmp = tempfile::Builder::new()
        .prefix("sdk-browser-")
        .tempdir()
        .expect("temp dir");
    let profile = tmp.path().join("chromium-profile");
    std::fs::create_dir(&profile).expect("create the profile dir");
    let shot = tmp.path().join("sdk-demo.png");
    let ran = run_node(
        "browser.mjs",
        &[
            ("PAGE_URL", page.url.clone()),
            ("GATEWAY_URL", gw.url()),
            ("STREAM_API_KEY", API_KEY.to_string()),
            ("CHANNEL", CHANNEL.to_string()),
            ("ALICE_TOKEN", alice.clone()),
            ("BOB_TOKEN", bob.clone()),
            ("SCREENSHOT", shot.display().to_string()),
            ("USER_DATA_DIR", profile.display().to_string()),
            ("CHROMIUM", CHROMIUM.to_string()),
        ],
        Duration::from_secs(120),
    );
    assert!(ran.status_ok, "browser scenario failed; {}", ran.describe());
    let r = ran.result_json();
    eprintln!("browser result: {r:#}");
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["bob_message"]["user"], "alice");
    assert!(
        r["bob_message"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("hi bob")),
        "{r:#}"
    );
    for list in [
        "page_errors",
        "console",
        "failed_requests",
        "error_responses",
    ] {
        assert!(
            r[list].as_array().is_some_and(Vec::is_empty),
            "{list}: {r:#}"
        );
    }

    // The screenshot: a PNG, kept as target/sdk-demo.png.
    let png = std::fs::read(&shot).expect("read the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "suspiciously small screenshot");
    let kept = target_dir().join("sdk-demo.png");
    std::fs::copy(&shot, &kept).expect("copy the screenshot to target/");
    eprintln!("screenshot: {}", kept.display());

    // What Stream received: the browser's requests with minted tokens, never a session.
    let reqs = fake.requests();
    assert!(!reqs.is_empty());
    for q in &reqs {
        assert!(
            q.auth.is_ok(),
            "Stream refused {} {}: {:?}",
            q.method,
            q.path,
            q.auth
        );
        let client = q
            .header("x-stream-client")
            .or(q.query_param("X-Stream-Client"))
            .unwrap_or_default();
        assert!(
            client.contains("-browser"),
            "{} {}: {client}",
            q.method,
            q.path
        );
        for s in [&alice, &bob] {
            assert!(!q.raw_query.clone().unwrap_or_default().contains(s.as_str()));
            assert!(q.headers.iter().all(|(_, v)| !v.contains(s.as_str())));
        }
    }
    assert!(
        reqs.iter().all(|q| q.method != "OPTIONS"),
        "the gateway answers CORS preflights itself"
    );
    let sent: Vec<_> = reqs
        .iter()
        .filter(|q| q.method == "POST" && q.path.ends_with("/message"))
        .collect();
    assert_eq!(sent.len(), 2, "alice's message and bob's reply");
    assert_eq!(sent[0].user_id(), Some("alice"));
    assert_eq!(
        jwt_claims(sent[0].header("authorization").unwrap())["user_id"],
        "alice"
    );
    assert_eq!(sent[1].user_id(), Some("bob"));
    assert!(fake.pushed().iter().any(|p| p.user_id == "bob"
        && p.event["type"] == "message.new"
        && p.event["user"]["id"] == "alice"));
}
