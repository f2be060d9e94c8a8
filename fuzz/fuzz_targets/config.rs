//! Config parsing and validation (`config::parse`).
//!
//! Input: config file text. `file:` references resolve against a scratch
//! folder holding `session.secret` and `rsa.pub`; `env:SG_FUZZ_SECRET` is
//! set. Invariants:
//! - never panics;
//! - an error never shows a secret: not the resolved value of a `file:` or
//!   `env:` secret (the reference itself, a variable name or a path, may be
//!   quoted), and not a value written at a secret position
//!   (`api_secret`, `session.secret`, the Redis URLs, which may hold a
//!   password, a service's `token_sha256`) when that value carries the marker `S3KRET` (the seeds'
//!   secrets do, so mutations keep it) or is a non-string of 12+ characters,
//!   and appears nowhere else in the file (keys, other values), where
//!   quoting it would be legitimate.
//! - TOML that does not parse: the error never contains the marker unless
//!   it is written outside a string (then it is a key, which may be quoted).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use toml::Value;

const MARKER: &str = "S3KRET";
const FILE_SECRET: &str = "S3KRETfromFile7b1";
const ENV_SECRET: &str = "S3KRETfromEnv4c9";

fn base_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sg-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("session.secret"), format!("{FILE_SECRET}\n")).unwrap();
        std::fs::write(
            dir.join("rsa.pub"),
            include_bytes!("../../tests/fixtures/keys/rsa.pub"),
        )
        .unwrap();
        std::env::set_var("SG_FUZZ_SECRET", ENV_SECRET);
        dir
    })
}

/// Every value of the document, split into those at secret positions and
/// the rest (plus every key, which counts as public).
/// A secret is `(text, whether it was written as a string)`.
fn walk(
    value: &Value,
    path: &mut Vec<String>,
    secrets: &mut Vec<(String, bool)>,
    public: &mut Vec<String>,
) {
    match value {
        Value::Table(table) => {
            for (key, v) in table {
                public.push(key.clone());
                path.push(key.clone());
                walk(v, path, secrets, public);
                path.pop();
            }
        }
        Value::Array(items) => {
            for v in items {
                walk(v, path, secrets, public);
            }
        }
        other => {
            let (text, is_string) = match other {
                Value::String(s) => (s.clone(), true),
                v => (v.to_string(), false),
            };
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            let secret = matches!(
                keys.as_slice(),
                ["tenants", "api_secret"]
                    | ["tenants", "session", "secret"]
                    | ["redis", "url"]
                    | ["redis", "nodes"]
                    | ["redis", "sentinels"]
                    | ["tenants", "services", "token_sha256"]
            );
            // `env:NAME` and `file:PATH` are references: the name and the
            // path may be quoted (the resolved value is checked separately).
            let reference = text.starts_with("env:") || text.starts_with("file:");
            if secret && !reference {
                secrets.push((text, is_string));
            } else {
                public.push(text);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = base_dir();
    let Err(errors) = stream_gateway::config::parse(text, dir) else {
        return;
    };
    let message = errors.to_string();
    for resolved in [FILE_SECRET, ENV_SECRET] {
        assert!(
            !message.contains(resolved) || text.contains(resolved),
            "a resolved secret in the error: {message}"
        );
    }
    match text.parse::<toml::Table>() {
        Ok(table) => {
            let (mut secrets, mut public) = (Vec::new(), Vec::new());
            walk(
                &Value::Table(table),
                &mut Vec::new(),
                &mut secrets,
                &mut public,
            );
            for (secret, is_string) in &secrets {
                let marked = if *is_string {
                    secret.contains(MARKER)
                } else {
                    secret.len() >= 12
                };
                if marked && !public.iter().any(|p| p.contains(secret.as_str())) {
                    assert!(
                        !message.contains(secret.as_str()),
                        "secret {secret:?} in the error: {message}"
                    );
                }
            }
        }
        Err(_) => {
            // The marker outside any string: a key name or bare junk, which a
            // syntax error may legitimately quote.
            let outside = text.lines().any(|line| {
                let mut quoted = None;
                let mut rest = line;
                while let Some(c) = rest.chars().next() {
                    match quoted {
                        Some(q) if c == q => quoted = None,
                        Some(_) => {}
                        None if c == '"' || c == '\'' => quoted = Some(c),
                        None if rest.starts_with(MARKER) => return true,
                        None => {}
                    }
                    rest = &rest[c.len_utf8()..];
                }
                false
            });
            if !outside {
                assert!(
                    !message.contains(MARKER),
                    "a secret in a syntax error: {message}"
                );
            }
        }
    }
});
