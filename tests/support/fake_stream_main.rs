//! `cargo run --example fake-stream -- [ADDR]`: the tests' fake Stream as a
//! standalone server for local development with `config/dev.toml`
//! (default address 127.0.0.1:3031, app `dev-key` / `dev-stream-secret`).
//! It prints a session token for a demo user, a curl line to try, and links to the
//! demo chat page (tests/sdk/web, `node tests/sdk/serve.mjs`) for two users.

#[allow(dead_code)]
#[path = "../common/fake_stream.rs"]
mod fake_stream;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3031".into());
    let fake = fake_stream::FakeStream::start_on(&addr, &[("dev-key", "dev-stream-secret")]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let session = |user: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": user, "iat": now, "exp": now + 24 * 3600}),
            &jsonwebtoken::EncodingKey::from_secret(b"dev-session-secret"),
        )
        .expect("HS256 signing with a literal key cannot fail")
    };
    let token = session("demo-user");
    println!("fake Stream listening on http://{}", fake.addr);
    println!("demo session token (user demo-user, 24h, signed with config/dev.toml's session secret):\n{token}");
    println!("try: curl -s -H 'Authorization: Bearer {token}' 'http://127.0.0.1:8080/channels/messaging/general?api_key=dev-key'");
    println!("demo chat page (after `node tests/sdk/serve.mjs`), one tab per user:");
    for user in ["demo-user", "demo-friend"] {
        println!(
            "  http://127.0.0.1:8081/web/#gateway=http://127.0.0.1:8080&key=dev-key&channel=general&user={user}&token={}",
            session(user)
        );
    }
    // Keep memory bounded in a long dev session: the records are for tests.
    loop {
        std::thread::sleep(Duration::from_secs(60));
        fake.clear();
    }
}
