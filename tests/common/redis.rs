//! A real `redis-server` for integration tests: started on 127.0.0.1 and a free
//! port with persistence off and a private temp dir, ready (answers `PING`) when
//! [`RedisServer::start`] returns, and killed when dropped. `stop`/`restart` are for
//! fault tests ("Redis goes away", "Redis comes back" on the same port).
//!
//! The `redis-server` binary is required, never optional: without it `start`
//! panics and names `deploy/setup.sh`, which installs the Debian package.
//! Everything here is std (plus `tempfile`); `command` speaks raw RESP over a
//! `TcpStream` so assertions do not depend on the gateway's Redis client.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOT_FOUND: &str =
    "redis-server not found: run deploy/setup.sh (installs the redis-server package)";
/// How long a freshly spawned server has to answer `PING` with `+PONG`.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Retries with a new free port when the server could not bind the one picked.
const BIND_RETRIES: usize = 3;
/// The server's stdout and stderr go here, inside its temp dir (appended across
/// restarts); panics quote the part written by the failed launch.
const LOG_FILE: &str = "redis-server.log";

pub struct RedisServer {
    pub port: u16,
    child: Child,
    options: Options,
    _dir: tempfile::TempDir,
}

/// What else a server is started with (see `redis_cluster.rs`).
#[derive(Clone, Default)]
pub struct Options {
    /// Written once to `<dir>/redis.conf` and passed as the config file (a
    /// sentinel needs one it can rewrite).
    pub conf: Option<String>,
    /// `--sentinel`: run as a Redis Sentinel.
    pub sentinel: bool,
    /// `--cluster-enabled yes`, with the cluster bus on another free port.
    pub cluster: bool,
    /// `--replicaof 127.0.0.1 <port>`.
    pub replica_of: Option<u16>,
}

impl RedisServer {
    /// Starts `redis-server` on 127.0.0.1 and a free port (bind 127.0.0.1:0, read
    /// the port, drop; retried up to 3 times with a new port if the server fails to
    /// bind), with `--save "" --appendonly no --dir <tempdir> --bind 127.0.0.1
    /// --port P --protected-mode yes`, and waits (10 s deadline) until a raw TCP
    /// `PING\r\n` gets `+PONG` from that very process. Panics if `redis-server` is
    /// not installed, exits early, or is not ready in time; never skips.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Options::default())
    }

    /// [`RedisServer::start`] with `options` (cluster node, sentinel, replica).
    pub fn start_with(options: Options) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("redis-test-")
            .tempdir()
            .expect("create temp dir for redis-server");
        if let Some(conf) = &options.conf {
            let path = dir.path().join("redis.conf");
            std::fs::write(&path, conf).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let mut failures = Vec::new();
        for _ in 0..=BIND_RETRIES {
            let port = free_port();
            match launch(dir.path(), port, &options) {
                Launch::Ready(child) => {
                    return RedisServer {
                        port,
                        child,
                        options,
                        _dir: dir,
                    }
                }
                Launch::BindFailed(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!(
            "redis-server could not bind a free port on 127.0.0.1 in {} attempts:\n{}",
            BIND_RETRIES + 1,
            failures.join("\n")
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, by its `Child` handle) and waits for it to exit.
    /// Harmless when it is already stopped.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server if it is still running, then starts a new one on the SAME
    /// port and data dir and waits for `+PONG`. The data is not kept (persistence is
    /// off), so the new server starts empty. If the port is briefly taken, launching
    /// is retried until the 10 s deadline; then it panics.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match launch(self._dir.path(), self.port, &self.options) {
                Launch::Ready(child) => {
                    self.child = child;
                    return;
                }
                Launch::BindFailed(why) => {
                    if Instant::now() >= deadline {
                        panic!(
                            "redis-server restart: could not bind 127.0.0.1:{} again within {:?}: {why}",
                            self.port, READY_DEADLINE
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Sends one command (e.g. `&["GET", "key"]`) as a RESP array of bulk strings
    /// over a new TCP connection and returns the whole raw reply as text, framing
    /// included: `"+OK\r\n"`, `"$5\r\nvalue\r\n"`, `"$-1\r\n"`, `":3\r\n"`,
    /// `"-ERR ...\r\n"`, `"*2\r\n$1\r\na\r\n$1\r\nb\r\n"`. Panics on I/O errors or
    /// after 10 s without a complete reply.
    pub fn command(&self, args: &[&str]) -> String {
        raw_command(self.port, args).unwrap_or_else(|e| {
            panic!(
                "redis command {args:?} on 127.0.0.1:{} failed: {e}",
                self.port
            )
        })
    }

    /// Lua script runs the server has served so far (EVAL + EVALSHA).
    pub fn script_calls(&self) -> u64 {
        self.command(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .map(|l| {
                let calls = l.split("calls=").nth(1).unwrap().split(',').next().unwrap();
                calls.parse::<u64>().unwrap()
            })
            .sum()
    }

    /// A key's TTL in seconds, as Redis answers `TTL`: -1 when the key has
    /// no expiry, -2 when it does not exist.
    pub fn ttl(&self, key: &str) -> i64 {
        let reply = self.command(&["TTL", key]);
        reply.trim_start_matches(':').trim().parse().unwrap()
    }

    /// An integer key's value (0 when it does not exist).
    pub fn counter(&self, key: &str) -> i64 {
        let reply = self.command(&["GET", key]);
        if reply.starts_with("$-1") {
            return 0;
        }
        reply.lines().nth(1).unwrap().parse().unwrap()
    }
}

/// The gateway's shared quotas on `redis`, with a 300 ms Redis timeout, for
/// tests that drive `SharedQuotas` directly with a chosen Unix time.
pub fn shared_quotas(
    redis: &RedisServer,
    on_error: stream_gateway::quota::OnRedisError,
) -> std::sync::Arc<stream_gateway::quota::SharedQuotas> {
    use std::sync::Arc;
    let conn = stream_gateway::redis_conn::Redis::new(&redis.url(), Duration::from_millis(300))
        .expect("a redis URL of a test server");
    Arc::new(stream_gateway::quota::SharedQuotas::new(
        Arc::new(conn),
        on_error,
    ))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // By the Child handle only; the temp dir is removed after this.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Launch {
    /// Our process answers `PING` on the port.
    Ready(Child),
    /// The port was taken (the process has been reaped); try again.
    BindFailed(String),
}

/// Binds 127.0.0.1:0, reads the port the OS chose, and releases it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to pick a free port")
}

/// Spawns `redis-server` on `port` with `dir` as its data dir and waits for it to be
/// ready. Panics (after killing it) on anything but readiness or a bind failure.
fn launch(dir: &Path, port: u16, options: &Options) -> Launch {
    let log_path = dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().expect("clone redis-server log handle");

    let mut cmd = Command::new("redis-server");
    if options.conf.is_some() {
        cmd.arg(dir.join("redis.conf"));
    }
    if options.sentinel {
        cmd.arg("--sentinel");
    }
    if options.cluster {
        cmd.args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", "2000", "--cluster-port"])
        .arg(free_port().to_string());
    }
    if let Some(master) = options.replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    let spawned = cmd
        .arg("--save")
        .arg("")
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--protected-mode", "yes"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("{NOT_FOUND}"),
        Err(e) => panic!("could not start redis-server: {e}"),
    };

    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = read_log(&log_path, log_start);
                if log.contains("Address already in use") {
                    return Launch::BindFailed(last_line(&log));
                }
                panic!(
                    "redis-server on 127.0.0.1:{port} exited ({status}) before answering PING; its output:\n{log}"
                );
            }
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                panic!("redis-server on 127.0.0.1:{port}: waiting for it failed: {e}");
            }
        }

        if ping(port) {
            // Make sure the PONG came from our process and not from another Redis
            // that already held the port (ours is then about to fail to bind).
            match server_pid(port) {
                Some(pid) if pid == child.id() => return Launch::Ready(child),
                Some(other) => {
                    kill(&mut child);
                    return Launch::BindFailed(format!(
                        "port answered by another redis-server (pid {other})"
                    ));
                }
                None => {} // not answering INFO yet; poll again
            }
        }

        if Instant::now() >= deadline {
            kill(&mut child);
            panic!(
                "redis-server on 127.0.0.1:{port} did not answer PING with +PONG within {:?}; its output:\n{}",
                READY_DEADLINE,
                read_log(&log_path, log_start)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The log written since byte `from` (this launch's part), at most its last 4 KiB.
fn read_log(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        let keep = bytes.len().saturating_sub(4096);
        text = String::from_utf8_lossy(&bytes[keep..]).into_owned();
    }
    if text.trim().is_empty() {
        "<no output>".to_string()
    } else {
        text
    }
}

fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.contains("Address already in use"))
        .unwrap_or("Address already in use")
        .trim()
        .to_string()
}

fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// True when an inline `PING\r\n` on a fresh connection is answered `+PONG`.
fn ping(port: u16) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut stream = connect(port, Duration::from_secs(1))?;
        stream.write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.starts_with("+PONG"))
    };
    attempt().unwrap_or(false)
}

