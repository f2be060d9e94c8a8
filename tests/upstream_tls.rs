//! The gateway's TLS client towards an `https://` upstream: it verifies the
//! certificate chain against its roots and the certificate against the
//! upstream host name, and sends SNI for a DNS host.
//!
//! A small TLS front (rustls, a leaf certificate issued at run time by a
//! throwaway CA) terminates TLS and pipes the plaintext to a plain
//! [`FakeStream`]; it records, for every connection, the SNI the client sent
//! and how the handshake ended. The gateway is made to trust the throwaway CA
//! through the `SSL_CERT_FILE` environment variable: pingora's rustls
//! connector loads its roots with `load_platform_certs_incl_env_into_store`,
//! i.e. `rustls_native_certs::load_native_certs`, which reads `SSL_CERT_FILE`
//! (and `SSL_CERT_DIR`) when set instead of the platform store; or through
//! `[upstream] ca`, which replaces those roots.

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::tls::TestCa;
use common::*;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::LazyConfigAcceptor;

/// One TLS connection the front accepted.
#[derive(Debug, Clone)]
struct Handshake {
    /// The SNI in the ClientHello, if any.
    sni: Option<String>,
    /// `Ok` once the handshake completed; otherwise the server-side error,
    /// e.g. `received fatal alert: UnknownCA` when the client refused the
    /// certificate.
    outcome: Result<(), String>,
}

