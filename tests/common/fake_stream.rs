//! A fake Stream Chat upstream for integration tests.
//!
//! It checks every request the way Stream does (api_key, `stream-auth-type`, a raw
//! HS256 JWT in `authorization`, `user_id` query vs token), records every request
//! (even refused ones) and answers in Stream's JSON shapes.
//!
//! Test-control request headers (they travel through the gateway untouched):
//! - `x-fake-delay-ms: N`: sleep N ms before answering (applies before everything,
//!   but the request is recorded on arrival, before the sleep);
//! - `x-fake-status: NNN`: after a successful auth check, answer NNN with a Stream
//!   error body (code 9 for 429 plus rate-limit headers, 16 for 404, else 4);
//! - `x-fake-gzip: 1`: after a successful auth check, gzip the success body and set
//!   `Content-Encoding: gzip`.
//!
//! Every response from the fake carries `x-fake-upstream: 1`, so tests can tell an
//! upstream answer from a gateway refusal.
//!
//! `GET /connect` with a websocket upgrade is Stream's chat socket (see
//! `stream-protocol.md` section 1). It is recorded like any request, then checked from
//! the QUERY (`api_key`, `stream-auth-type`, `authorization`, `json`), never from
//! headers. A refusal completes the upgrade, sends one text frame
//! `{"error": <stream_error_json>}` and closes with 1000. An accepted socket first gets
//! a `health.check` with `connection_id` and `me`; then a client text frame that is a
//! JSON array starting with `{"type":"health.check"}` gets a `health.check` reply
//! (no `me`), any other text or binary frame is echoed unchanged, pings get pongs.
//! Test control through the `json` payload: `"fake_close_after_ms": N` closes the
//! socket with 1000 after N ms; `"fake_push_every_ms": N` sends
//! `{"type":"fake.tick","n":k}` (k = 1, 2, ...) every N ms. A `/connect` request
//! that is not a websocket upgrade is served like any REST request.
//!
//! The server runs on its own std::thread with its own tokio runtime, so it works
//! from sync tests and outlives any `#[tokio::test]` runtime.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts as _;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The `more_info` URL Stream puts in every error body.
pub const STREAM_MORE_INFO: &str = "https://getstream.io/chat/docs/api_errors_response";

/// What the fake concluded about a request's credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamAuth {
    /// `stream-auth-type: jwt` with a valid user token (`{"user_id": ...}`).
    User {
        user_id: String,
        iat: Option<i64>,
        exp: Option<i64>,
        /// The raw JWT as received in `authorization`.
        token: String,
    },
    /// `stream-auth-type: jwt` with a valid server token (`{"server": true}`).
    Server {
        iat: Option<i64>,
        exp: Option<i64>,
        token: String,
    },
    /// `stream-auth-type: anonymous` without an `authorization` header.
    Anonymous,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path exactly as received on the wire (still percent-encoded).
    pub path: String,
    /// The query string as received (without `?`), if any.
    pub raw_query: Option<String>,
    /// Decoded query pairs in order (form decoding: `+` is a space).
    pub query: Vec<(String, String)>,
    /// Lowercase header names with every value. Repeated headers appear as repeated
    /// entries. Order: names in first-seen order, the values of one name together
    /// (hyper does not keep the exact interleaving of different names).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The verdict of the full check (api_key, token, `user_id` match); `Err(reason)`
    /// when the fake refused the request.
    pub auth: Result<StreamAuth, String>,
}

impl Recorded {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// First decoded value of query parameter `k`.
    pub fn query_param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    }

    /// Every decoded value of query parameter `k`, in order.
    pub fn query_all(&self, k: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body parsed as JSON (panics with the body text when it is not JSON).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `json` query parameter (the `/connect` payload) parsed as JSON; `None` when
    /// absent or not JSON. Shows e.g. a `user_token` a client put in it.
    pub fn connect_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.query_param("json")?).ok()
    }

    /// The user id of a valid user token, if the request was accepted as a user.
    pub fn user_id(&self) -> Option<&str> {
        match &self.auth {
            Ok(StreamAuth::User { user_id, .. }) => Some(user_id),
            _ => None,
        }
    }
}

