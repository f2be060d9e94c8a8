//! Validation of the fleet-wide websocket caps keys
//! (`[tenants.limits] connection_caps`, `[redis] connection_lease`) and of
//! the `[server]` client limits.

use std::path::Path;
use std::time::Duration;

use crate::config::{parse, Settings};

fn config(limits: &str, redis: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:1"

[upstream]
url = "http://127.0.0.1:2"

[[tenants]]
id = "acme"
api_key = "k"
api_secret = "stream-secret"

[tenants.session]
type = "jwt"
algorithms = ["HS256"]
secret = "session-secret"

[tenants.limits]
{limits}

{redis}
"#
    )
}

fn ok(limits: &str, redis: &str) -> Settings {
    match parse(&config(limits, redis), Path::new(".")) {
        Ok(s) => s,
        Err(e) => panic!("refused: {e}"),
    }
}

fn errors(limits: &str, redis: &str) -> String {
    match parse(&config(limits, redis), Path::new(".")) {
        Ok(_) => panic!("accepted:\n{limits}\n{redis}"),
        Err(e) => e.to_string(),
    }
}

const REDIS: &str = "[redis]\nurl = \"redis://127.0.0.1:6379\"";

#[test]
fn caps_are_local_by_default_and_the_lease_is_30s() {
    let s = ok("max_connections_per_user = 2", REDIS);
    assert!(!s.tenants[0].fleet_connection_caps);
    let r = s.redis.as_ref().unwrap();
    assert_eq!(r.connection_lease, Duration::from_secs(30));
    let s = ok(
        "max_connections_per_user = 2\nconnection_caps = \"local\"",
        "",
    );
    assert!(!s.tenants[0].fleet_connection_caps);
}

#[test]
fn fleet_caps_are_accepted_with_redis_and_a_cap() {
    for caps in ["max_connections_per_user = 2", "max_connections = 100"] {
        let s = ok(&format!("{caps}\nconnection_caps = \"fleet\""), REDIS);
        assert!(s.tenants[0].fleet_connection_caps, "{caps}");
    }
    let s = ok(
        "max_connections_per_user = 2\nconnection_caps = \"fleet\"",
        &format!("{REDIS}\ntimeout = \"200ms\"\nconnection_lease = \"2s\""),
    );
    assert_eq!(
        s.redis.as_ref().unwrap().connection_lease,
        Duration::from_secs(2)
    );
}

#[test]
fn fleet_caps_need_redis() {
    let e = errors(
        "max_connections_per_user = 2\nconnection_caps = \"fleet\"",
        "",
    );
    assert!(
        e.contains("tenants[acme].limits.connection_caps") && e.contains("[redis]"),
        "{e}"
    );
}

#[test]
fn fleet_caps_need_a_cap_to_count() {
    let e = errors("connection_caps = \"fleet\"", REDIS);
    assert!(
        e.contains("connection_caps") && e.contains("max_connections_per_user"),
        "{e}"
    );
}

#[test]
fn connection_caps_takes_local_or_fleet_only() {
    for bad in ["\"global\"", "\"Fleet\"", "\"\""] {
        let e = errors(
            &format!("max_connections = 5\nconnection_caps = {bad}"),
            REDIS,
        );
        assert!(
            e.contains("connection_caps: must be \"local\" or \"fleet\""),
            "{e}"
        );
    }
    let e = errors("max_connections = 5\nconnection_caps = true", REDIS);
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn connection_lease_must_outlast_heartbeats() {
    for (lease, timeout) in [("500ms", "100ms"), ("0s", "100ms"), ("1s", "400ms")] {
        let e = errors(
            "max_connections = 5\nconnection_caps = \"fleet\"",
            &format!("{REDIS}\ntimeout = \"{timeout}\"\nconnection_lease = \"{lease}\""),
        );
        assert!(
            e.contains(
                "redis.connection_lease: must be at least 1s and at least 3 times redis.timeout"
            ),
            "{lease} {timeout}: {e}"
        );
    }
    ok(
        "max_connections = 5",
        &format!("{REDIS}\ntimeout = \"100ms\"\nconnection_lease = \"1s\""),
    );
}

/// `[server]` client limits: defaults, overrides, and zero refused.
#[test]
fn client_limits_default_override_and_refuse_zero() {
    let d = ok("", "").server.client;
    assert_eq!(d, crate::config::ClientLimits::default());
    assert_eq!(
        (d.max_uri_bytes, d.max_header_bytes, d.max_headers),
        (57344, 32768, 100)
    );
    assert_eq!(d.body_timeout, Duration::from_secs(30));
    assert_eq!(d.header_timeout, Duration::from_secs(30));
    let with = |server_extra: &str| {
        config("", "").replacen(
            "listen = \"127.0.0.1:1\"\n",
            &format!("listen = \"127.0.0.1:1\"\n{server_extra}\n"),
            1,
        )
    };
    let s = parse(
        &with("max_uri_bytes = 100\nmax_header_bytes = 200\nmax_headers = 3\nclient_body_timeout = \"2s\"\nclient_header_timeout = \"3s\""),
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("refused: {e}"));
    let c = s.server.client;
    assert_eq!(
        (c.max_uri_bytes, c.max_header_bytes, c.max_headers),
        (100, 200, 3)
    );
    assert_eq!(c.body_timeout, Duration::from_secs(2));
    assert_eq!(c.header_timeout, Duration::from_secs(3));
    let Err(e) = parse(
        &with("max_uri_bytes = 0\nmax_header_bytes = 0\nmax_headers = 0\nclient_body_timeout = \"0s\"\nclient_header_timeout = \"0s\""),
        Path::new("."),
    ) else {
        panic!("zero limits accepted");
    };
    let e = e.to_string();
    for key in [
        "server.max_uri_bytes",
        "server.max_header_bytes",
        "server.max_headers",
        "server.client_body_timeout",
        "server.client_header_timeout",
    ] {
        assert!(e.contains(key), "{key} not reported: {e}");
    }
}