/// A TLS terminator on its own thread and runtime: accepts TLS with the given
/// certificate, records each handshake, and pipes the decrypted bytes to
/// `backend` (plain TCP). Dropping it stops the thread.
struct TlsFront {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Handshake>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    fn start(
        bind: SocketAddr,
        (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        backend: SocketAddr,
    ) -> TlsFront {
        // An explicit provider: no dependence on a process-wide default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        let config = Arc::new(config);

        let listener = std::net::TcpListener::bind(bind).expect("TLS front: bind");
        listener
            .set_nonblocking(true)
            .expect("TLS front: non-blocking");
        let addr = listener.local_addr().expect("TLS front: local addr");
        let log: Arc<Mutex<Vec<Handshake>>> = Arc::default();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();

        let thread_log = Arc::clone(&log);
        let thread = std::thread::Builder::new()
            .name("tls-front".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("TLS front: runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("TLS front: tokio listener");
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((tcp, _)) => {
                                    tokio::spawn(serve(
                                        tcp,
                                        Arc::clone(&config),
                                        backend,
                                        Arc::clone(&thread_log),
                                    ));
                                }
                                Err(e) => eprintln!("TLS front: accept failed: {e}"),
                            },
                            _ = &mut shutdown_rx => break,
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("TLS front: spawn thread");

        TlsFront {
            addr,
            log,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Polls until at least `n` handshakes ended (either way) or `timeout`
    /// passes; returns the snapshot either way.
    fn wait_for_handshakes(&self, n: usize, timeout: Duration) -> Vec<Handshake> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.len() >= n || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    log: Arc<Mutex<Vec<Handshake>>>,
) {
    // Read the ClientHello first so the SNI is known even if the handshake
    // then fails.
    let start = match LazyConfigAcceptor::new(Acceptor::default(), tcp).await {
        Ok(start) => start,
        Err(e) => {
            log.lock().unwrap().push(Handshake {
                sni: None,
                outcome: Err(format!("no ClientHello: {e}")),
            });
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    let mut tls = match start.into_stream(config).await {
        Ok(tls) => tls,
        Err(e) => {
            log.lock().unwrap().push(Handshake {
                sni,
                outcome: Err(e.to_string()),
            });
            return;
        }
    };
    log.lock().unwrap().push(Handshake {
        sni,
        outcome: Ok(()),
    });
    match tokio::net::TcpStream::connect(backend).await {
        Ok(mut plain) => {
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        }
        Err(e) => eprintln!("TLS front: cannot reach the backend {backend}: {e}"),
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `GET /channels/messaging/general` with a valid session for alice.
async fn get_channel(gw: &Gateway) -> reqwest::Response {
    client()
        .get(format!(
            "{}/channels/messaging/general?api_key={API_KEY}",
            gw.url()
        ))
        .header("authorization", session_for("alice"))
        .send()
        .await
        .expect("request to the gateway")
}

/// The response was relayed from the fake through TLS, and the fake accepted
/// the minted token for alice.
async fn assert_relayed(resp: reqwest::Response, fake: &FakeStream, gw: &Gateway) {
    let status = resp.status();
    let from_fake = resp.headers().get("x-fake-upstream").is_some();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(
        status,
        200,
        "body: {body}\ngateway stderr:\n{}",
        gw.stderr()
    );
    assert!(from_fake, "answer did not come from the fake: {body}");
    let reqs = fake.wait_for_requests(1, Duration::from_secs(5));
    assert_eq!(reqs.len(), 1, "upstream requests: {reqs:#?}");
    match &reqs[0].auth {
        Ok(StreamAuth::User { user_id, .. }) => assert_eq!(user_id, "alice"),
        other => panic!("the fake did not accept the minted token: {other:?}"),
    }
}

/// The gateway refused with 502 (code -1), nothing reached the fake, and the
/// front saw the gateway abort every handshake with `alert` (the TLS alert
/// rustls sends for the certificate error), proving the refusal came from
/// certificate verification and not from, say, a connection failure.
async fn assert_refused_with_alert(
    resp: reqwest::Response,
    front: &TlsFront,
    fake: &FakeStream,
    gw: &Gateway,
    alert: &str,
) {
    assert_gateway_refusal(resp, 502, -1).await;
    let handshakes = front.wait_for_handshakes(1, Duration::from_secs(5));
    assert!(
        !handshakes.is_empty(),
        "the gateway never reached the TLS front; gateway stderr:\n{}",
        gw.stderr()
    );
    for h in &handshakes {
        match &h.outcome {
            Err(e) if e.contains(alert) => {}
            other => panic!(
                "expected every handshake to fail with {alert}, got {other:?} in {handshakes:#?}"
            ),
        }
    }
    assert!(
        fake.requests().is_empty(),
        "the fake must see nothing: {:#?}",
        fake.requests()
    );
}

// For an IP-literal upstream (`https://127.0.0.1:PORT`) rustls sends no SNI
// (RFC 6066 forbids IP addresses there) and verifies the certificate's IP
// SAN, so the tests below do not assert on SNI; `sni_names_the_upstream_host`
// covers SNI with a DNS name.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_upstream_certificate_is_accepted() {
    let ca = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let front = TlsFront::start(loopback(), ca.leaf("127.0.0.1"), fake.addr);
    let gw = Gateway::start_with_env(
        &gateway_config(&format!("https://{}", front.addr), "", ""),
        &[("SSL_CERT_FILE", ca.pem_path())],
    );

    assert_relayed(get_channel(&gw).await, &fake, &gw).await;
    let handshakes = front.wait_for_handshakes(1, Duration::from_secs(5));
    assert!(
        handshakes.iter().any(|h| h.outcome.is_ok()),
        "no completed handshake: {handshakes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_is_refused() {
    let ca = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let front = TlsFront::start(loopback(), ca.leaf("127.0.0.1"), fake.addr);
    // No SSL_CERT_FILE passed: the gateway uses the roots of the environment
    // it inherits (the platform store, or whatever bundle SSL_CERT_FILE /
    // SSL_CERT_DIR point at in the test environment). None of them can hold
    // a CA generated a moment ago.
    let gw = Gateway::start_with_env(
        &gateway_config(&format!("https://{}", front.addr), "", ""),
        &[],
    );

    let resp = get_channel(&gw).await;
    assert_refused_with_alert(resp, &front, &fake, &gw, "UnknownCA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_host_is_refused() {
    let ca = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    // Trusted issuer, wrong name: the leaf only covers other.example.
    let front = TlsFront::start(loopback(), ca.leaf("other.example"), fake.addr);
    let gw = Gateway::start_with_env(
        &gateway_config(&format!("https://{}", front.addr), "", ""),
        &[("SSL_CERT_FILE", ca.pem_path())],
    );

    let resp = get_channel(&gw).await;
    assert_refused_with_alert(resp, &front, &fake, &gw, "BadCertificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_names_the_upstream_host() {
    // The gateway connects to the first address `localhost` resolves to
    // (std's resolver, like src/upstream.rs), so the front listens on that
    // same address: 127.0.0.1 or ::1, whichever this machine lists first.
    let bind = ("localhost", 0)
        .to_socket_addrs()
        .expect("resolve localhost")
        .next()
        .expect("localhost has an address");
    let ca = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let front = TlsFront::start(bind, ca.leaf("localhost"), fake.addr);
    let gw = Gateway::start_with_env(
        &gateway_config(&format!("https://localhost:{}", front.addr.port()), "", ""),
        &[("SSL_CERT_FILE", ca.pem_path())],
    );

    assert_relayed(get_channel(&gw).await, &fake, &gw).await;
    let handshakes = front.wait_for_handshakes(1, Duration::from_secs(5));
    assert!(!handshakes.is_empty());
    for h in &handshakes {
        assert_eq!(h.outcome, Ok(()), "{handshakes:#?}");
        assert_eq!(h.sni.as_deref(), Some("localhost"), "{handshakes:#?}");
    }
}

/// The gateway config for an https upstream at `front` trusting `ca` by
/// `[upstream] ca` (inserted in the `[upstream]` table).
fn config_with_ca(front: SocketAddr, ca: &TestCa) -> String {
    gateway_config(&format!("https://{front}"), "", "").replace(
        "connect_timeout = \"2s\"",
        &format!("connect_timeout = \"2s\"\nca = \"file:{}\"", ca.pem_path()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ca_replaces_the_system_roots() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let front = TlsFront::start(loopback(), ca.leaf("127.0.0.1"), fake.addr);
    // SSL_CERT_FILE names another CA: only `ca` can make this work.
    let gw = Gateway::start_with_env(
        &config_with_ca(front.addr, &ca),
        &[("SSL_CERT_FILE", other.pem_path())],
    );
    assert_relayed(get_channel(&gw).await, &fake, &gw).await;

    // And the other way round: `ca` trusting another CA refuses this upstream
    // even though SSL_CERT_FILE would have trusted it.
    let fake2 = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let front2 = TlsFront::start(loopback(), ca.leaf("127.0.0.1"), fake2.addr);
    let gw2 = Gateway::start_with_env(
        &config_with_ca(front2.addr, &other),
        &[("SSL_CERT_FILE", ca.pem_path())],
    );
    let resp = get_channel(&gw2).await;
    assert_refused_with_alert(resp, &front2, &fake2, &gw2, "UnknownCA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_upstream_certificate_is_refused() {
    let ca = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    // Trusted issuer, right name, validity 2001-2002.
    let expired = ca.issue(&["127.0.0.1"], Some((2001, 2002)));
    let front = TlsFront::start(loopback(), expired.rustls_pair(), fake.addr);
    let gw = Gateway::start(&config_with_ca(front.addr, &ca));

    let resp = get_channel(&gw).await;
    assert_refused_with_alert(resp, &front, &fake, &gw, "CertificateExpired").await;
}

/// A counter of `/metrics`, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_connections_are_pooled_and_counted() {
    let ca = TestCa::new();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let front = TlsFront::start(loopback(), ca.leaf("127.0.0.1"), fake.addr);
    let gw = Gateway::start(&config_with_ca(front.addr, &ca));

    for _ in 0..4 {
        let resp = get_channel(&gw).await;
        assert_eq!(resp.status(), 200, "gateway stderr:\n{}", gw.stderr());
    }
    // One TLS handshake for four requests: the connection was kept alive.
    let handshakes = front.wait_for_handshakes(1, Duration::from_secs(5));
    assert_eq!(handshakes.len(), 1, "{handshakes:#?}");
    let m = metrics_text(&gw).await;
    let opened = metric(
        &m,
        "stream_gateway_upstream_connections_total{reused=\"false\"}",
    );
    let reused = metric(
        &m,
        "stream_gateway_upstream_connections_total{reused=\"true\"}",
    );
    assert_eq!((opened, reused), (1, 3), "{m}");
}
