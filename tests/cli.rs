//! The command-line contract of the built `stream-gateway` binary: `check`
//! (exit codes, one `error:` line per problem, never a secret value or the
//! file's text), `routes` (the policy table, with and without a config), the
//! shipped config files validating, and the run command refusing a bad config
//! before it binds anything.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::run_cli;

/// Every literal secret and secret env value in these tests contains this, so
/// one `contains` check finds any leak.
const MARKER: &str = "S3CRET-MARKER";
/// A comment put on secret lines: if it shows up, the file's text was echoed.
const FILE_TEXT_MARKER: &str = "FILE-TEXT-MARKER";

/// A minimal valid config: one tenant, session secret from an env variable.
const VALID: &str = r#"
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"

[upstream]
url = "http://127.0.0.1:13031"
connect_timeout = "1s"

[[tenants]]
id = "acme"
api_key = "acme-key"
api_secret = "S3CRET-MARKER-123" # FILE-TEXT-MARKER
[tenants.session]
type = "jwt"
algorithms = ["HS256"]
secret = "env:SG_CLI_TEST_SESSION_SECRET"
"#;

/// An env variable no test sets, referenced by configs that must report it missing.
const UNSET_VAR: &str = "SG_CLI_TEST_SURELY_UNSET_7Q3Z";

