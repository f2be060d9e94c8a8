//! A fake Stream Chat upstream for integration tests.
//!
//! It checks every request the way Stream does (api_key, `stream-auth-type`, a raw
//! HS256 JWT in `authorization`, `user_id` query vs token; a token without
//! `user_id` is server-side auth, refused on `/connect`), records every request
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
//! Chat (enough of Stream for the JS SDK's real code paths, per app, in memory):
//! `POST /channels/{type}/{id}/query` and `POST /channels` (QueryChannels; with
//! `watch: true` and the socket's `connection_id`, the socket watches the
//! channels), `POST .../message`,
//! `POST /messages/{id}/reaction` and `POST /channels/{type}/{id}/read` answer with
//! the shapes the SDK parses (`ChannelAPIResponse`, `{message}`, `{message, reaction}`,
//! `{event}`), and push `message.new`, `reaction.new`, `message.read` and
//! `user.watching.start` to every socket watching the channel (the sender's too, as
//! Stream does). Simplifications: every channel exists (the first request on it
//! creates it) and every user who touches a channel becomes a member. These answers
//! keep the `fake` description object of the generic answer. Events pushed are
//! recorded ([`FakeStream::pushed`]).
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
    /// `stream-auth-type: jwt` with a valid server token: signed with the app
    /// secret, no `user_id` (the server SDKs send `{"server": true}`).
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

