//! The Redis connection of the process (`[redis]`), shared by shared
//! quotas, opaque sessions, revocations and the audit sink: made on first use
//! (so the gateway starts while Redis is down), with a per-call timeout so no
//! request waits on Redis longer than `redis.timeout`.
//!
//! Three deployments, chosen by `redis.mode`:
//! - `single`: one server; a multiplexed connection manager that reconnects
//!   to the same address by itself, one per thread that calls (so a proxy
//!   thread's commands never wait for another thread to send them).
//! - `cluster`: Redis Cluster from seed nodes; the redis crate's cluster
//!   connection routes each command (and each pipeline, which must stay in
//!   one hash slot) to the node that owns its slot and follows `MOVED`/`ASK`
//!   and topology changes.
//! - `sentinel`: the sentinels name the master. The connection to it is
//!   dropped after a connection error, a timeout or a `READONLY` answer (the
//!   old master was demoted), and the next call asks the sentinels again, so
//!   a failover is followed without a restart.
//!
//! Callers get a [`Conn`], which works the same for all three
//! (`query_async`, pipelines, `Script::invoke_async`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where Redis is (`redis.mode` and its addresses). The URLs may carry
/// passwords: never print them.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://[user:password@]host[:port][/db]`.
    Single { url: String },
    /// Seed nodes of a Redis Cluster (any reachable one is enough).
    Cluster { nodes: Vec<String> },
    /// Sentinels watching `master_name`. `master_url`, when set, carries only
    /// the master's username, password and db
    /// (`redis://[user:password@]<master_name>[/db]`).
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        master_url: Option<String>,
    },
}

impl RedisTarget {
    /// `"single"`, `"cluster"` or `"sentinel"`, for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisTarget::Single { .. } => "single",
            RedisTarget::Cluster { .. } => "cluster",
            RedisTarget::Sentinel { .. } => "sentinel",
        }
    }
}

/// A connection to whichever deployment is configured; cheap to clone (one
/// multiplexed link per server underneath; for `single`, one per calling
/// thread).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

enum Backend {
    /// One connection per thread that calls (see [`thread_conn`]).
    Single {
        client: redis::Client,
        id: u64,
    },
    Cluster {
        client: ClusterClient,
        conn: OnceCell<ClusterConnection>,
    },
    Sentinel(SentinelBackend),
}

/// The master found through the sentinels, replaced after it fails.
struct SentinelBackend {
    /// Asks the sentinels; one lookup at a time.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The master's connection and its generation (so that many calls
    /// failing on the same connection drop it once, not its successor).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
}

pub struct Redis {
    backend: Backend,
    timeout: Duration,
}

impl Redis {
    /// One server at `url` (`mode = "single"`); nothing connects until the
    /// first call.
    pub fn new(url: &str, timeout: Duration) -> Result<Redis, String> {
        Redis::connect(
            &RedisTarget::Single {
                url: url.to_string(),
            },
            timeout,
        )
    }

    /// The deployment `target` names (validated by config); nothing
    /// connects until the first call. Errors never quote a URL.
    pub fn connect(target: &RedisTarget, timeout: Duration) -> Result<Redis, String> {
        let backend = match target {
            RedisTarget::Single { url } => Backend::Single {
                client: redis::Client::open(url.as_str())
                    .map_err(|e| format!("redis.url: {}", e.category()))?,
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            },
            RedisTarget::Cluster { nodes } => Backend::Cluster {
                client: ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .map_err(|e| format!("redis.nodes: {}", e.category()))?,
                conn: OnceCell::new(),
            },
            RedisTarget::Sentinel {
                sentinels,
                master_name,
                master_url,
            } => {
                let mut node = SentinelNodeConnectionInfo::default();
                if let Some(url) = master_url {
                    let info = url
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| format!("redis.url: {}", e.category()))?;
                    node = node.set_redis_connection_info(info.redis_settings().clone());
                }
                let client = SentinelClient::build(
                    sentinels.iter().map(String::as_str).collect(),
                    master_name.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(|e| format!("redis.sentinels: {}", e.category()))?;
                Backend::Sentinel(SentinelBackend {
                    client: tokio::sync::Mutex::new(client),
                    current: Mutex::new(None),
                    generation: AtomicU64::new(0),
                })
            }
        };
        Ok(Redis { backend, timeout })
    }