/// Writes `text` to `name` in a fresh temp dir; keep the dir alive while using the path.
fn write_config(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("stream-gateway-cli-")
        .tempdir()
        .expect("create temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp path is UTF-8")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

fn check(path: &Path, env: &[(&str, &str)]) -> Output {
    run_cli(&["check", "--config", path_str(path)], env)
}

/// Neither stream holds a secret marker or a piece of the file's text.
fn assert_no_leak(out: &Output) {
    for (name, text) in [("stdout", stdout(out)), ("stderr", stderr(out))] {
        assert!(
            !text.contains(MARKER),
            "a secret value leaked to {name}; {}",
            describe(out)
        );
        assert!(
            !text.contains(FILE_TEXT_MARKER),
            "the config file's text leaked to {name}; {}",
            describe(out)
        );
    }
}

/// The run failed with exit code 1, nothing on stdout, and every stderr line
/// is an `error: ` line. Returns those lines.
fn error_lines(out: &Output) -> Vec<String> {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    assert!(stdout(out).is_empty(), "{}", describe(out));
    let lines: Vec<String> = stderr(out).lines().map(str::to_string).collect();
    assert!(!lines.is_empty(), "no problem reported; {}", describe(out));
    for line in &lines {
        assert!(
            line.starts_with("error: "),
            "unexpected stderr line {line:?}; {}",
            describe(out)
        );
    }
    lines
}

/// Each expected fragment appears on exactly one line, and there is no other line.
fn assert_one_line_per_problem(out: &Output, expected: &[&str]) {
    let lines = error_lines(out);
    for fragment in expected {
        let hits = lines.iter().filter(|l| l.contains(fragment)).count();
        assert_eq!(
            hits,
            1,
            "expected exactly one line containing {fragment:?}; {}",
            describe(out)
        );
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem, no more; {}",
        describe(out)
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let (_dir, path) = write_config("gateway.toml", VALID);
    let out = check(
        &path,
        &[("SG_CLI_TEST_SESSION_SECRET", "ENV-S3CRET-MARKER-456")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), "config ok: 1 tenant(s)");
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
    assert_no_leak(&out);
}

#[test]
fn check_accepts_quota_redis_and_audit_as_enforced_sections() {
    let text = format!(
        "{VALID}\n[tenants.quota]\nrequests_per_minute = 600\n\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n\n[audit]\nsink = \"stdout\"\n"
    );
    let (_dir, path) = write_config("gateway.toml", &text);
    let out = check(
        &path,
        &[("SG_CLI_TEST_SESSION_SECRET", "ENV-S3CRET-MARKER-456")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    // Quotas, Redis and the audit log are all enforced: no "parsed but not
    // active" notes any more.
    assert!(!err.contains("note: "), "{}", describe(&out));
    assert_no_leak(&out);
}

#[test]
fn check_reports_every_problem_on_its_own_line_without_secrets() {
    assert!(std::env::var_os(UNSET_VAR).is_none(), "{UNSET_VAR} is set");
    let text = format!(
        r#"
[server]
listen = "not-an-address"

[upstream]
url = "https://chat.stream-io-api.com/v1"

[policy]
deny = ["NoSuchOperation"]

# "none" is never allowed.
[[tenants]]
id = "none-alg"
api_key = "dup-key"
api_secret = "S3CRET-MARKER-1" # FILE-TEXT-MARKER
[tenants.session]
type = "jwt"
algorithms = ["none"]
secret = "S3CRET-MARKER-2" # FILE-TEXT-MARKER

# Same api_key as above; api_secret from a variable that is not set;
# an RSA algorithm with an HMAC secret.
[[tenants]]
id = "rsa-secret"
api_key = "dup-key"
api_secret = "env:{UNSET_VAR}"
[tenants.session]
type = "jwt"
algorithms = ["RS256"]
secret = "S3CRET-MARKER-3" # FILE-TEXT-MARKER

# Session secret equal to the Stream secret (one literal, one from env).
[[tenants]]
id = "same-secret"
api_key = "key-3"
api_secret = "S3CRET-MARKER-SAME" # FILE-TEXT-MARKER
[tenants.session]
type = "jwt"
algorithms = ["HS256"]
secret = "env:SG_CLI_TEST_SAME_SECRET"

# A JWKS session without an issuer (required unless verify_issuer = false).
[[tenants]]
id = "jwks-session"
api_key = "key-4"
api_secret = "env:SG_CLI_TEST_STREAM_SECRET"
[tenants.session]
type = "jwks"
jwks_url = "https://auth.example.com/.well-known/jwks.json"
audience = "chat"
"#
    );
    let (_dir, path) = write_config("bad.toml", &text);
    let out = check(
        &path,
        &[
            ("SG_CLI_TEST_SAME_SECRET", "S3CRET-MARKER-SAME"),
            ("SG_CLI_TEST_STREAM_SECRET", "ENV-S3CRET-MARKER-4"),
        ],
    );
    assert_one_line_per_problem(
        &out,
        &[
            "server.listen:",
            "upstream.url:",
            "NoSuchOperation",
            "tenants[none-alg].session.algorithms:",
            "tenants[rsa-secret].api_key:",
            &format!("tenants[rsa-secret].api_secret: environment variable {UNSET_VAR}"),
            "tenants[rsa-secret].session:",
            "tenants[same-secret].session.secret: must differ",
            "tenants[jwks-session].session.issuer: required",
        ],
    );
    assert_no_leak(&out);
}

#[test]
fn check_names_an_unknown_key() {
    let text = VALID.replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nconect_timeout = \"2s\"",
    );
    let (_dir, path) = write_config("gateway.toml", &text);
    let out = check(
        &path,
        &[("SG_CLI_TEST_SESSION_SECRET", "ENV-S3CRET-MARKER-456")],
    );
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(lines[0].contains("conect_timeout"), "{}", describe(&out));
    assert!(lines[0].contains("line 9"), "{}", describe(&out));
    assert_no_leak(&out);
}

#[test]
fn check_syntax_error_on_a_secret_line_gives_position_not_text() {
    let head = "[server]\nlisten = \"127.0.0.1:18080\"\n\n[upstream]\nurl = \"http://127.0.0.1:13031\"\n\n[[tenants]]\nid = \"acme\"\napi_key = \"acme-key\"\n";
    // Line 10 holds the secret, broken in different ways; the line where the
    // parser notices is given with each.
    let broken = [
        ("api_secret = \"S3CRET-MARKER-123 # FILE-TEXT-MARKER\n", 10),
        ("api_secret = S3CRET-MARKER-123 # FILE-TEXT-MARKER\n", 10),
        ("api_secret = \"S3CRET-MARKER-123\" FILE-TEXT-MARKER\n", 10),
        ("api_secret = 'S3CRET-MARKER-123 # FILE-TEXT-MARKER\n", 10),
        ("api_secret = \"S3CRET-MARKER-123\\q\" # FILE-TEXT-MARKER\n", 10),
        ("api_secret = \"\"\"S3CRET-MARKER-123 # FILE-TEXT-MARKER\n", 11),
        (
            "api_secret = \"S3CRET-MARKER-123\"\napi_secret = \"S3CRET-MARKER-456\" # FILE-TEXT-MARKER\n",
            11,
        ),
    ];
    for (line, at) in broken {
        let (_dir, path) = write_config("gateway.toml", &format!("{head}{line}"));
        let out = check(&path, &[]);
        let lines = error_lines(&out);
        assert_eq!(lines.len(), 1, "for {line:?}: {}", describe(&out));
        assert!(
            lines[0].starts_with("error: config: ")
                && lines[0].contains(&format!("(line {at}, column ")),
            "for {line:?}: expected a position on line {at}; {}",
            describe(&out)
        );
        assert_no_leak(&out);
    }
}

/// A secret written without quotes parses as a TOML integer; the type error must
/// not echo it (toml/serde messages quote the unexpected value).
#[test]
fn check_type_error_does_not_echo_a_numeric_secret() {
    let head = "[server]\nlisten = \"127.0.0.1:18080\"\n\n[upstream]\nurl = \"http://127.0.0.1:13031\"\n\n[[tenants]]\nid = \"acme\"\napi_key = \"acme-key\"\n";
    let secret = "918273645546372819";
    let (_dir, path) = write_config("gateway.toml", &format!("{head}api_secret = {secret}\n"));
    let out = check(&path, &[]);
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(
        !stderr(&out).contains(secret),
        "the numeric secret was echoed; {}",
        describe(&out)
    );
}

#[test]
fn check_missing_file_says_it_cannot_read_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-such-config.toml");
    let out = check(&path, &[]);
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(
        lines[0].contains("cannot read config file") && lines[0].contains("no-such-config.toml"),
        "{}",
        describe(&out)
    );
}

#[test]
fn check_without_config_flag_is_a_usage_error() {
    let out = run_cli(&["check"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("--config"), "{}", describe(&out));
}

/// Whether `text` has a route line with these first four tab-separated columns.
fn has_route(text: &str, method: &str, template: &str, side: &str, operation: &str) -> bool {
    text.lines().any(|l| {
        let cols: Vec<&str> = l.split('\t').collect();
        cols.len() >= 4 && cols[..4] == [method, template, side, operation]
    })
}

fn assert_route(out: &Output, method: &str, template: &str, side: &str, operation: &str) {
    assert!(
        has_route(&stdout(out), method, template, side, operation),
        "no route line {method}\\t{template}\\t{side}\\t{operation}; {}",
        describe(out)
    );
}

#[test]
fn routes_prints_the_embedded_table_and_denies_unknown_routes() {
    let out = run_cli(&["routes"], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
    let text = stdout(&out);

    assert!(
        text.lines()
            .any(|l| l.starts_with("PATCH\t/app\tserver\tUpdateApp")),
        "{}",
        describe(&out)
    );
    assert_route(&out, "PATCH", "/app", "server", "UpdateApp");
    assert_route(
        &out,
        "POST",
        "/channels/{type}/{id}/message",
        "client",
        "SendMessage",
    );
    assert_route(&out, "GET", "/connect", "client", "Connect");
    // Both /api/v2/ forms: the spec's v2 paths and a js-client-only v2 path.
    assert_route(&out, "PATCH", "/api/v2/app", "server", "UpdateApp");
    assert_route(
        &out,
        "POST",
        "/api/v2/chat/channels/{type}/{id}/message",
        "client",
        "SendMessage",
    );
    assert_route(
        &out,
        "GET",
        "/api/v2/moderation/user_report",
        "client",
        "GetUserModerationReport",
    );

    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"unknown routes: deny"), "{text}");
    for l in &lines[..lines.len() - 1] {
        let cols: Vec<&str> = l.split('\t').collect();
        assert_eq!(cols.len(), 5, "route line {l:?} is not 5 columns");
        assert!(
            cols[2] == "client" || cols[2] == "server",
            "route line {l:?}: bad side"
        );
    }
}

#[test]
fn routes_with_config_shows_its_overrides() {
    let text = VALID.replacen(
        "[[tenants]]",
        "[policy]\nunknown_routes = \"allow\"\ndeny = [\"SendMessage\"]\nallow = [\"GET /hook/events\", \"GET /custom/{id}\"]\n\n[[tenants]]",
        1,
    );
    let (_dir, path) = write_config("gateway.toml", &text);

    let out = run_cli(
        &["routes", "--config", path_str(&path)],
        &[("SG_CLI_TEST_SESSION_SECRET", "ENV-S3CRET-MARKER-456")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_route(
        &out,
        "POST",
        "/channels/{type}/{id}/message",
        "server",
        "SendMessage",
    );
    assert_route(
        &out,
        "POST",
        "/api/v2/chat/channels/{type}/{id}/message",
        "server",
        "SendMessage",
    );
    assert!(
        !has_route(
            &stdout(&out),
            "POST",
            "/channels/{type}/{id}/message",
            "client",
            "SendMessage"
        ),
        "{}",
        describe(&out)
    );
    assert_route(&out, "GET", "/hook/events", "client", "GetHookEvents");
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.split('\t').collect::<Vec<_>>()
                == ["GET", "/custom/{id}", "client", "ConfigRoute", "config"]),
        "{}",
        describe(&out)
    );
    // Untouched routes keep their side.
    assert_route(&out, "PATCH", "/app", "server", "UpdateApp");
    assert_route(&out, "GET", "/connect", "client", "Connect");
    assert_eq!(
        stdout(&out).lines().last(),
        Some("unknown routes: allow"),
        "{}",
        describe(&out)
    );
    assert_no_leak(&out);
}

#[test]
fn routes_with_an_invalid_config_fails_like_check() {
    let text = VALID.replacen(
        "[[tenants]]",
        "[policy]\ndeny = [\"NoSuchOperation\"]\n\n[[tenants]]",
        1,
    );
    let (_dir, path) = write_config("gateway.toml", &text);
    let out = run_cli(
        &["routes", "--config", path_str(&path)],
        &[("SG_CLI_TEST_SESSION_SECRET", "ENV-S3CRET-MARKER-456")],
    );
    assert_one_line_per_problem(&out, &["NoSuchOperation"]);
    assert_no_leak(&out);
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn shipped_dev_config_validates() {
    let out = check(&repo_file("config/dev.toml"), &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("config ok"), "{}", describe(&out));
}

#[test]
fn shipped_reference_config_validates_with_its_env_secrets() {
    let path = repo_file("config/gateway.toml");
    let out = check(
        &path,
        &[
            ("ACME_STREAM_SECRET", "ENV-S3CRET-MARKER-stream"),
            ("ACME_SESSION_SECRET", "ENV-S3CRET-MARKER-session"),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("config ok"), "{}", describe(&out));
    assert_no_leak(&out);

    // The same value for both is refused, as the file's comments say.
    let out = check(
        &path,
        &[
            ("ACME_STREAM_SECRET", "ENV-S3CRET-MARKER-same"),
            ("ACME_SESSION_SECRET", "ENV-S3CRET-MARKER-same"),
        ],
    );
    assert_one_line_per_problem(&out, &["tenants[acme].session.secret: must differ"]);
    assert_no_leak(&out);
}

#[test]
fn shipped_bench_config_validates_once_rendered() {
    let template = std::fs::read_to_string(repo_file("benches/gateway-bench.toml"))
        .expect("read benches/gateway-bench.toml");
    let script = std::fs::read_to_string(repo_file("benches/run-gateway.sh"))
        .expect("read benches/run-gateway.sh");
    let values = [
        ("@BENCH_LISTEN@", "127.0.0.1:18088"),
        ("@BENCH_UPSTREAM@", "http://127.0.0.1:13031"),
        ("@BENCH_STREAM_API_KEY@", "bench-key"),
        ("@BENCH_WORKERS@", "2"),
    ];
    let mut rendered = template.clone();
    for (placeholder, value) in values {
        assert!(
            template.contains(placeholder),
            "{placeholder} is no longer in the bench config"
        );
        assert!(
            script.contains(&format!("s|{placeholder}|")),
            "run-gateway.sh does not fill {placeholder}"
        );
        rendered = rendered.replace(placeholder, value);
    }
    assert!(
        !rendered.contains("@BENCH_"),
        "the bench config has a placeholder this test (and maybe run-gateway.sh) does not fill:\n{rendered}"
    );
    let (_dir, path) = write_config("gateway-bench.toml", &rendered);
    let out = check(
        &path,
        &[
            ("BENCH_STREAM_SECRET", "ENV-S3CRET-MARKER-stream"),
            ("BENCH_APP_SECRET", "ENV-S3CRET-MARKER-app"),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("config ok"), "{}", describe(&out));
    assert_no_leak(&out);
}

#[test]
fn run_refuses_a_bad_config_before_binding() {
    // Hold the listen port: a gateway that bound before validating would
    // report "Address already in use" instead of (or besides) the problem.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = held.local_addr().expect("local_addr");
    let text = VALID
        .replace("127.0.0.1:18080", &listen.to_string())
        .replace(
            "algorithms = [\"HS256\"]",
            "algorithms = [\"none\"] # FILE-TEXT-MARKER",
        );
    let (_dir, path) = write_config("bad.toml", &text);
    let started = Instant::now();
    let out = run_cli(
        &["--config", path_str(&path)],
        &[
            ("SG_CLI_TEST_SESSION_SECRET", "ENV-S3CRET-MARKER-456"),
            ("RUST_LOG", "info"),
        ],
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to refuse the config"
    );
    assert!(
        !stderr(&out).contains("in use"),
        "it tried to bind; {}",
        describe(&out)
    );
    assert_one_line_per_problem(&out, &["tenants[acme].session.algorithms: \"none\""]);
    assert_no_leak(&out);
    drop(held);
}
