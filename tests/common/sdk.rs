//! Running the Node side of the SDK tests (`tests/sdk/`): checks that `node` and
//! `npm` exist (a missing one fails the test with an install hint), runs `npm ci`
//! when `node_modules` is missing or was installed from another `package-lock.json`
//! (its SHA-256 is kept in `node_modules/.package-lock.sha256`), and runs scripts
//! with a deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const MARKER: &str = ".package-lock.sha256";
const NPM_CI_DEADLINE: Duration = Duration::from_secs(600);

/// `tests/sdk` in this checkout.
pub fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sdk")
}

/// The cargo target directory (for artifacts such as `target/sdk-demo.png`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// `program --version`, or a panic saying how to install it.
fn require(program: &str) -> String {
    let hint = "install Node.js 18+ with npm (Debian: `apt-get install nodejs npm`; \
                deploy/setup.sh checks for them)";
    match Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`{program} --version` failed ({}): {}; {hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("`{program}` not found ({e}): the SDK tests need it; {hint}"),
    }
}

fn lock_hash(dir: &Path) -> String {
    let lock =
        std::fs::read(dir.join("package-lock.json")).expect("read tests/sdk/package-lock.json");
    Sha256::digest(&lock)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A directory lock (`tests/sdk/.npm-ci.lock`) so two test binaries never run
/// `npm ci` at once; removed on drop. A lock older than the `npm ci` deadline is stale.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: PathBuf) -> DirLock {
        let deadline = Instant::now() + NPM_CI_DEADLINE + Duration::from_secs(30);
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return DirLock(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > NPM_CI_DEADLINE);
                    if stale {
                        let _ = std::fs::remove_dir(&path);
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} still held; remove it if no test is running",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("create {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Makes sure `tests/sdk/node_modules` matches `package-lock.json` (running
/// `npm ci --no-audit --no-fund` if not). Returns `node --version`.
pub fn ensure_node_modules() -> String {
    let node = require("node");
    require("npm");
    let dir = sdk_dir();
    let want = lock_hash(&dir);
    let marker = dir.join("node_modules").join(MARKER);
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return node;
    }
    let _lock = DirLock::acquire(dir.join(".npm-ci.lock"));
    // Another test binary may have installed it while we waited.
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return node;
    }
    eprintln!("tests/sdk: node_modules missing or stale; running npm ci");
    let out = run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        NPM_CI_DEADLINE,
    );
    assert!(
        out.status_ok,
        "`npm ci` in {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        dir.display(),
        out.status,
        out.stdout,
        out.stderr
    );
    std::fs::write(&marker, &want).expect("write the node_modules marker");
    node
}

/// What a finished (or killed) child printed.
pub struct Ran {
    pub status_ok: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Ran {
    /// The last non-empty stdout line parsed as JSON (the scripts' result line).
    pub fn result_json(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no output; {}", self.describe()));
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("last line is not JSON ({e}); {}", self.describe()))
    }

    pub fn describe(&self) -> String {
        format!(
            "status {}{}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.status,
            if self.timed_out {
                " (killed: deadline)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` (stdin closed, output captured); kills it (by handle) after `deadline`.
pub fn run(cmd: &mut Command, deadline: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout pipe")));
    let err = reader(Box::new(child.stderr.take().expect("stderr pipe")));
    let until = Instant::now() + deadline;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= until {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ran {
        status_ok: status.success() && !timed_out,
        status: status.to_string(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
    }
}

/// `node <script>` in `tests/sdk` with `env` added, with a deadline.
pub fn run_node(script: &str, env: &[(&str, String)], deadline: Duration) -> Ran {
    let mut cmd = Command::new("node");
    cmd.arg(script).current_dir(sdk_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, deadline)
}
