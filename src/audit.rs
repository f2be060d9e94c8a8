//! The audit log: one JSON record per request, and one per websocket session
//! when it closes. Never a token, a cookie, a secret or a body: the record is
//! built from the gateway's own decision (tenant, user id or service account,
//! route template, operation), not from the request text.
//!
//! Records leave the request path through a bounded queue; one writer task
//! drains it into the sink (`stdout`, `file` with reopen on SIGHUP and size
//! rotation, or a Redis Stream with `XADD ... MAXLEN ~`, batched). When the
//! queue is full, `on_full` decides: `drop` (counted in
//! `stream_gateway_audit_dropped_total`) or `block`: a REST request takes
//! its place in the queue before it is forwarded and waits for room, so no
//! request goes through unaudited, at the price of latency (a websocket
//! session's record waits for room when the socket closes, so long-lived
//! sockets never hold places). With `block`, a failing Redis batch is
//! retried until it is written; with `drop`, it is dropped and counted.

mod encode;
mod file;
mod spare;
mod time;

pub use time::Timestamp;

use file::{open, write_file, write_lines};
use spare::Spare;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::metrics;
use crate::redis_conn::Redis;

/// How long the writer waits for more records before writing a batch that
/// is not full (bounds how late a record reaches its sink, plus the write).
const GATHER: Duration = Duration::from_millis(5);

/// One audited request or websocket session.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds (formatted when the record is encoded).
    pub time: Timestamp,
    /// `request` or `websocket`.
    pub kind: &'static str,
    pub request_id: String,
    pub tenant: Option<String>,
    /// The signed-in user; `null` for anonymous and service requests.
    pub user_id: Option<String>,
    /// The service account of a service request; absent on user records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub client_ip: Option<std::net::IpAddr>,
    pub method: std::borrow::Cow<'static, str>,
    /// Route template from the route table (`/channels/{type}/{id}/message`).
    pub route: Option<std::sync::Arc<str>>,
    /// Operation name from the route table (`SendMessage`).
    pub operation: Option<std::sync::Arc<str>>,
    pub decision: &'static str,
    /// Stream error code of the gateway's refusal.
    pub code: Option<i32>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_out: Option<u64>,
}

/// A record borrowed from the request it describes: what the request path
/// encodes (into a [`Line`]) without copying its strings first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry<'a> {
    pub time: Timestamp,
    pub kind: &'static str,
    pub request_id: &'a str,
    pub tenant: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub service: Option<&'a str>,
    pub client_ip: Option<std::net::IpAddr>,
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub decision: &'static str,
    pub code: Option<i32>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: Option<u64>,
    pub frames_in: Option<u64>,
    pub frames_out: Option<u64>,
}

/// One record as JSON, no newline: what the queue carries. Encoded on the
/// request's thread: a queue of records (~200 bytes each, three strings)
/// cost more in copies, allocations freed on the writer's thread and cache
/// lines moving between the two threads than the encoding itself (perf,
/// benches/README.md, session 8).
pub type Line = Vec<u8>;

/// A place in the queue taken by [`AuditLog::reserve`].
pub type Permit = mpsc::OwnedPermit<Line>;

/// When the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    Drop,
    Block,
}

/// Where records go, validated by config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    File {
        path: PathBuf,
        /// Rotate when the file would grow past this (0: never).
        max_bytes: u64,
        /// Rotated files kept (`path.1` .. `path.N`).
        keep: u32,
    },
    Redis {
        stream: String,
        maxlen: u64,
    },
}

impl Sink {
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Stdout => "stdout",
            Sink::File { .. } => "file",
            Sink::Redis { .. } => "redis",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub sink: Sink,
    pub queue_size: usize,
    pub on_full: OnFull,
    /// Most records written in one go (one `XADD` pipeline for Redis).
    pub batch: usize,
}

/// The request side: enqueue records.
pub struct AuditLog {
    tx: mpsc::Sender<Line>,
    spare: Arc<Spare>,
    on_full: OnFull,
    sink: &'static str,
    reopen: Arc<Notify>,
}

/// The writer side, run as a background task.
pub struct AuditWriter {
    rx: mpsc::Receiver<Line>,
    spare: Arc<Spare>,
    settings: AuditSettings,
    redis: Option<Arc<Redis>>,
    reopen: Arc<Notify>,
}