/// Stream's error body: `{"code","message","StatusCode","duration","more_info","details"}`.
pub fn stream_error_json(code: i64, status: u16, msg: &str) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "message": msg,
        "StatusCode": status,
        "duration": "0.01ms",
        "more_info": STREAM_MORE_INFO,
        "details": [],
    })
}

/// The `/connect` query string the JS SDK builds for a user with a JWT (without `?`):
/// `json={"user_id":U,"user_details":{"id":U},"client_request_id":"x"}`, `api_key`,
/// `authorization` (raw JWT), `stream-auth-type=jwt`,
/// `X-Stream-Client=stream-chat-js-v9.49.0-node`, form-encoded like `URLSearchParams`.
pub fn connect_query(api_key: &str, token: &str, user_id: &str) -> String {
    connect_query_with(
        api_key,
        token,
        "jwt",
        &serde_json::json!({
            "user_id": user_id,
            "user_details": {"id": user_id},
            "client_request_id": "x",
        }),
    )
}

/// Like [`connect_query`] with any `stream-auth-type` and `json` payload (anonymous
/// users, `user_token`, the `fake_*` test controls).
pub fn connect_query_with(
    api_key: &str,
    token: &str,
    auth_type: &str,
    json: &serde_json::Value,
) -> String {
    [
        ("json", json.to_string().as_str()),
        ("api_key", api_key),
        ("authorization", token),
        ("stream-auth-type", auth_type),
        ("X-Stream-Client", "stream-chat-js-v9.49.0-node"),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
    .collect::<Vec<_>>()
    .join("&")
}

/// `application/x-www-form-urlencoded` encoding as `URLSearchParams` does it: space is
/// `+`; `A-Z a-z 0-9 * - . _` are kept; every other byte is `%XX`.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A running fake Stream upstream. Dropping it stops the server.
pub struct FakeStream {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    open_sockets: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// api_key -> api_secret
    apps: HashMap<String, String>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    /// Accepted `/connect` sockets currently open.
    open_sockets: Arc<AtomicUsize>,
}

impl FakeStream {
    /// Starts the fake on 127.0.0.1:0. `apps` are the `(api_key, api_secret)` pairs it
    /// accepts. Returns once the socket is listening.
    pub fn start(apps: &[(&str, &str)]) -> FakeStream {
        Self::start_on("127.0.0.1:0", apps)
    }

    /// Like [`FakeStream::start`], on a chosen address (the dev example).
    pub fn start_on(bind: &str, apps: &[(&str, &str)]) -> FakeStream {
        let bind = bind.to_string();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let open_sockets = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            apps: apps
                .iter()
                .map(|(k, s)| (k.to_string(), s.to_string()))
                .collect(),
            recorded: recorded.clone(),
            open_sockets: open_sockets.clone(),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();

        let thread = std::thread::Builder::new()
            .name("fake-stream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fake-stream-rt")
                    .enable_all()
                    .build()
                    .expect("fake stream: build tokio runtime");
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind(bind.as_str()).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    let ws_shared = shared.clone();
                    let app = axum::Router::new()
                        .route(
                            "/connect",
                            axum::routing::any(move |req: Request<Body>| {
                                let shared = ws_shared.clone();
                                async move { connect(shared, req).await }
                            }),
                        )
                        .fallback(move |req: Request<Body>| {
                            let shared = shared.clone();
                            async move { handle(shared, req).await }
                        });
                    tokio::select! {
                        res = axum::serve(listener, app) => {
                            if let Err(e) = res {
                                eprintln!("fake stream: server error: {e}");
                            }
                        }
                        _ = shutdown_rx => {}
                    }
                });
                // Cancels in-flight connections (e.g. ones sleeping on x-fake-delay-ms).
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("fake stream: spawn thread");

        let addr = match addr_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("fake stream: bind failed: {e}"),
            Err(e) => panic!("fake stream: server thread did not start: {e}"),
        };
        FakeStream {
            addr,
            recorded,
            open_sockets,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT` (append `/connect?...`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Accepted `/connect` websockets currently open (refused ones are never counted).
    pub fn open_sockets(&self) -> usize {
        self.open_sockets.load(Ordering::SeqCst)
    }

    /// Polls until exactly `n` accepted websockets are open or `timeout` passes;
    /// returns the last count either way (callers assert on it).
    pub fn wait_for_open_sockets(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let open = self.open_sockets();
            if open == n || Instant::now() >= deadline {
                return open;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A snapshot of every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.recorded.lock().unwrap().clear();
    }

    /// Polls until at least `n` requests were recorded or `timeout` passes; returns the
    /// snapshot either way (callers assert on its length).
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n || Instant::now() >= deadline {
                return reqs;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeStream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why the fake refused a request.
struct Refusal {
    status: u16,
    code: i64,
    reason: String,
}

fn refuse(status: u16, code: i64, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        reason: reason.into(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();

    let path = parts.uri.path().to_string();
    let (raw_query, query, headers) = describe(&parts);

    let verdict = check(&shared.apps, &query, &parts.headers);
    let rec = Recorded {
        method: parts.method.as_str().to_string(),
        path: path.clone(),
        raw_query,
        query,
        headers,
        body,
        auth: verdict
            .as_ref()
            .map(Clone::clone)
            .map_err(|r| r.reason.clone()),
    };
    let body_len = rec.body.len();
    shared.recorded.lock().unwrap().push(rec);

    if let Some(ms) = header_str(&parts.headers, "x-fake-delay-ms") {
        match ms.trim().parse::<u64>() {
            Ok(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Err(_) => {
                return error_response(400, 4, &format!("fake: bad x-fake-delay-ms {ms:?}"));
            }
        }
    }

    let auth = match verdict {
        Ok(a) => a,
        Err(r) => return error_response(r.status, r.code, &r.reason),
    };

    if let Some(s) = header_str(&parts.headers, "x-fake-status") {
        let status = match s.trim().parse::<u16>() {
            Ok(n) if StatusCode::from_u16(n).is_ok() => n,
            _ => return error_response(400, 4, &format!("fake: bad x-fake-status {s:?}")),
        };
        let code = match status {
            429 => 9,
            404 => 16,
            _ => 4,
        };
        let mut resp = error_response(status, code, &format!("fake: forced status {status}"));
        if status == 429 {
            let h = resp.headers_mut();
            set(h, "x-ratelimit-limit", "60");
            set(h, "x-ratelimit-remaining", "0");
            set(h, "x-ratelimit-reset", &(unix_now() + 60).to_string());
            set(h, "retry-after", "60");
        }
        return resp;
    }

    let (user_id, kind) = match &auth {
        StreamAuth::User { user_id, .. } => (serde_json::json!(user_id), "jwt"),
        StreamAuth::Server { .. } => (serde_json::Value::Null, "server"),
        StreamAuth::Anonymous => (serde_json::Value::Null, "anonymous"),
    };
    let json = serde_json::json!({
        "duration": "0.42ms",
        "fake": {
            "method": parts.method.as_str(),
            "path": path,
            "user_id": user_id,
            "auth": kind,
            "body_len": body_len,
        }
    });
    let mut bytes = serde_json::to_vec(&json).expect("serialize");
    let gzip = header_str(&parts.headers, "x-fake-gzip").map(str::trim) == Some("1");
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).expect("gzip");
        bytes = enc.finish().expect("gzip");
    }
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    set(h, "content-type", "application/json");
    if gzip {
        set(h, "content-encoding", "gzip");
    }
    set(h, "x-ratelimit-limit", "1000");
    set(h, "x-ratelimit-remaining", "999");
    set(h, "x-ratelimit-reset", &(unix_now() + 60).to_string());
    set(h, "x-fake-upstream", "1");
    resp
}

/// Raw query, decoded query pairs and lowercase headers of a request, as recorded.
#[allow(clippy::type_complexity)]
fn describe(
    parts: &axum::http::request::Parts,
) -> (Option<String>, Vec<(String, String)>, Vec<(String, String)>) {
    let raw_query = parts.uri.query().map(str::to_string);
    let query = raw_query.as_deref().map(decode_form).unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    (raw_query, query, headers)
}

/// `/connect`: a websocket upgrade is recorded, checked from the query and served as
/// Stream's chat socket; anything else is served like a REST request.
async fn connect(shared: Arc<Shared>, req: Request<Body>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(_) => return handle(shared, Request::from_parts(parts, body)).await,
    };
    let (raw_query, query, headers) = describe(&parts);
    let verdict = check_connect(&shared.apps, &query);
    shared.recorded.lock().unwrap().push(Recorded {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        raw_query,
        query,
        headers,
        body: Vec::new(),
        auth: verdict
            .as_ref()
            .map(|(auth, _, _)| auth.clone())
            .map_err(|r| r.reason.clone()),
    });
    let mut resp = upgrade
        .on_upgrade(move |socket| async move {
            match verdict {
                Ok((_, user_id, payload)) => serve_socket(shared, socket, user_id, payload).await,
                Err(r) => refuse_socket(socket, r).await,
            }
        })
        .into_response();
    set(resp.headers_mut(), "x-fake-upstream", "1");
    resp
}

/// The check Stream does on `/connect`, all from the query. On success: the auth, the
/// user id (`json.user_id`) and the parsed `json` payload.
fn check_connect(
    apps: &HashMap<String, String>,
    query: &[(String, String)],
) -> Result<(StreamAuth, String, serde_json::Value), Refusal> {
    let first = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let count = |name: &str| query.iter().filter(|(k, _)| k == name).count();

    // 1. api_key
    let api_key = first("api_key");
    let secret = match api_key.and_then(|k| apps.get(k)) {
        Some(s) => s,
        None => {
            return Err(refuse(
                401,
                2,
                format!("api_key not found: {:?}", api_key.unwrap_or("<missing>")),
            ))
        }
    };

    // 2. stream-auth-type and authorization query params
    if count("stream-auth-type") > 1 {
        return Err(refuse(401, 5, "multiple stream-auth-type query params"));
    }
    if count("authorization") > 1 {
        return Err(refuse(401, 5, "multiple authorization query params"));
    }
    let authorization = first("authorization").filter(|t| !t.is_empty());
    let auth = match first("stream-auth-type") {
        Some("jwt") => {
            let token =
                authorization.ok_or_else(|| refuse(401, 5, "missing authorization query param"))?;
            match verify_jwt(token, secret)? {
                user @ StreamAuth::User { .. } => user,
                _ => {
                    return Err(refuse(
                        401,
                        5,
                        "a server token cannot open a websocket; user_id claim required",
                    ))
                }
            }
        }
        Some("anonymous") => {
            if authorization.is_some() {
                return Err(refuse(
                    401,
                    5,
                    "authorization not allowed with stream-auth-type anonymous",
                ));
            }
            StreamAuth::Anonymous
        }
        Some(other) => {
            return Err(refuse(
                401,
                5,
                format!("bad stream-auth-type query param {other:?}"),
            ))
        }
        None => return Err(refuse(401, 5, "missing stream-auth-type query param")),
    };

    // 3. the json payload and its user_id
    let raw = first("json").ok_or_else(|| refuse(400, 4, "missing json query param"))?;
    let payload: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| refuse(400, 4, format!("json query param is not JSON: {e}")))?;
    let json_user = match payload.get("user_id") {
        Some(serde_json::Value::String(u)) if !u.is_empty() => u.clone(),
        _ => {
            return Err(refuse(
                400,
                4,
                "json query param needs a non-empty string user_id",
            ))
        }
    };
    if let StreamAuth::User { user_id, .. } = &auth {
        if *user_id != json_user {
            return Err(refuse(
                403,
                17,
                format!("json user_id {json_user:?} does not match token user_id {user_id:?}"),
            ));
        }
    }
    Ok((auth, json_user, payload))
}

/// Stream's refusal on an upgraded socket: one error frame, then close 1000.
async fn refuse_socket(mut ws: WebSocket, r: Refusal) {
    let frame = serde_json::json!({ "error": stream_error_json(r.code, r.status, &r.reason) });
    if ws
        .send(Message::Text(frame.to_string().into()))
        .await
        .is_ok()
    {
        close_1000(ws).await;
    }
}

/// Sends close 1000, then waits (up to 2 s) for the peer's close reply.
async fn close_1000(mut ws: WebSocket) {
    let frame = CloseFrame {
        code: 1000,
        reason: "".into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.recv().await {}
        })
        .await;
    }
}

/// Decrements the open-socket counter when the socket task ends (or is dropped).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted chat socket: `health.check` first, then heartbeats, echo and the
/// `fake_*` controls from the `json` payload.
async fn serve_socket(
    shared: Arc<Shared>,
    mut ws: WebSocket,
    user_id: String,
    payload: serde_json::Value,
) {
    shared.open_sockets.fetch_add(1, Ordering::SeqCst);
    let _guard = OpenGuard(shared.open_sockets.clone());

    let connection_id = new_connection_id();
    let hello = serde_json::json!({
        "type": "health.check",
        "connection_id": connection_id,
        "cid": "*",
        "me": {"id": user_id, "role": "user"},
        "created_at": created_at(),
    });
    if ws
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }

    let control = |name: &str| payload.get(name).and_then(serde_json::Value::as_u64);
    let close_at = control("fake_close_after_ms")
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut ticker = control("fake_push_every_ms")
        .filter(|&ms| ms > 0)
        .map(|ms| {
            let every = Duration::from_millis(ms);
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
    let mut ticks = 0u64;

    loop {
        tokio::select! {
            msg = ws.recv() => {
                let reply = match msg {
                    None | Some(Err(_)) => return,
                    Some(Ok(Message::Text(t))) => {
                        if is_client_health_check(t.as_str()) {
                            let hc = serde_json::json!({
                                "type": "health.check",
                                "connection_id": connection_id,
                                "created_at": created_at(),
                            });
                            Message::Text(hc.to_string().into())
                        } else {
                            Message::Text(t)
                        }
                    }
                    Some(Ok(Message::Binary(b))) => Message::Binary(b),
                    // tungstenite answers pings and close frames by itself; after a
                    // close, keep reading until the stream ends.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => continue,
                };
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
            _ = sleep_until_opt(close_at) => {
                close_1000(ws).await;
                return;
            }
            _ = tick_opt(&mut ticker) => {
                ticks += 1;
                let tick = serde_json::json!({"type": "fake.tick", "n": ticks});
                if ws.send(Message::Text(tick.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The JS client's heartbeat: a JSON array whose first element has
/// `"type":"health.check"`.
fn is_client_health_check(text: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => {
            items
                .first()
                .and_then(|v| v.get("type"))
                .and_then(serde_json::Value::as_str)
                == Some("health.check")
        }
        _ => false,
    }
}

/// A UUID-shaped id, unique within the process.
fn new_connection_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    let r = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        r >> 32,
        (r >> 16) & 0xffff,
        r & 0xfff,
        (r >> 20) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// Now as RFC 3339 with nanoseconds, like Stream's `created_at`.
fn created_at() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    h.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("header value"),
    );
}

fn error_response(status: u16, code: i64, msg: &str) -> Response<Body> {
    let body = serde_json::to_vec(&stream_error_json(code, status, msg)).expect("serialize");
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    set(h, "content-type", "application/json");
    set(h, "x-fake-upstream", "1");
    resp
}

/// First value of a header as text (lossy), `None` if absent.
fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap_or("<non-ascii>"))
}

/// The check Stream does before serving a request.
fn check(
    apps: &HashMap<String, String>,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Result<StreamAuth, Refusal> {
    // 1. api_key
    let api_key = query
        .iter()
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v.as_str());
    let secret = match api_key.and_then(|k| apps.get(k)) {
        Some(s) => s,
        None => {
            return Err(refuse(
                401,
                2,
                format!("api_key not found: {:?}", api_key.unwrap_or("<missing>")),
            ))
        }
    };

    // 2. stream-auth-type and the token
    let auth_types: Vec<_> = headers.get_all("stream-auth-type").iter().collect();
    let auth_headers: Vec<_> = headers.get_all("authorization").iter().collect();
    if auth_types.len() > 1 {
        return Err(refuse(401, 5, "multiple stream-auth-type headers"));
    }
    if auth_headers.len() > 1 {
        return Err(refuse(401, 5, "multiple authorization headers"));
    }
    let auth_type = auth_types
        .first()
        .map(|v| v.to_str().unwrap_or("<non-ascii>"));
    let authorization = auth_headers
        .first()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    let auth = match auth_type {
        Some("jwt") => {
            let token = match authorization {
                Some(t) => t,
                None => return Err(refuse(401, 5, "missing authorization header")),
            };
            verify_jwt(&token, secret)?
        }
        Some("anonymous") => {
            if authorization.is_some() {
                return Err(refuse(
                    401,
                    5,
                    "authorization header not allowed with stream-auth-type anonymous",
                ));
            }
            StreamAuth::Anonymous
        }
        Some(other) => {
            return Err(refuse(
                401,
                5,
                format!("bad stream-auth-type header {other:?}"),
            ))
        }
        None => return Err(refuse(401, 5, "missing stream-auth-type header")),
    };

    // 3. user_id query param must match a user token
    if let StreamAuth::User { user_id, .. } = &auth {
        for (k, v) in query {
            if k == "user_id" && v != user_id {
                return Err(refuse(
                    403,
                    17,
                    format!("user_id query param {v:?} does not match token user_id {user_id:?}"),
                ));
            }
        }
    }
    Ok(auth)
}

fn verify_jwt(token: &str, secret: &str) -> Result<StreamAuth, Refusal> {
    if token.len() >= 7 && token[..7].eq_ignore_ascii_case("bearer ") {
        return Err(refuse(
            401,
            5,
            "bearer prefix: authorization must be a raw JWT",
        ));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| refuse(401, 5, format!("malformed token header: {e}")))?;
    if header.alg != Algorithm::HS256 {
        return Err(refuse(
            401,
            5,
            format!("token alg {:?} not accepted, only HS256", header.alg),
        ));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => refuse(401, 43, format!("token signature invalid: {e}")),
        ErrorKind::ExpiredSignature => refuse(401, 40, format!("token is expired: {e}")),
        _ => refuse(401, 5, format!("token not valid: {e}")),
    })?;
    let claims = data.claims;
    let iat = claims.get("iat").and_then(|v| v.as_i64());
    let exp = claims.get("exp").and_then(|v| v.as_i64());
    // Stream rejects tokens issued in the future (code 42).
    if let Some(iat) = iat {
        if iat > unix_now() {
            return Err(refuse(
                401,
                42,
                format!("token used before issued at (iat {iat})"),
            ));
        }
    }
    match claims.get("user_id") {
        Some(serde_json::Value::String(uid)) if !uid.is_empty() => Ok(StreamAuth::User {
            user_id: uid.clone(),
            iat,
            exp,
            token: token.to_string(),
        }),
        Some(serde_json::Value::String(_)) => Err(refuse(401, 5, "token user_id is empty")),
        Some(other) => Err(refuse(
            401,
            5,
            format!("token user_id is not a string: {other}"),
        )),
        None if claims.get("server") == Some(&serde_json::Value::Bool(true)) => {
            Ok(StreamAuth::Server {
                iat,
                exp,
                token: token.to_string(),
            })
        }
        None => Err(refuse(401, 5, "token has no user_id claim")),
    }
}

/// `application/x-www-form-urlencoded` decoding of a query string: `+` is a space,
/// `%XX` are bytes (invalid escapes kept literally), invalid UTF-8 replaced.
fn decode_form(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode_component(k), decode_component(v)),
            None => (decode_component(pair), String::new()),
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