/// `process_id` from `INFO server`, if the server answers it.
fn server_pid(port: u16) -> Option<u32> {
    let reply = raw_command_timeout(port, &["INFO", "server"], Duration::from_secs(1)).ok()?;
    reply
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// [`RedisServer::command`] on any port (another node of a cluster, a sentinel).
pub fn raw_command(port: u16, args: &[&str]) -> io::Result<String> {
    raw_command_timeout(port, args, Duration::from_secs(10))
}

fn raw_command_timeout(port: u16, args: &[&str], timeout: Duration) -> io::Result<String> {
    let mut stream = connect(port, timeout)?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    read_reply(&mut reader, &mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// Reads one complete RESP2/RESP3 reply into `out`, framing included.
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "incomplete RESP reply: {:?}",
                String::from_utf8_lossy(&[out.as_slice(), &line].concat())
            ),
        ));
    }
    out.extend_from_slice(&line);
    let kind = line[0];
    let count = || -> io::Result<i64> {
        std::str::from_utf8(&line[1..line.len() - 2])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad RESP length line: {:?}", String::from_utf8_lossy(&line)),
                )
            })
    };
    match kind {
        // Simple string, error, integer; RESP3 null, boolean, double, big number.
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(()),
        // Bulk string; RESP3 blob error, verbatim string.
        b'$' | b'!' | b'=' => {
            let n = count()?;
            if n >= 0 {
                let start = out.len();
                out.resize(start + n as usize + 2, 0);
                reader.read_exact(&mut out[start..])?;
            }
            Ok(())
        }
        // Array; RESP3 set, push.
        b'*' | b'~' | b'>' => {
            for _ in 0..count()?.max(0) {
                read_reply(reader, out)?;
            }
            Ok(())
        }
        // RESP3 map: key and value per entry.
        b'%' => {
            for _ in 0..count()?.max(0) * 2 {
                read_reply(reader, out)?;
            }
            Ok(())
        }
        // RESP3 attribute: a map, then the reply it annotates.
        b'|' => {
            for _ in 0..count()?.max(0) * 2 {
                read_reply(reader, out)?;
            }
            read_reply(reader, out)
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown RESP type byte {:?}", other as char),
        )),
    }
}