    /// The longest a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` with a connection, within the timeout. The error is a
    /// one-line reason (no keys, no values, no URLs).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match &self.backend {
            Backend::Single { client, id } => {
                let cell = thread_conn(*id);
                let work = async {
                    let c = cell
                        .get_or_try_init(|| ConnectionManager::new(client.clone()))
                        .await?
                        .clone();
                    f(Conn::Single(c)).await
                };
                // A manager whose driver task died with its runtime makes a
                // new connection on the caller's (tests/redis_threads.rs).
                self.bounded(work).await.map_err(|e| e.to_string())
            }
            Backend::Cluster { client, conn } => {
                let work = async {
                    let c = conn
                        .get_or_try_init(|| client.get_async_connection())
                        .await?
                        .clone();
                    f(Conn::Cluster(c)).await
                };
                self.bounded(work).await.map_err(|e| e.to_string())
            }
            Backend::Sentinel(s) => {
                let mut used = None;
                let work = async {
                    let (generation, c) = s.master(self.timeout).await?;
                    used = Some(generation);
                    f(Conn::Sentinel(c)).await
                };
                let result = self.bounded(work).await;
                if let (Err(e), Some(generation)) = (&result, used) {
                    if e.master_may_have_moved() {
                        s.forget(generation);
                    }
                }
                result.map_err(|e| e.to_string())
            }
        }
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }
}

/// Ids of `single` backends, so a thread keeps its connections apart.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

type ThreadConn = std::sync::Arc<OnceCell<ConnectionManager>>;

thread_local! {
    /// This thread's connection per `single` backend (by id).
    static THREAD_CONNS: std::cell::RefCell<Vec<(u64, ThreadConn)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The calling thread's connection to `single` backend `id` (made on first
/// use). A connection's driver task runs on the runtime of the thread that
/// made it; one connection shared by the whole process lived on whichever
/// thread called first (the revocation poller's background thread), so each
/// quota call of a proxy thread went there and back through two thread
/// wake-ups: with `lease = 1` 3.7 µs more gateway CPU per request than local
/// limits alone, and 19 % fewer requests/s (perf, benches/README.md, session
/// 8). A thread's commands go out on its own link instead; pingora's
/// threads are few and long-lived, so the connections are too.
fn thread_conn(id: u64) -> ThreadConn {
    THREAD_CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        if let Some((_, c)) = conns.iter().find(|(i, _)| *i == id) {
            return std::sync::Arc::clone(c);
        }
        let c = ThreadConn::default();
        conns.push((id, std::sync::Arc::clone(&c)));
        c
    })
}

enum CallError {
    Redis(redis::RedisError),
    Timeout(Duration),
}

impl CallError {
    /// After this, a sentinel-found master is asked for again: the link
    /// broke, the master did not answer in time, or it is a replica now.
    fn master_may_have_moved(&self) -> bool {
        match self {
            CallError::Timeout(_) => true,
            CallError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
            }
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Redis(e) => e.fmt(f),
            CallError::Timeout(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

impl SentinelBackend {
    /// The current master connection, or a new one found through the
    /// sentinels.
    async fn master(&self, timeout: Duration) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let mut client = self.client.lock().await;
        // Another call may have connected while this one waited.
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = client.get_async_connection_with_config(&config).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((generation, conn.clone()));
        }
        Ok((generation, conn))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// Drops the connection of `generation` (if it is still the current one).
    fn forget(&self, generation: u64) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
                tracing::info!("redis master connection dropped; the sentinels are asked again on the next call");
            }
        }
    }
}