/// One event the fake pushed to an accepted `/connect` socket.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The socket's `connection_id` and user.
    pub connection_id: String,
    pub user_id: String,
    pub event: serde_json::Value,
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
    pushed: Arc<Mutex<Vec<Pushed>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// api_key -> api_secret
    apps: HashMap<String, String>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    /// Accepted `/connect` sockets currently open.
    open_sockets: Arc<AtomicUsize>,
    /// Channels, messages and the open sockets that events are pushed to.
    chat: Mutex<Chat>,
    /// Every event pushed to a socket.
    pushed: Arc<Mutex<Vec<Pushed>>>,
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
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            apps: apps
                .iter()
                .map(|(k, s)| (k.to_string(), s.to_string()))
                .collect(),
            recorded: recorded.clone(),
            open_sockets: open_sockets.clone(),
            chat: Mutex::new(Chat::default()),
            pushed: pushed.clone(),
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
            pushed,
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

    /// Forgets the recorded requests and pushed events.
    pub fn clear(&self) {
        self.recorded.lock().unwrap().clear();
        self.pushed.lock().unwrap().clear();
    }

    /// A snapshot of every event pushed to a socket so far, in order.
    pub fn pushed(&self) -> Vec<Pushed> {
        self.pushed.lock().unwrap().clone()
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
        query: query.clone(),
        headers,
        body: body.clone(),
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
    let fake = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "user_id": user_id,
        "auth": kind,
        "body_len": body_len,
    });
    let mut json = serde_json::json!({"duration": "0.42ms"});
    if let StreamAuth::User { user_id, .. } = &auth {
        let api_key = query
            .iter()
            .find(|(k, _)| k == "api_key")
            .map_or("", |(_, v)| v.as_str());
        let req = ChatRequest {
            method: parts.method.as_str(),
            path: &path,
            query: &query,
            body: &body,
            api_key,
            user_id,
        };
        match chat_route(&shared, &req) {
            Some(Ok(answer)) => json = answer,
            Some(Err(r)) => return error_response(r.status, r.code, &r.reason),
            None => {}
        }
    }
    json["duration"] = "0.42ms".into();
    json["fake"] = fake;
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
    let api_key = query
        .iter()
        .find(|(k, _)| k == "api_key")
        .map_or_else(String::new, |(_, v)| v.clone());
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
                Ok((_, user_id, payload)) => {
                    serve_socket(shared, socket, api_key, user_id, payload).await
                }
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
    api_key: String,
    user_id: String,
    payload: serde_json::Value,
) {
    shared.open_sockets.fetch_add(1, Ordering::SeqCst);
    let _guard = OpenGuard(shared.open_sockets.clone());

    let connection_id = new_connection_id();
    // Registered for event fan-out; unregistered (and removed from every channel's
    // watchers) when this task ends.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<String>();
    shared.chat.lock().unwrap().sockets.insert(
        connection_id.clone(),
        ChatSocket {
            api_key,
            user_id: user_id.clone(),
            tx: events_tx,
        },
    );
    let _registered = SocketRegistration {
        shared: shared.clone(),
        connection_id: connection_id.clone(),
    };
    let hello = serde_json::json!({
        "type": "health.check",
        "connection_id": connection_id,
        "cid": "*",
        "me": own_user(&user_id),
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
            Some(event) = events.recv() => {
                if ws.send(Message::Text(event.into())).await.is_err() {
                    return;
                }
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

/// `OwnUserResponse` for a freshly connected user: the spec's required fields (the
/// SDK copies `mutes` and `channel_mutes` into its state).
fn own_user(user_id: &str) -> serde_json::Value {
    let now = created_at();
    serde_json::json!({
        "id": user_id,
        "role": "user",
        "custom": {},
        "language": "",
        "teams": [],
        "created_at": now,
        "updated_at": now,
        "banned": false,
        "online": true,
        "invisible": false,
        "devices": [],
        "mutes": [],
        "channel_mutes": [],
        "blocked_user_ids": [],
        "unread_count": 0,
        "total_unread_count": 0,
        "unread_channels": 0,
        "unread_threads": 0,
    })
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
        // As Stream does: a token signed with the app secret and without a
        // user_id is server-side auth (the server SDKs sign {"server": true},
        // but it is the missing user_id that counts).
        None => Ok(StreamAuth::Server {
            iat,
            exp,
            token: token.to_string(),
        }),
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

// ---------------------------------------------------------------------------
// Chat: channels, messages, reactions, reads and the event fan-out to sockets.

/// An accepted socket, as the event fan-out sees it.
struct ChatSocket {
    api_key: String,
    user_id: String,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
}

/// Unregisters a socket (and its watches) when its task ends.
struct SocketRegistration {
    shared: Arc<Shared>,
    connection_id: String,
}

impl Drop for SocketRegistration {
    fn drop(&mut self) {
        let mut chat = self.shared.chat.lock().unwrap_or_else(|e| e.into_inner());
        chat.sockets.remove(&self.connection_id);
        for ch in chat.channels.values_mut() {
            ch.watchers.remove(&self.connection_id);
        }
    }
}

#[derive(Default)]
struct Chat {
    /// connection_id -> socket
    sockets: HashMap<String, ChatSocket>,
    /// (api_key, cid) -> channel
    channels: HashMap<(String, String), ChatChannel>,
    /// (api_key, message id) -> cid
    message_cids: HashMap<(String, String), String>,
}

struct ChatChannel {
    kind: String,
    id: String,
    created_by: String,
    created_at: String,
    /// (user id, joined at), in join order.
    members: Vec<(String, String)>,
    /// connection ids of the sockets watching the channel.
    watchers: std::collections::BTreeSet<String>,
    /// Messages as stored (without the reaction fields, computed per viewer).
    messages: Vec<serde_json::Value>,
    /// message id -> reactions, oldest first.
    reactions: HashMap<String, Vec<serde_json::Value>>,
    /// user id -> read state.
    reads: HashMap<String, ReadState>,
}

struct ReadState {
    last_read: String,
    last_read_message_id: Option<String>,
    /// How many of the channel's messages (in order) the user has read.
    read_count: usize,
}

/// A REST request with a valid user token, as the chat routes see it.
struct ChatRequest<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    body: &'a [u8],
    api_key: &'a str,
    user_id: &'a str,
}

impl ChatRequest<'_> {
    fn query_param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    }
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// The chat routes; `None` for any other request (served by the generic answer).
fn chat_route(shared: &Shared, req: &ChatRequest) -> Option<Result<serde_json::Value, Refusal>> {
    let segs: Vec<String> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .map(decode_path_segment)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let result = match (req.method, segs.as_slice()) {
        ("POST", ["channels"]) => query_channels(shared, req),
        ("POST", ["channels", kind, id, "query"]) => query_channel(shared, req, kind, id),
        ("POST", ["channels", kind, id, "message"]) => send_message(shared, req, kind, id),
        ("POST", ["channels", kind, id, "read"]) => mark_read(shared, req, kind, id),
        ("POST", ["messages", id, "reaction"]) => send_reaction(shared, req, id),
        _ => return None,
    };
    Some(result)
}

/// Percent-decoding of one path segment (`+` stays a plus).
fn decode_path_segment(s: &str) -> String {
    decode_component(&s.replace('+', "%2B"))
}

/// The request body as a JSON object; an empty body is `{}`.
fn json_body(body: &[u8]) -> Result<JsonMap, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonMap::new());
    }
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(refuse(400, 4, "request body must be a JSON object")),
        Err(e) => Err(refuse(400, 4, format!("request body is not JSON: {e}"))),
    }
}

