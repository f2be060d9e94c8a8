//! TLS on the client listener and HTTP/2 (issue 10), over real sockets: the
//! built gateway with `[server.tls]`, certificates made at run time by a
//! throwaway CA, HTTP/2 and HTTP/1.1 clients (reqwest, rustls, ALPN
//! decides), a websocket over TLS, SNI selection, certificate reload on
//! SIGHUP, h2c, config checks, and upstream connection reuse in metrics.
//! The upstream side's TLS is in `tests/upstream_tls.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake_stream::connect_query;
use common::tls::{handshake, served_cert, TestCa};
use common::ws::{assert_refused, next_json};
use common::*;
use futures_util::SinkExt;
use reqwest::Version;
use serde_json::json;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;

/// The name the tests reach the gateway by (pinned to its address).
const HOST: &str = "gateway.test";
const ORIGIN: &str = "https://app.example";

/// `[server.tls]` with the default certificate and `more` (SNI entries).
fn tls_table(cert: &str, key: &str, more: &str) -> String {
    format!("[server.tls]\ncert = \"file:{cert}\"\nkey = \"file:{key}\"\n{more}")
}

/// [`gateway_config`] with `server_extra` at the end of `[server]`.
fn config(upstream: &str, server_extra: &str, tenant_extra: &str, top_extra: &str) -> String {
    gateway_config(upstream, tenant_extra, top_extra).replacen(
        "threads = 1\n",
        &format!("threads = 1\n{server_extra}\n"),
        1,
    )
}

/// A CA, a default certificate for [`HOST`] written to files, a fake Stream
/// and a TLS gateway in front of it.
struct Setup {
    ca: TestCa,
    default_der: Vec<u8>,
    fake: FakeStream,
    gw: Gateway,
}

fn setup(sni: &str, tenant_extra: &str, top_extra: &str) -> Setup {
    let ca = TestCa::new();
    let leaf = ca.issue(&[HOST], None);
    let (cert, key) = ca.write_leaf("default", &leaf);
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(
        &fake.url(),
        &tls_table(&cert, &key, sni),
        tenant_extra,
        top_extra,
    ));
    Setup {
        ca,
        default_der: leaf.der,
        fake,
        gw,
    }
}

impl Setup {
    fn client(&self, h1_only: bool) -> reqwest::Client {
        self.ca.https_client(h1_only, &[(HOST, self.gw.listen)])
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("https://{HOST}:{}{path_and_query}", self.gw.listen.port())
    }
}

