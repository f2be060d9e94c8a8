//! Launches the built `stream-gateway` binary for integration tests.
//!
//! `Gateway::start` writes a TOML config (with `@LISTEN@` / `@ADMIN@` replaced by free
//! 127.0.0.1 ports) to a temp dir, spawns the binary with `--config`, and waits until
//! `GET /healthz` on the admin port answers 200 and the listen port accepts TCP.
//! Everything here is blocking std code, so it works from sync and async tests.
//! Dropping a `Gateway` kills its child process (by handle) and waits for it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the gateway binary Cargo built for this test run.
pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_stream-gateway");

const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(20);
const ADDR_IN_USE_RETRIES: usize = 3;
const CLI_DEADLINE: Duration = Duration::from_secs(30);

/// A running gateway process.
pub struct Gateway {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
    stderr_path: PathBuf,
    config_path: PathBuf,
}

enum Attempt {
    Ready(Gateway),
    AddrInUse(String),
}

impl Gateway {
    /// Starts the gateway with `config` (TOML with `@LISTEN@` and `@ADMIN@`
    /// placeholders). Panics with the gateway's stderr if it does not become ready.
    pub fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[])
    }

    /// Like [`Gateway::start`], with extra environment variables for the child (the
    /// rest of the test process's environment is inherited).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let mut last = String::new();
        for _ in 0..=ADDR_IN_USE_RETRIES {
            match Self::attempt(config, env) {
                Attempt::Ready(gw) => return gw,
                Attempt::AddrInUse(stderr) => last = stderr,
            }
        }
        panic!(
            "gateway failed to bind {} times in a row (Address already in use); last stderr:\n{last}",
            ADDR_IN_USE_RETRIES + 1
        );
    }

    fn attempt(config: &str, env: &[(&str, &str)]) -> Attempt {
        let (listen, admin) = free_port_pair();
        let dir = tempfile::Builder::new()
            .prefix("stream-gateway-test-")
            .tempdir()
            .expect("create temp dir");
        let config_path = dir.path().join("gateway.toml");
        let text = config
            .replace("@LISTEN@", &listen.to_string())
            .replace("@ADMIN@", &admin.to_string());
        std::fs::write(&config_path, text).expect("write gateway.toml");
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");

        let mut cmd = Command::new(GATEWAY_BIN);
        cmd.arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create stdout.log"))
            .stderr(File::create(&stderr_path).expect("create stderr.log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {GATEWAY_BIN}: {e}"));

        let mut gw = Gateway {
            listen,
            admin,
            child,
            _dir: dir,
            stderr_path,
            config_path,
        };

        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match gw.child.try_wait() {
                Ok(Some(status)) => {
                    let stderr = gw.stderr();
                    if stderr.contains("Address already in use") {
                        return Attempt::AddrInUse(stderr);
                    }
                    panic!(
                        "gateway exited before it was ready ({status}); config:\n{}\nstderr:\n{stderr}",
                        gw.config_text()
                    );
                }
                Ok(None) => {}
                Err(e) => panic!("try_wait on gateway child: {e}"),
            }
            if healthz_ok(admin) && TcpStream::connect_timeout(&listen, POLL_EVERY * 5).is_ok() {
                return Attempt::Ready(gw);
            }
            if Instant::now() >= deadline {
                let _ = gw.child.kill();
                let _ = gw.child.wait();
                panic!(
                    "gateway not ready after {READY_DEADLINE:?} (GET http://{admin}/healthz and TCP {listen}); config:\n{}\nstderr:\n{}",
                    gw.config_text(),
                    gw.stderr()
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// `http://LISTEN`
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// `http://ADMIN`
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The gateway's stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The gateway's stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stderr_path.with_file_name("stdout.log"))
    }

    /// Path of the written gateway.toml (placeholders replaced).
    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    /// Whether the child has exited; `Some(status)` if so.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child's process id (e.g. to send it a signal with `kill -HUP <pid>`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn config_text(&self) -> String {
        read_lossy(&self.config_path)
    }
}

impl Gateway {
    /// Sends signal `name` (`TERM`, `HUP`, `QUIT`) to this gateway, by PID.
    pub fn signal(&self, name: &str) {
        send_signal(self.child.id(), name);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Starts a second gateway with `-u` on the same config (same ports,
    /// pid file and upgrade socket): it takes the listeners over once this
    /// one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Upgraded {
        let dir = self.config_path.parent().expect("config dir").to_path_buf();
        let stderr_path = dir.join("stderr-upgraded.log");
        let child = Command::new(GATEWAY_BIN)
            .arg("-u")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path).expect("create stderr-upgraded.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {GATEWAY_BIN} -u: {e}"));
        Upgraded { child, stderr_path }
    }
}

/// The new process of a `-u` upgrade; killed (by handle) when dropped.
pub struct Upgraded {
    pub child: Child,
    stderr_path: PathBuf,
}

impl Upgraded {
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -s <name> <pid>` for a process this test started.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Every gateway of the whole suite is checked for leaks (issue 9):
        // its /metrics (while it still runs), stdout (logs, stdout audit
        // records) and stderr must hold no token and no test secret.
        let metrics = if self.try_exit_status().is_none() {
            admin_get(self.admin, "/metrics")
        } else {
            String::new()
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- gateway stderr ({}) ----\n{}\n---- end gateway stderr ----",
                self.stderr_path.display(),
                self.stderr()
            );
            return;
        }
        for (what, text) in [
            ("stderr", self.stderr()),
            ("stdout", self.stdout()),
            ("/metrics", metrics),
        ] {
            if let Some(leak) = super::find_leak(&text) {
                panic!("the gateway's {what} leaks {leak}:\n{text}");
            }
        }
    }
}

/// Blocking `GET path` on the admin listener; the whole response as text
/// ("" when it cannot be had within a second or two).
fn admin_get(admin: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(500)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the gateway binary with `args` (e.g. `["check", "--config", p]` or
/// `["routes"]`) and extra `env`, and returns its output. Panics (after killing it)
/// if it runs longer than 30 s.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_cli_with_stdin(args, env, None)
}

/// [`run_cli`] with `stdin` written to the child's standard input.
pub fn run_cli_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(GATEWAY_BIN);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {GATEWAY_BIN}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .expect("write the child's stdin");
    }
    let out_reader = spawn_reader(child.stdout.take().expect("stdout pipe"));
    let err_reader = spawn_reader(child.stderr.take().expect("stderr pipe"));

    let deadline = Instant::now() + CLI_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("try_wait on gateway child: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "`stream-gateway {}` still running after {CLI_DEADLINE:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Two distinct free 127.0.0.1 ports (both bound at once, then released).
fn free_port_pair() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    (
        a.local_addr().expect("local_addr"),
        b.local_addr().expect("local_addr"),
    )
}

/// A free 127.0.0.1 port (bound, then released), for tests that need one more.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
}

/// Blocking `GET /healthz` on `admin`; true on a 200 status line.
fn healthz_ok(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    // Read until the status line is complete (or EOF / timeout).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    matches!(
        (parts.next(), parts.next()),
        (Some(v), Some("200")) if v.starts_with("HTTP/1.")
    )
}