impl Chat {
    /// The channel, created on first use; `user_id` becomes a member.
    fn channel_for(
        &mut self,
        api_key: &str,
        kind: &str,
        id: &str,
        user_id: &str,
    ) -> &mut ChatChannel {
        let ch = self
            .channels
            .entry((api_key.to_string(), format!("{kind}:{id}")))
            .or_insert_with(|| ChatChannel {
                kind: kind.to_string(),
                id: id.to_string(),
                created_by: user_id.to_string(),
                created_at: created_at(),
                members: Vec::new(),
                watchers: Default::default(),
                messages: Vec::new(),
                reactions: HashMap::new(),
                reads: HashMap::new(),
            });
        if !ch.members.iter().any(|(u, _)| u == user_id) {
            ch.members.push((user_id.to_string(), created_at()));
        }
        ch
    }

    fn online(&self, api_key: &str, user_id: &str) -> bool {
        self.sockets
            .values()
            .any(|s| s.api_key == api_key && s.user_id == user_id)
    }

    fn user(&self, api_key: &str, user_id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": user_id,
            "role": "user",
            "banned": false,
            "online": self.online(api_key, user_id),
        })
    }

    /// Sends `event` to every socket watching `(api_key, cid)` and records it.
    fn push(&self, shared: &Shared, api_key: &str, cid: &str, event: &serde_json::Value) {
        let Some(ch) = self.channels.get(&(api_key.to_string(), cid.to_string())) else {
            return;
        };
        let text = event.to_string();
        for conn in &ch.watchers {
            if let Some(s) = self.sockets.get(conn) {
                if s.tx.send(text.clone()).is_ok() {
                    shared.pushed.lock().unwrap().push(Pushed {
                        connection_id: conn.clone(),
                        user_id: s.user_id.clone(),
                        event: event.clone(),
                    });
                }
            }
        }
    }

    fn watcher_count(&self, ch: &ChatChannel) -> usize {
        let users: std::collections::BTreeSet<&str> = ch
            .watchers
            .iter()
            .filter_map(|c| self.sockets.get(c).map(|s| s.user_id.as_str()))
            .collect();
        users.len()
    }
}

impl ChatChannel {
    fn cid(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }

