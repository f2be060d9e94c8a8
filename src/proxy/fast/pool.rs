//! The fast path's idle upstream connections: a small stack per process,
//! most recently used first.
//!
//! pingora's pool (used before) costs, per request, an async lock, an LRU
//! update, a `getpeername` check on reuse and a task per returned
//! connection that watches it while idle: about a tenth of the fast path's
//! CPU (perf, benches/README.md). Here a connection is checked only by
//! use: one that the upstream closed while idle fails before any byte of
//! the answer and the request is sent again on a new connection, once
//! (`send` in fast.rs). Idle connections older than the upstream's
//! `idle_timeout` are dropped when met; at most [`CAPACITY`] are kept.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::Conn;

/// Idle connections kept (pingora's default keep-alive pool size).
pub const CAPACITY: usize = 128;

struct Idle {
    stream: Conn,
    addr: SocketAddr,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// The most recently returned live connection to `addr`, if any.
    pub fn get(&self, addr: SocketAddr, idle_timeout: Duration, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop() {
            if c.addr == addr && now.duration_since(c.since) < idle_timeout {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keeps a connection whose last exchange completed.
    pub fn put(&self, stream: Conn, addr: SocketAddr, idle_timeout: Duration, now: Instant) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        // The oldest are at the bottom: drop those past their time, and one
        // more when full.
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= idle_timeout)
            .count();
        idle.drain(..stale);
        if idle.len() >= CAPACITY {
            idle.remove(0);
        }
        idle.push(Idle {
            stream,
            addr,
            since: now,
        });
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection and its local port (which tells connections apart).
    async fn stream(listener: &tokio::net::TcpListener) -> (Conn, u16) {
        let addr = listener.local_addr().unwrap();
        let (s, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (s, _) = (s.unwrap(), accepted.unwrap());
        let port = s.local_addr().unwrap().port();
        (Conn::Tcp(s), port)
    }

    fn port(c: Conn) -> u16 {
        match c {
            Conn::Tcp(s) => s.local_addr().unwrap().port(),
            Conn::Pingora(_) => unreachable!("the tests pool plain sockets"),
        }
    }

    #[tokio::test]
    async fn newest_first_for_the_same_address_within_the_idle_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pool = Pool::default();
        let idle = Duration::from_secs(60);
        let t0 = Instant::now();
        let (a, a_id) = stream(&listener).await;
        let (b, b_id) = stream(&listener).await;
        pool.put(a, addr, idle, t0);
        pool.put(b, addr, idle, t0);
        assert_eq!(pool.get(addr, idle, t0).map(port), Some(b_id));
        assert_eq!(pool.get(addr, idle, t0).map(port), Some(a_id));
        assert!(pool.get(addr, idle, t0).is_none());

        // Another address (the upstream re-resolved): dropped, not used.
        let (c, _) = stream(&listener).await;
        pool.put(c, other, idle, t0);
        assert!(pool.get(addr, idle, t0).is_none());
        assert_eq!(pool.len(), 0);

        // Past the idle timeout: dropped when met, and when a newer one is put.
        let (d, _) = stream(&listener).await;
        pool.put(d, addr, idle, t0);
        assert!(pool.get(addr, idle, t0 + idle).is_none());
        let (e, _) = stream(&listener).await;
        let (f, f_id) = stream(&listener).await;
        pool.put(e, addr, idle, t0);
        pool.put(f, addr, idle, t0 + idle);
        assert_eq!(pool.len(), 1, "the stale one went when the new one came");
        assert_eq!(pool.get(addr, idle, t0 + idle).map(port), Some(f_id));
    }

    #[tokio::test]
    async fn at_most_capacity_connections_are_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let idle = Duration::from_secs(60);
        let now = Instant::now();
        for _ in 0..CAPACITY + 3 {
            let (s, _) = stream(&listener).await;
            pool.put(s, addr, idle, now);
        }
        assert_eq!(pool.len(), CAPACITY);
    }
}
