//! The one Redis connection of the process (`[redis]`), shared by shared
//! quotas, opaque sessions and revocations: a multiplexed connection manager
//! made on first use (so the gateway starts while Redis is down), and a
//! per-call timeout so no request waits on Redis longer than `redis.timeout`.

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

pub struct Redis {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl Redis {
    /// `url` is validated by config; nothing connects until the first call.
    pub fn new(url: &str, timeout: Duration) -> Result<Redis, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis.url: {e}"))?;
        Ok(Redis {
            client,
            conn: OnceCell::new(),
            timeout,
        })
    }

    /// The longest a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` with a connection, within the timeout. The error is a
    /// one-line reason (no keys, no values).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self
                .conn
                .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
                .await?
                .clone();
            f(conn).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}