    /// A message with its reaction fields; `own_reactions` are `viewer`'s (none for
    /// events, as Stream sends them).
    fn message_view(&self, msg: &serde_json::Value, viewer: Option<&str>) -> serde_json::Value {
        let mut m = msg.clone();
        let id = msg["id"].as_str().unwrap_or_default();
        let reactions = self.reactions.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let mut counts = JsonMap::new();
        let mut scores = JsonMap::new();
        let mut groups = JsonMap::new();
        for r in reactions {
            let kind = r["type"].as_str().unwrap_or_default().to_string();
            let score = r["score"].as_i64().unwrap_or(1);
            let count = counts.get(&kind).and_then(|v| v.as_i64()).unwrap_or(0) + 1;
            let sum = scores.get(&kind).and_then(|v| v.as_i64()).unwrap_or(0) + score;
            counts.insert(kind.clone(), count.into());
            scores.insert(kind.clone(), sum.into());
            let first = groups
                .get(&kind)
                .and_then(|g| g["first_reaction_at"].as_str().map(str::to_string))
                .unwrap_or_else(|| r["created_at"].as_str().unwrap_or_default().to_string());
            groups.insert(
                kind,
                serde_json::json!({
                    "count": count,
                    "sum_scores": sum,
                    "first_reaction_at": first,
                    "last_reaction_at": r["created_at"],
                }),
            );
        }
        let latest: Vec<_> = reactions.iter().rev().take(10).cloned().collect();
        let own: Vec<_> = match viewer {
            Some(v) => reactions
                .iter()
                .filter(|r| r["user_id"] == v)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        m["latest_reactions"] = latest.into();
        m["own_reactions"] = own.into();
        m["reaction_counts"] = counts.into();
        m["reaction_scores"] = scores.into();
        m["reaction_groups"] = if groups.is_empty() {
            serde_json::Value::Null
        } else {
            groups.into()
        };
        m
    }
}

/// `config` of every channel type: what the SDK reads (read events on, delivery
/// events off, so it sends no `/channels/delivered`).
fn channel_config(kind: &str) -> serde_json::Value {
    serde_json::json!({
        "name": kind,
        "typing_events": true,
        "read_events": true,
        "delivery_events": false,
        "connect_events": true,
        "search": true,
        "reactions": true,
        "replies": true,
        "quotes": true,
        "mutes": true,
        "uploads": true,
        "url_enrichment": false,
        "custom_events": true,
        "push_notifications": false,
        "reminders": false,
        "polls": false,
        "shared_locations": false,
        "mark_messages_pending": false,
        "message_retention": "infinite",
        "max_message_length": 5000,
        "automod": "disabled",
        "automod_behavior": "flag",
        "commands": [],
    })
}

const OWN_CAPABILITIES: &[&str] = &[
    "connect-events",
    "delete-own-message",
    "quote-message",
    "read-events",
    "send-message",
    "send-reaction",
    "send-reply",
    "send-typing-events",
    "typing-events",
    "update-own-message",
    "upload-file",
];

/// `ChannelAPIResponse` for `viewer`.
fn channel_state(
    chat: &Chat,
    api_key: &str,
    ch: &ChatChannel,
    viewer: &str,
    limit: usize,
) -> serde_json::Value {
    let member = |(user, joined): &(String, String)| {
        serde_json::json!({
            "user_id": user,
            "user": chat.user(api_key, user),
            "role": "member",
            "channel_role": "channel_member",
            "created_at": joined,
            "updated_at": joined,
            "banned": false,
            "shadow_banned": false,
            "notifications_muted": false,
        })
    };
    let start = ch.messages.len().saturating_sub(limit);
    let messages: Vec<_> = ch.messages[start..]
        .iter()
        .map(|m| ch.message_view(m, Some(viewer)))
        .collect();
    let read: Vec<_> = ch
        .members
        .iter()
        .map(|(user, _)| {
            let state = ch.reads.get(user);
            let read_count = state.map_or(0, |r| r.read_count);
            let unread = ch.messages[read_count.min(ch.messages.len())..]
                .iter()
                .filter(|m| m["user"]["id"] != user.as_str())
                .count();
            serde_json::json!({
                "user": chat.user(api_key, user),
                "last_read": state.map_or(ch.created_at.as_str(), |r| r.last_read.as_str()),
                "last_read_message_id": state.and_then(|r| r.last_read_message_id.clone()),
                "unread_messages": unread,
            })
        })
        .collect();
    let watchers: std::collections::BTreeSet<&str> = ch
        .watchers
        .iter()
        .filter_map(|c| chat.sockets.get(c).map(|s| s.user_id.as_str()))
        .collect();
    serde_json::json!({
        "channel": {
            "id": ch.id,
            "type": ch.kind,
            "cid": ch.cid(),
            "created_at": ch.created_at,
            "updated_at": ch.created_at,
            "created_by": chat.user(api_key, &ch.created_by),
            "frozen": false,
            "disabled": false,
            "member_count": ch.members.len(),
            "config": channel_config(&ch.kind),
            "own_capabilities": OWN_CAPABILITIES,
        },
        "messages": messages,
        "pinned_messages": [],
        "members": ch.members.iter().map(member).collect::<Vec<_>>(),
        "membership": ch.members.iter().find(|(u, _)| u == viewer).map(member),
        "read": read,
        "watcher_count": watchers.len(),
        "watchers": watchers.iter().map(|u| chat.user(api_key, u)).collect::<Vec<_>>(),
    })
}

/// With `watch: true` in `body`: the request's `connection_id`, which must be a
/// socket of the same user and app. `None` without `watch`.
fn watching_connection(
    chat: &Chat,
    req: &ChatRequest,
    body: &JsonMap,
) -> Result<Option<String>, Refusal> {
    if body.get("watch") != Some(&serde_json::Value::Bool(true)) {
        return Ok(None);
    }
    let conn = req
        .query_param("connection_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse(400, 4, "watch needs a connection_id query param"))?;
    match chat.sockets.get(conn) {
        Some(s) if s.api_key == req.api_key && s.user_id == req.user_id => {
            Ok(Some(conn.to_string()))
        }
        Some(_) => Err(refuse(
            403,
            17,
            format!("connection_id {conn:?} belongs to another user"),
        )),
        None => Err(refuse(400, 4, format!("connection_id {conn:?} not found"))),
    }
}

/// Adds `conn` to the channel's watchers; pushes `user.watching.start` if new.
fn start_watching(shared: &Shared, chat: &mut Chat, req: &ChatRequest, cid: &str, conn: &str) {
    let key = (req.api_key.to_string(), cid.to_string());
    let Some(ch) = chat.channels.get_mut(&key) else {
        return;
    };
    if !ch.watchers.insert(conn.to_string()) {
        return;
    }
    let ch = &chat.channels[&key];
    let event = serde_json::json!({
        "type": "user.watching.start",
        "cid": cid,
        "channel_id": ch.id,
        "channel_type": ch.kind,
        "user": chat.user(req.api_key, req.user_id),
        "watcher_count": chat.watcher_count(ch),
        "created_at": created_at(),
    });
    chat.push(shared, req.api_key, cid, &event);
}

/// Whether `value` passes a filter condition on a string field: `"x"`,
/// `{"$eq": "x"}` or `{"$in": [...]}`; any other operator is not understood and
/// passes.
fn string_condition(cond: &serde_json::Value, value: &str) -> bool {
    match cond {
        serde_json::Value::String(s) => s == value,
        serde_json::Value::Object(ops) => ops.iter().all(|(op, arg)| match op.as_str() {
            "$eq" => arg == value,
            "$in" => arg
                .as_array()
                .is_some_and(|xs| xs.iter().any(|x| x == value)),
            _ => true,
        }),
        _ => true,
    }
}

/// `POST /channels` (QueryChannels, which the SDK also uses to recover its watched
/// channels after a reconnect): the caller's channels matching `filter_conditions`
/// on `cid`, `type`, `id` and `members` (other conditions are ignored), newest
/// message first; with `watch: true` the socket watches each of them.
fn query_channels(shared: &Shared, req: &ChatRequest) -> Result<serde_json::Value, Refusal> {
    let body = json_body(req.body)?;
    let mut chat = shared.chat.lock().unwrap();
    let conn = watching_connection(&chat, req, &body)?;
    let filter = match body.get("filter_conditions") {
        None | Some(serde_json::Value::Null) => JsonMap::new(),
        Some(serde_json::Value::Object(f)) => f.clone(),
        Some(_) => return Err(refuse(400, 4, "filter_conditions must be an object")),
    };
    let limit = body
        .get("limit")
        .and_then(serde_json::Value::as_u64)
        .map_or(10, |l| l.min(30) as usize);
    let message_limit = body
        .get("message_limit")
        .and_then(serde_json::Value::as_u64)
        .map_or(25, |l| l.min(300) as usize);
    let mut found: Vec<(String, String)> = chat
        .channels
        .iter()
        .filter(|((key, _), ch)| {
            key == req.api_key
                && ch.members.iter().any(|(u, _)| u == req.user_id)
                && filter.iter().all(|(field, cond)| match field.as_str() {
                    "cid" => string_condition(cond, &ch.cid()),
                    "type" => string_condition(cond, &ch.kind),
                    "id" => string_condition(cond, &ch.id),
                    "members" => ch.members.iter().any(|(u, _)| string_condition(cond, u)),
                    _ => true,
                })
        })
        .map(|((_, cid), ch)| {
            let last = ch
                .messages
                .last()
                .and_then(|m| m["created_at"].as_str())
                .unwrap_or(&ch.created_at)
                .to_string();
            (last, cid.clone())
        })
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    found.truncate(limit);
    let mut channels = Vec::new();
    for (_, cid) in &found {
        if let Some(conn) = &conn {
            start_watching(shared, &mut chat, req, cid, conn);
        }
        let ch = &chat.channels[&(req.api_key.to_string(), cid.clone())];
        channels.push(channel_state(
            &chat,
            req.api_key,
            ch,
            req.user_id,
            message_limit,
        ));
    }
    Ok(serde_json::json!({ "channels": channels }))
}

/// `POST /channels/{type}/{id}/query`: get or create, and with `watch: true` the
/// request's `connection_id` (a socket of the same user) watches the channel.
fn query_channel(
    shared: &Shared,
    req: &ChatRequest,
    kind: &str,
    id: &str,
) -> Result<serde_json::Value, Refusal> {
    let body = json_body(req.body)?;
    let mut chat = shared.chat.lock().unwrap();
    let conn = watching_connection(&chat, req, &body)?;
    let limit = body
        .get("messages")
        .and_then(|m| m.get("limit"))
        .and_then(serde_json::Value::as_u64)
        .map_or(25, |l| l.min(300) as usize);
    let cid = chat.channel_for(req.api_key, kind, id, req.user_id).cid();
    if let Some(conn) = &conn {
        start_watching(shared, &mut chat, req, &cid, conn);
    }
    let key = (req.api_key.to_string(), cid);
    Ok(channel_state(
        &chat,
        req.api_key,
        &chat.channels[&key],
        req.user_id,
        limit,
    ))
}

/// `POST /channels/{type}/{id}/message`: stores the message, answers `{message}` and
/// pushes `message.new`.
fn send_message(
    shared: &Shared,
    req: &ChatRequest,
    kind: &str,
    id: &str,
) -> Result<serde_json::Value, Refusal> {
    let body = json_body(req.body)?;
    let mut msg = match body.get("message") {
        Some(serde_json::Value::Object(m)) => m.clone(),
        _ => return Err(refuse(400, 4, "message is a required object")),
    };
    let text = msg
        .get("text")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let attachments = msg
        .get("attachments")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    if text.is_empty() && attachments.is_empty() {
        return Err(refuse(400, 4, "message needs text or attachments"));
    }
    let claimed = msg
        .get("user_id")
        .or_else(|| msg.get("user").and_then(|u| u.get("id")));
    if let Some(claimed) = claimed {
        if claimed != req.user_id {
            return Err(refuse(
                403,
                17,
                format!("message user {claimed} is not the token's user"),
            ));
        }
    }
    let mut chat = shared.chat.lock().unwrap();
    let message_id = match msg.get("id").and_then(|v| v.as_str()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => new_connection_id(),
    };
    let key = (req.api_key.to_string(), message_id.clone());
    if chat.message_cids.contains_key(&key) {
        return Err(refuse(
            400,
            4,
            format!("a message with id {message_id:?} already exists"),
        ));
    }
    let user = chat.user(req.api_key, req.user_id);
    let now = created_at();
    let cid = format!("{kind}:{id}");
    msg.remove("user_id");
    for (k, v) in [
        ("id", serde_json::json!(message_id)),
        ("text", serde_json::json!(text)),
        ("html", serde_json::json!(format!("<p>{text}</p>\n"))),
        ("type", serde_json::json!("regular")),
        ("user", user.clone()),
        ("cid", serde_json::json!(cid)),
        ("attachments", serde_json::json!(attachments)),
        ("mentioned_users", serde_json::json!([])),
        ("reply_count", serde_json::json!(0)),
        ("deleted_reply_count", serde_json::json!(0)),
        ("silent", serde_json::json!(false)),
        ("pinned", serde_json::json!(false)),
        ("shadowed", serde_json::json!(false)),
        ("created_at", serde_json::json!(now)),
        ("updated_at", serde_json::json!(now)),
    ] {
        msg.insert(k.to_string(), v);
    }
    let stored = serde_json::Value::Object(msg);
    let ch = chat.channel_for(req.api_key, kind, id, req.user_id);
    ch.messages.push(stored.clone());
    let own_view = ch.message_view(&stored, Some(req.user_id));
    let event_view = ch.message_view(&stored, None);
    let (channel_id, channel_type) = (ch.id.clone(), ch.kind.clone());
    let members = ch.members.len();
    chat.message_cids.insert(key, cid.clone());
    let watcher_count = chat.watcher_count(&chat.channels[&(req.api_key.to_string(), cid.clone())]);
    let event = serde_json::json!({
        "type": "message.new",
        "cid": cid,
        "channel_id": channel_id,
        "channel_type": channel_type,
        "message_id": message_id,
        "message": event_view,
        "user": user,
        "watcher_count": watcher_count,
        "channel_member_count": members,
        "created_at": now,
    });
    chat.push(shared, req.api_key, &cid, &event);
    Ok(serde_json::json!({ "message": own_view }))
}

/// `POST /messages/{id}/reaction`: answers `{message, reaction}` and pushes
/// `reaction.new`.
fn send_reaction(
    shared: &Shared,
    req: &ChatRequest,
    message_id: &str,
) -> Result<serde_json::Value, Refusal> {
    let body = json_body(req.body)?;
    let mut reaction = match body.get("reaction") {
        Some(serde_json::Value::Object(r)) => r.clone(),
        _ => return Err(refuse(400, 4, "reaction is a required object")),
    };
    let kind = match reaction.get("type").and_then(|t| t.as_str()) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return Err(refuse(400, 4, "reaction.type is required")),
    };
    let enforce_unique = body.get("enforce_unique") == Some(&serde_json::Value::Bool(true));
    let mut chat = shared.chat.lock().unwrap();
    let cid = chat
        .message_cids
        .get(&(req.api_key.to_string(), message_id.to_string()))
        .cloned()
        .ok_or_else(|| refuse(404, 16, format!("message with id {message_id:?} not found")))?;
    let user = chat.user(req.api_key, req.user_id);
    let now = created_at();
    reaction.remove("user");
    for (k, v) in [
        ("message_id", serde_json::json!(message_id)),
        ("user_id", serde_json::json!(req.user_id)),
        ("user", user.clone()),
        ("type", serde_json::json!(kind)),
        (
            "score",
            serde_json::json!(reaction.get("score").and_then(|s| s.as_i64()).unwrap_or(1)),
        ),
        ("created_at", serde_json::json!(now)),
        ("updated_at", serde_json::json!(now)),
    ] {
        reaction.insert(k.to_string(), v);
    }
    let reaction = serde_json::Value::Object(reaction);
    let key = (req.api_key.to_string(), cid.clone());
    let ch = chat
        .channels
        .get_mut(&key)
        .expect("message's channel exists");
    let list = ch.reactions.entry(message_id.to_string()).or_default();
    list.retain(|r| r["user_id"] != req.user_id || (!enforce_unique && r["type"] != kind.as_str()));
    list.push(reaction.clone());
    let stored = ch
        .messages
        .iter()
        .find(|m| m["id"] == message_id)
        .cloned()
        .expect("message is stored");
    let own_view = ch.message_view(&stored, Some(req.user_id));
    let event = serde_json::json!({
        "type": "reaction.new",
        "cid": cid,
        "channel_id": ch.id,
        "channel_type": ch.kind,
        "message_id": message_id,
        "message": ch.message_view(&stored, None),
        "reaction": reaction,
        "user": user,
        "created_at": now,
    });
    chat.push(shared, req.api_key, &cid, &event);
    Ok(serde_json::json!({ "message": own_view, "reaction": reaction }))
}

/// `POST /channels/{type}/{id}/read`: marks the channel read up to `message_id` (or
/// its last message), answers `{event}` and pushes that `message.read` event.
fn mark_read(
    shared: &Shared,
    req: &ChatRequest,
    kind: &str,
    id: &str,
) -> Result<serde_json::Value, Refusal> {
    let body = json_body(req.body)?;
    let wanted = match body.get("message_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(m)) => Some(m.clone()),
        Some(_) => return Err(refuse(400, 4, "message_id must be a string")),
    };
    let mut chat = shared.chat.lock().unwrap();
    let user = chat.user(req.api_key, req.user_id);
    let now = created_at();
    let ch = chat.channel_for(req.api_key, kind, id, req.user_id);
    let read_count = match &wanted {
        Some(m) => {
            ch.messages
                .iter()
                .position(|x| x["id"] == m.as_str())
                .ok_or_else(|| refuse(404, 16, format!("message with id {m:?} not found")))?
                + 1
        }
        None => ch.messages.len(),
    };
    let last_read_message_id = wanted.or_else(|| {
        ch.messages
            .last()
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
    });
    ch.reads.insert(
        req.user_id.to_string(),
        ReadState {
            last_read: now.clone(),
            last_read_message_id: last_read_message_id.clone(),
            read_count,
        },
    );
    let cid = ch.cid();
    let event = serde_json::json!({
        "type": "message.read",
        "cid": cid,
        "channel_id": ch.id,
        "channel_type": ch.kind,
        "user": user,
        "last_read_message_id": last_read_message_id,
        "created_at": now,
    });
    chat.push(shared, req.api_key, &cid, &event);
    Ok(serde_json::json!({ "event": event }))
}