fn wrong_token(user: &str) -> String {
    hs_token(
        "HS256",
        "not-the-session-secret",
        json!({"sub": user, "iat": now(), "exp": now() + 600}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_behaves_the_same_over_h2_and_http1() {
    let s = setup("", &format!("allowed_origins = [\"{ORIGIN}\"]"), "");
    for (h1_only, version, user) in [
        (false, Version::HTTP_2, "alice"),
        (true, Version::HTTP_11, "bob"),
    ] {
        let c = s.client(h1_only);
        let session = session_for(user);
        s.fake.clear();

        // A good request reaches Stream with the minted token, nothing else.
        let resp = c
            .get(s.url(&format!("/channels/messaging/general?api_key={API_KEY}")))
            .header("authorization", format!("Bearer {session}"))
            .header("origin", ORIGIN)
            .send()
            .await
            .expect("GET through the gateway");
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200, "{version:?}: {}", s.gw.stderr());
        assert!(resp.headers().contains_key("x-fake-upstream"));
        assert_eq!(resp.headers()["access-control-allow-origin"], ORIGIN);
        assert_eq!(resp.headers()["x-request-id"].len(), 32);
        let r = s
            .fake
            .wait_for_requests(1, Duration::from_secs(5))
            .remove(0);
        match &r.auth {
            Ok(StreamAuth::User { user_id, .. }) => assert_eq!(user_id, user),
            other => panic!("{version:?}: the fake did not accept the minted token: {other:?}"),
        }
        assert_eq!(r.header("x-forwarded-proto"), Some("https"));
        assert_eq!(r.header("host"), Some(s.fake.addr.to_string().as_str()));
        for (k, v) in &r.headers {
            assert!(!v.contains(&session), "{version:?}: session token in {k}");
        }

        // A body streams through (no Content-Length needed over h2).
        let resp = c
            .post(s.url(&format!(
                "/channels/messaging/general/message?api_key={API_KEY}"
            )))
            .header("authorization", &session)
            .json(&json!({"message": {"text": "hello over TLS"}}))
            .send()
            .await
            .expect("POST through the gateway");
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200, "{version:?}");
        let r = s
            .fake
            .wait_for_requests(2, Duration::from_secs(5))
            .remove(1);
        assert_eq!(r.body_json()["message"]["text"], "hello over TLS");

        // A head within the gateway's limits but over pingora's default
        // HTTP/2 header list (64 KiB) passes over both.
        let resp = c
            .get(s.url(&format!(
                "/app?api_key={API_KEY}&x={}",
                "a".repeat(50 * 1024)
            )))
            .header("authorization", &session)
            .header("x-big", "b".repeat(30 * 1024))
            .send()
            .await
            .expect("large head");
        assert_eq!((resp.version(), resp.status().as_u16()), (version, 200));

        // Refusals in Stream's shape; none of them reaches Stream.
        let refusals = [
            // a server-only field in the body
            (
                c.post(s.url(&format!(
                    "/channels/messaging/general/message?api_key={API_KEY}"
                )))
                .header("authorization", &session)
                .json(&json!({"message": {"text": "x", "html": "<b>x</b>"}})),
                400,
                4,
            ),
            // a server-side route
            (
                c.get(s.url(&format!("/channeltypes/messaging?api_key={API_KEY}")))
                    .header("authorization", &session),
                403,
                17,
            ),
            // a bad session token
            (
                c.get(s.url(&format!("/app?api_key={API_KEY}")))
                    .header("authorization", wrong_token(user)),
                401,
                43,
            ),
            // no api_key
            (
                c.get(s.url("/app")).header("authorization", &session),
                401,
                2,
            ),
            // the gateway's own head limits (max_uri_bytes, max_header_bytes)
            (
                c.get(s.url(&format!(
                    "/app?api_key={API_KEY}&x={}",
                    "a".repeat(58 * 1024)
                )))
                .header("authorization", &session),
                414,
                4,
            ),
            (
                c.get(s.url(&format!("/app?api_key={API_KEY}")))
                    .header("authorization", &session)
                    .header("x-big", "b".repeat(33 * 1024)),
                431,
                24,
            ),
            // an origin the tenant does not list
            (
                c.get(s.url(&format!("/app?api_key={API_KEY}")))
                    .header("authorization", &session)
                    .header("origin", "https://evil.example"),
                403,
                17,
            ),
        ];
        for (req, status, code) in refusals {
            let resp = req.send().await.expect("refused request");
            assert_eq!(resp.version(), version);
            assert_gateway_refusal(resp, status, code).await;
        }
        // A refused request whose body was never read (1 MiB, more than an
        // HTTP/2 stream's window) leaves the connection usable.
        let resp = c
            .post(s.url(&format!(
                "/channels/messaging/general/message?api_key={API_KEY}"
            )))
            .header("authorization", wrong_token(user))
            .header("content-type", "application/json")
            .body(vec![b' '; 1 << 20])
            .send()
            .await
            .expect("refused upload");
        assert_gateway_refusal(resp, 401, 43).await;
        let resp = c
            .get(s.url(&format!("/app?api_key={API_KEY}")))
            .header("authorization", &session)
            .send()
            .await
            .expect("GET after a refused upload");
        assert_eq!((resp.version(), resp.status().as_u16()), (version, 200));

        // A CORS preflight is answered by the gateway.
        let resp = c
            .request(
                reqwest::Method::OPTIONS,
                s.url(&format!("/app?api_key={API_KEY}")),
            )
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert_eq!(resp.status(), 204);
        assert_eq!(resp.headers()["access-control-allow-origin"], ORIGIN);

        let seen = s.fake.requests();
        assert_eq!(seen.len(), 4, "{version:?}: {seen:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_audit_hold_over_h2() {
    let s = setup(
        "",
        "[tenants.limits]\nper_user = { rate = \"1/h\", burst = 2 }",
        "[audit]\nsink = \"file\"\npath = \"audit.log\"",
    );
    let c = s.client(false);
    let session = session_for("alice");
    let get = || {
        c.get(s.url(&format!("/app?api_key={API_KEY}")))
            .header("authorization", &session)
            .send()
    };
    for _ in 0..2 {
        let resp = get().await.expect("GET");
        assert_eq!(
            (resp.version(), resp.status().as_u16()),
            (Version::HTTP_2, 200)
        );
    }
    let resp = get().await.expect("GET");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
    assert_gateway_refusal(resp, 429, 9).await;
    assert_eq!(s.fake.requests().len(), 2);

    let audit = s.gw.config_path().with_file_name("audit.log");
    let mut statuses = Vec::new();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "three audit records",
        || {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            statuses = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|r| (r["user_id"].clone(), r["status"].clone()))
                .collect();
            let n = statuses.len();
            async move { n >= 3 }
        },
    )
    .await;
    assert_eq!(
        statuses,
        [
            (json!("alice"), json!(200)),
            (json!("alice"), json!(200)),
            (json!("alice"), json!(429))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_work_over_tls_with_http1() {
    let s = setup("", "", "");
    let connect = |query: String| {
        let config = s.ca.client_config(&["http/1.1"]);
        let addr = s.gw.listen;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP");
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from(HOST).expect("name"), tcp)
                .await
                .expect("TLS handshake (verified against the test CA)");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            let url = format!("wss://{HOST}/connect?{query}");
            let (ws, resp) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::client_async(url, tls),
            )
            .await
            .expect("upgrade timed out")
            .expect("websocket upgrade");
            assert_eq!(resp.status(), 101);
            ws
        }
    };

    let session = session_for("alice");
    let mut ws = connect(connect_query(API_KEY, &session, "alice")).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "health.check");
    assert_eq!(first["me"]["id"], "alice");
    ws.send(Message::Text(r#"{"type":"custom","n":1}"#.into()))
        .await
        .expect("send a frame");
    assert_eq!(next_json(&mut ws).await, json!({"type": "custom", "n": 1}));
    let r = s
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/connect")
        .expect("the upgrade reached Stream");
    assert!(
        matches!(r.auth, Ok(StreamAuth::User { ref user_id, .. }) if user_id == "alice"),
        "{:?}",
        r.auth
    );
    ws.close(None).await.expect("close");

    // A refused socket: error frame, close 1000, over TLS too.
    let ws = connect(connect_query(API_KEY, &wrong_token("alice"), "alice")).await;
    assert_refused(ws, 43, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_and_protocol_versions() {
    let s = setup("", "", "");
    let addr = s.gw.listen;
    let both = [&rustls::version::TLS13, &rustls::version::TLS12];
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["h2", "http/1.1"], Some("h2")),
        (&["http/1.1", "h2"], Some("h2")),
        (&["http/1.1"], Some("http/1.1")),
        (&[], None),
    ];
    for (offer, want) in cases {
        let served = handshake(addr, Some(HOST), offer, &both).await.unwrap();
        assert_eq!(served.alpn.as_deref(), want, "offered {offer:?}");
    }
    for (version, name) in [
        (&rustls::version::TLS12, "TLSv1_2"),
        (&rustls::version::TLS13, "TLSv1_3"),
    ] {
        let served = handshake(addr, Some(HOST), &["h2"], &[version])
            .await
            .unwrap();
        assert_eq!(served.version, name);
        assert_eq!(served.cert, s.default_der);
    }

    // TLS 1.0 and 1.1 ClientHellos (no supported_versions extension) get an
    // alert, never a ServerHello.
    for legacy in [[3u8, 1u8], [3, 2]] {
        let reply = old_client_hello(addr, legacy).await;
        assert_eq!(reply.first(), Some(&0x15), "{legacy:?}: {reply:02x?}");
    }

    // `h2 = false`: HTTP/1.1 only, whatever the client offers.
    let s = setup("h2 = false", "", "");
    let served = handshake(s.gw.listen, Some(HOST), &["h2", "http/1.1"], &both)
        .await
        .unwrap();
    assert_eq!(served.alpn.as_deref(), Some("http/1.1"));
    let resp = s
        .client(false)
        .get(s.url(&format!("/app?api_key={API_KEY}")))
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (Version::HTTP_11, 200)
    );
}

/// Sends a minimal ClientHello of TLS `version` (1.0 is [3, 1], 1.1 is
/// [3, 2]: one cipher suite, no extensions) and returns the first bytes of
/// the server's reply (a record: 0x15 is an alert, 0x16 a handshake).
async fn old_client_hello(addr: SocketAddr, version: [u8; 2]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = Vec::new();
    body.extend_from_slice(&version); // client_version
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[1, 0]); // null compression
    let mut hs = vec![1, 0, 0, body.len() as u8]; // ClientHello
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1, 0, hs.len() as u8];
    record.extend_from_slice(&hs);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP");
    tcp.write_all(&record).await.expect("send ClientHello");
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("no reply within 5 s")
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_unknown_names_get_the_default() {
    let ca = TestCa::new();
    let default = ca.issue(&[HOST], None);
    let acme = ca.issue(&["chat.acme.example"], None);
    let globex = ca.issue(&["*.globex.example"], None);
    let (dc, dk) = ca.write_leaf("default", &default);
    let (ac, ak) = ca.write_leaf("acme", &acme);
    let (gc, gk) = ca.write_leaf("globex", &globex);
    let sni = format!(
        "[[server.tls.sni]]\nhosts = \"chat.acme.example\"\ncert = \"file:{ac}\"\nkey = \"file:{ak}\"\n\
         [[server.tls.sni]]\nhosts = [\"*.globex.example\"]\ncert = \"file:{gc}\"\nkey = \"file:{gk}\"\n"
    );
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake.url(), &tls_table(&dc, &dk, &sni), "", ""));
    let addr = gw.listen;

    assert_eq!(served_cert(addr, Some("chat.acme.example")).await, acme.der);
    assert_eq!(served_cert(addr, Some("CHAT.ACME.example")).await, acme.der);
    assert_eq!(
        served_cert(addr, Some("eu.globex.example")).await,
        globex.der
    );
    assert_eq!(served_cert(addr, Some(HOST)).await, default.der);
    assert_eq!(
        served_cert(addr, Some("unknown.example")).await,
        default.der
    );
    assert_eq!(served_cert(addr, None).await, default.der);

    // A fully verifying client on each tenant host name.
    for host in ["chat.acme.example", "eu.globex.example", HOST] {
        let resp = ca
            .https_client(false, &[(host, addr)])
            .get(format!(
                "https://{host}:{}/app?api_key={API_KEY}",
                addr.port()
            ))
            .header("authorization", session_for("alice"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(
            (resp.version(), resp.status().as_u16()),
            (Version::HTTP_2, 200)
        );
    }
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_and_keeps_them_when_the_new_ones_are_broken() {
    let s = setup("", "", "");
    let addr: SocketAddr = s.gw.listen;
    let dir = s.ca.dir().to_path_buf();
    assert_eq!(served_cert(addr, Some(HOST)).await, s.default_der);
    // An HTTP/2 connection opened before the reload keeps working after it.
    let c = s.client(false);
    let get = || {
        c.get(s.url(&format!("/app?api_key={API_KEY}")))
            .header("authorization", session_for("alice"))
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);

    // A renewed certificate: new handshakes get it.
    let renewed = s.ca.issue(&[HOST], None);
    s.ca.write_leaf("default", &renewed);
    s.gw.signal("HUP");
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "new handshakes see the renewed certificate",
        || async { served_cert(addr, Some(HOST)).await == renewed.der },
    )
    .await;
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(s.gw.stderr().contains("TLS certificates reloaded"));

    // A broken one (the key of another certificate): refused, the renewed
    // certificate keeps serving, one line names the problem.
    let other = s.ca.issue(&[HOST], None);
    std::fs::write(dir.join("default.key"), &other.key_pem).unwrap();
    s.gw.signal("HUP");
    let gw = &s.gw;
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "the refused reload is logged",
        || async { gw.stderr().contains("config reload refused") },
    )
    .await;
    let stderr = s.gw.stderr();
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("config reload refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{stderr}");
    assert!(
        refused[0].contains("server.tls.key") && refused[0].contains("does not match"),
        "{stderr}"
    );
    for pem in [&other.key_pem, &renewed.key_pem] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!stderr.contains(line), "key material in the log:\n{stderr}");
        }
    }
    assert_eq!(served_cert(addr, Some(HOST)).await, renewed.der);
    assert_eq!(get().await.unwrap().status(), 200);
    let m = metrics_text(&s.gw).await;
    assert_eq!(
        metric(&m, "stream_gateway_config_reloads_total{result=\"ok\"}"),
        1
    );
    assert_eq!(
        metric(&m, "stream_gateway_config_reloads_total{result=\"error\"}"),
        1
    );

    // Fixed again: the next SIGHUP takes it.
    std::fs::write(dir.join("default.key"), &renewed.key_pem).unwrap();
    let third = s.ca.issue(&[HOST], None);
    s.ca.write_leaf("default", &third);
    s.gw.signal("HUP");
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "new handshakes see the third certificate",
        || async { served_cert(addr, Some(HOST)).await == third.der },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_only_where_enabled() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let prior_knowledge = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |c: &reqwest::Client, gw: &Gateway| {
        c.get(format!("{}/app?api_key={API_KEY}", gw.url()))
            .header("authorization", session_for("alice"))
            .send()
    };

    let plain = Gateway::start(&config(&fake.url(), "", "", ""));
    match get(&prior_knowledge, &plain).await {
        Ok(resp) => panic!(
            "an HTTP/2 prior-knowledge request worked without h2c: {:?} {}",
            resp.version(),
            resp.status()
        ),
        Err(e) => assert!(!e.is_timeout(), "{e:?}"),
    }
    assert_eq!(get(&client(), &plain).await.unwrap().status(), 200);

    let h2c = Gateway::start(&config(&fake.url(), "h2c = true", "", ""));
    let resp = get(&prior_knowledge, &h2c).await.expect("h2c request");
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (Version::HTTP_2, 200)
    );
    // HTTP/1.1 still works on the same listener.
    let resp = get(&client(), &h2c).await.expect("HTTP/1.1 request");
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (Version::HTTP_11, 200)
    );
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_opened_and_reused_are_counted() {
    let s = setup("", "", "");
    let c = s.client(false);
    let series = |m: &str| {
        (
            metric(
                m,
                "stream_gateway_upstream_connections_total{reused=\"false\"}",
            ),
            metric(
                m,
                "stream_gateway_upstream_connections_total{reused=\"true\"}",
            ),
        )
    };
    assert_eq!(series(&metrics_text(&s.gw).await), (0, 0));
    for _ in 0..5 {
        let resp = c
            .get(s.url(&format!("/app?api_key={API_KEY}")))
            .header("authorization", session_for("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(series(&metrics_text(&s.gw).await), (1, 4));
    // Refusals never touch the upstream.
    let resp = c.get(s.url("/app")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(series(&metrics_text(&s.gw).await), (1, 4));
    // Eight at once over one HTTP/2 connection: the pool opens what it
    // lacks, and every request is counted once.
    let reqs = (0..8).map(|_| {
        c.get(s.url(&format!("/app?api_key={API_KEY}")))
            .header("authorization", session_for("alice"))
            .send()
    });
    for resp in futures_util::future::join_all(reqs).await {
        assert_eq!(resp.unwrap().status(), 200);
    }
    let (opened, reused) = series(&metrics_text(&s.gw).await);
    assert_eq!(opened + reused, 13, "{opened} opened, {reused} reused");
    assert!((1..=9).contains(&opened), "{opened} opened");
}

/// `stream-gateway check` on `text` (written beside the PEM files).
fn check(dir: &std::path::Path, text: &str) -> (bool, String) {
    let path = dir.join("check.toml");
    let text = text
        .replace("@LISTEN@", "127.0.0.1:1")
        .replace("@ADMIN@", "127.0.0.1:2");
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn config_check_reports_each_certificate_problem_on_one_line() {
    let ca = TestCa::new();
    let good = ca.issue(&[HOST], None);
    let other = ca.issue(&["other.example"], None);
    let (gc, gk) = ca.write_leaf("good", &good);
    let (oc, ok) = ca.write_leaf("other", &other);
    let ca_path = ca.pem_path();
    let dir = ca.dir();

    let (passed, out) = check(
        dir,
        &config("https://127.0.0.1:3", &tls_table(&gc, &gk, ""), "", ""),
    );
    assert!(passed, "{out}");
    assert!(
        out.contains(
            "tls: 1 certificate(s) (the default and one per SNI entry), ALPN h2, http/1.1"
        ),
        "{out}"
    );

    let cases: Vec<(String, String, &str)> = vec![
        (
            tls_table(&format!("{gc}.missing"), &gk, ""),
            String::new(),
            "server.tls.cert: cannot read file",
        ),
        (
            tls_table(&gc, &ok, ""),
            String::new(),
            "server.tls.key: the private key does not match the certificate",
        ),
        (
            tls_table(&gk, &gk, ""),
            String::new(),
            "server.tls.cert: no CERTIFICATE block",
        ),
        (
            tls_table(&gc, &gc, ""),
            String::new(),
            "server.tls.key: no private key block",
        ),
        (
            tls_table(
                &gc,
                &gk,
                &format!("[[server.tls.sni]]\nhosts = [\"chat.acme.example\"]\ncert = \"file:{oc}\"\nkey = \"file:{ok}\"\n"),
            ),
            String::new(),
            "server.tls.sni[0].cert: the certificate does not cover \"chat.acme.example\"",
        ),
        (
            tls_table(
                &gc,
                &gk,
                &format!("[[server.tls.sni]]\nhosts = \"other.example\"\ncert = \"file:{oc}\"\nkey = \"file:{ok}\"\n\
                          [[server.tls.sni]]\nhosts = \"other.example\"\ncert = \"file:{oc}\"\nkey = \"file:{ok}\"\n"),
            ),
            String::new(),
            "server.tls.sni[1].hosts: \"other.example\" is listed by an earlier entry",
        ),
        (
            tls_table(
                &gc,
                &gk,
                &format!("[[server.tls.sni]]\nhosts = \"1.2.3.4\"\ncert = \"file:{oc}\"\nkey = \"file:{ok}\"\n"),
            ),
            String::new(),
            "server.tls.sni[0].hosts: \"1.2.3.4\" is not a valid DNS name",
        ),
        (
            format!("h2c = true\n{}", tls_table(&gc, &gk, "")),
            String::new(),
            "server.h2c: only for a plain listener",
        ),
        (
            String::new(),
            format!("ca = \"file:{ca_path}.missing\""),
            "upstream.ca: cannot read file",
        ),
        (
            String::new(),
            format!("ca = \"file:{gk}\""),
            "holds a private key block",
        ),
        (
            String::new(),
            format!("ca = \"{ca_path}\""),
            "upstream.ca: must be file:PATH",
        ),
    ];
    for (server_extra, upstream_extra, want) in cases {
        let text = config("https://127.0.0.1:3", &server_extra, "", "").replacen(
            "connect_timeout = \"2s\"",
            &format!("connect_timeout = \"2s\"\n{upstream_extra}"),
            1,
        );
        let (passed, out) = check(dir, &text);
        assert!(!passed, "accepted ({want}):\n{text}");
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{want}:\n{out}");
        assert!(lines[0].contains(want), "want {want:?}, got:\n{out}");
        for pem in [&good.key_pem, &other.key_pem] {
            for l in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!out.contains(l), "key material in:\n{out}");
            }
        }
    }

    // `ca` on a plain http:// upstream.
    let text = config("http://127.0.0.1:3", "", "", "").replacen(
        "connect_timeout = \"2s\"",
        &format!("connect_timeout = \"2s\"\nca = \"file:{ca_path}\""),
        1,
    );
    let (passed, out) = check(dir, &text);
    assert!(
        !passed && out.contains("upstream.ca: only for an https:// upstream"),
        "{out}"
    );

    // Several problems: one line each.
    let text = config(
        "https://127.0.0.1:3",
        &format!(
            "h2c = true\n{}",
            tls_table(&gc, &ok, &format!("[[server.tls.sni]]\nhosts = \"x.example\"\ncert = \"file:{oc}\"\nkey = \"file:{ok}\"\n"))
        ),
        "",
        "",
    );
    let (passed, out) = check(dir, &text);
    assert!(!passed);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 3, "{out}");
}