/// A log and its writer. `redis` is needed for the Redis sink (config
/// validation guarantees it).
pub fn channel(settings: AuditSettings, redis: Option<Arc<Redis>>) -> (AuditLog, AuditWriter) {
    let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
    let reopen = Arc::new(Notify::new());
    let spare = Arc::new(Spare::default());
    (
        AuditLog {
            tx,
            spare: Arc::clone(&spare),
            on_full: settings.on_full,
            sink: settings.sink.name(),
            reopen: Arc::clone(&reopen),
        },
        AuditWriter {
            rx,
            spare,
            settings,
            redis,
            reopen,
        },
    )
}

impl AuditLog {
    /// Queues a record; with `block`, waits for room.
    pub async fn write(&self, entry: &Entry<'_>) {
        let record = self.line(entry);
        match self.on_full {
            OnFull::Drop => {
                if self.tx.try_send(record).is_err() {
                    metrics::get()
                        .audit_dropped
                        .with_label_values(&[self.sink])
                        .inc();
                }
            }
            OnFull::Block => {
                if self.tx.send(record).await.is_err() {
                    metrics::get()
                        .audit_dropped
                        .with_label_values(&[self.sink])
                        .inc();
                }
            }
        }
    }

    /// With `block`: waits for room for one record and holds it, so a
    /// request is not forwarded until its record is sure to fit (`None`
    /// with `drop`, or when the writer is gone).
    pub async fn reserve(&self) -> Option<Permit> {
        match self.on_full {
            OnFull::Block => self.tx.clone().reserve_owned().await.ok(),
            OnFull::Drop => None,
        }
    }

    /// Sends a record into a place taken by [`AuditLog::reserve`].
    pub fn write_reserved(&self, permit: Permit, entry: &Entry<'_>) {
        permit.send(self.line(entry));
    }

    /// `entry` encoded, in a buffer the writer gave back if there is one.
    fn line(&self, entry: &Entry<'_>) -> Line {
        let mut line = self.spare.take();
        entry.line_into(&mut line);
        line
    }

    /// Asks the writer to reopen its file (SIGHUP, after logrotate).
    pub fn reopen(&self) {
        self.reopen.notify_one();
    }
}

impl AuditWriter {
    /// Drains the queue until every sender is gone.
    pub async fn run(mut self) {
        let mut file = match &self.settings.sink {
            Sink::File { path, .. } => open(path),
            _ => None,
        };
        let mut batch: Vec<Line> = Vec::with_capacity(self.settings.batch);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.settings.batch) => {
                    if n == 0 {
                        return;
                    }
                    // Under load, gather a fuller batch: one write (or one
                    // XADD pipeline) per few milliseconds instead of one per
                    // record keeps the writer off the CPU the proxy needs.
                    if batch.len() < self.settings.batch {
                        tokio::time::sleep(GATHER).await;
                        while batch.len() < self.settings.batch {
                            match self.rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = self.reopen.notified() => {
                    if let Sink::File { path, .. } = &self.settings.sink {
                        file = open(path);
                        tracing::info!(path = %path.display(), "audit file reopened");
                    }
                    continue;
                }
            }
            let written = match &self.settings.sink {
                Sink::Stdout => write_lines(&mut std::io::stdout().lock(), &batch),
                Sink::File {
                    path,
                    max_bytes,
                    keep,
                } => write_file(&mut file, path, *max_bytes, *keep, &batch),
                Sink::Redis { stream, maxlen } => self.write_redis(stream, *maxlen, &batch).await,
            };
            let sink = self.settings.sink.name();
            let m = metrics::get();
            if written {
                m.audit_records
                    .with_label_values(&[sink])
                    .inc_by(batch.len() as u64);
            } else {
                m.audit_dropped
                    .with_label_values(&[sink])
                    .inc_by(batch.len() as u64);
            }
            // Twice a batch of buffers go round (at most 1,024).
            self.spare
                .give(&mut batch, (2 * self.settings.batch).min(1024));
        }
    }

    /// One pipeline of `XADD stream MAXLEN ~ n * record <json>` per batch.
    /// With `block`, retries until Redis takes it.
    async fn write_redis(&self, stream: &str, maxlen: u64, batch: &[Line]) -> bool {
        let Some(redis) = &self.redis else {
            return false;
        };
        let mut pipe = redis::pipe();
        for json in batch {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(maxlen)
                .arg("*")
                .arg("record")
                .arg(&json[..])
                .ignore();
        }
        let mut logged = false;
        loop {
            let p = pipe.clone();
            match redis
                .call(|mut conn| async move { p.query_async::<()>(&mut conn).await })
                .await
            {
                Ok(()) => return true,
                Err(e) => {
                    metrics::redis_error("audit");
                    if !logged {
                        tracing::warn!(error = %e, records = batch.len(), on_full = ?self.settings.on_full, "audit records not written to redis");
                        logged = true;
                    }
                    if self.settings.on_full == OnFull::Drop {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
