//! Validation of `[redis]`: the deployment (`mode`: single server, Sentinel
//! or Cluster) and its addresses, the timeout, `on_redis_error`, the
//! revocation poll and the fleet websocket caps' lease. URLs may hold
//! passwords: messages name keys and positions in lists, never a URL or a
//! part of one.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::super::file::{self, RedisSection};
use super::super::RedisSettings;
use super::Problems;
use crate::redis_conn::RedisTarget;

pub(super) fn redis(r: &RedisSection, p: &mut Problems) -> Option<RedisSettings> {
    let before = p.0.len();
    let target = target(r, p);
    let on_error = match r.on_redis_error.as_deref() {
        None | Some("local") => Some(crate::quota::OnRedisError::Local),
        Some("deny") => Some(crate::quota::OnRedisError::Deny),
        Some(_) => {
            p.add("redis.on_redis_error: must be \"local\" or \"deny\"");
            None
        }
    };
    let timeout = r.timeout.unwrap_or(file::DEFAULT_REDIS_TIMEOUT);
    if timeout.is_zero() {
        p.add("redis.timeout: must be more than 0s");
    }
    let revocation_poll = r.revocation_poll.unwrap_or(file::DEFAULT_REVOCATION_POLL);
    let connection_lease = r.connection_lease.unwrap_or(file::DEFAULT_CONNECTION_LEASE);
    // A heartbeat every third of the lease, each waiting at most `timeout`:
    // a live socket must survive a slow or failed heartbeat.
    if connection_lease < std::time::Duration::from_secs(1) || connection_lease < timeout * 3 {
        p.add("redis.connection_lease: must be at least 1s and at least 3 times redis.timeout");
    }
    if p.0.len() != before {
        return None;
    }
    Some(RedisSettings {
        target: target?,
        timeout,
        on_error: on_error?,
        revocation_poll: (!revocation_poll.is_zero()).then_some(revocation_poll),
        connection_lease,
    })
}

fn target(r: &RedisSection, p: &mut Problems) -> Option<RedisTarget> {
    let mode = r.mode.as_deref().unwrap_or("single");
    let only = |key: &str, set: bool, mode: &str, p: &mut Problems| {
        if set {
            p.add(format!("redis.{key}: only used with mode = \"{mode}\""));
        }
    };
    match mode {
        "single" => {
            only("nodes", r.nodes.is_some(), "cluster", p);
            only("sentinels", r.sentinels.is_some(), "sentinel", p);
            only("master_name", r.master_name.is_some(), "sentinel", p);
            let Some(url) = &r.url else {
                p.add("redis.url: required (mode = \"single\", the default), e.g. \"redis://127.0.0.1:6379\"");
                return None;
            };
            parse("redis.url", url, p)?;
            Some(RedisTarget::Single { url: url.clone() })
        }
        "cluster" => {
            only("sentinels", r.sentinels.is_some(), "sentinel", p);
            only("master_name", r.master_name.is_some(), "sentinel", p);
            let seeds: Vec<(String, &String)> = match (&r.url, &r.nodes) {
                (Some(_), Some(_)) => {
                    p.add("redis.url: with mode = \"cluster\" list the seed nodes in nodes, or give url alone as the one seed, not both");
                    return None;
                }
                (None, None) => {
                    p.add("redis.nodes: required with mode = \"cluster\": seed node URLs, e.g. [\"redis://10.0.0.1:6379\"]");
                    return None;
                }
                (Some(url), None) => vec![("redis.url".to_string(), url)],
                (None, Some(nodes)) if nodes.is_empty() => {
                    p.add("redis.nodes: must list at least one seed node");
                    return None;
                }
                (None, Some(nodes)) => nodes
                    .iter()
                    .enumerate()
                    .map(|(i, u)| (format!("redis.nodes[{i}]"), u))
                    .collect(),
            };
            let mut first: Option<ConnectionInfo> = None;
            let mut ok = true;
            for (key, url) in &seeds {
                let Some(info) = parse(key, url, p) else {
                    ok = false;
                    continue;
                };
                if info.redis_settings().db() != 0 {
                    p.add(format!(
                        "{key}: Redis Cluster has only database 0: drop the /db from the URL"
                    ));
                    ok = false;
                }
                match &first {
                    Some(f) if !same_credentials(f, &info) => {
                        p.add(format!("{key}: every node URL must carry the same username and password (the client logs in to every node with them)"));
                        ok = false;
                    }
                    Some(_) => {}
                    None => first = Some(info),
                }
            }
            ok.then(|| RedisTarget::Cluster {
                nodes: seeds.into_iter().map(|(_, u)| u.clone()).collect(),
            })
        }
        "sentinel" => {
            only("nodes", r.nodes.is_some(), "cluster", p);
            let mut ok = true;
            match r.sentinels.as_deref() {
                None => {
                    p.add("redis.sentinels: required with mode = \"sentinel\": sentinel URLs, e.g. [\"redis://10.0.0.1:26379\"]");
                    ok = false;
                }
                Some([]) => {
                    p.add("redis.sentinels: must list at least one sentinel");
                    ok = false;
                }
                Some(list) => {
                    for (i, url) in list.iter().enumerate() {
                        let key = format!("redis.sentinels[{i}]");
                        match parse(&key, url, p) {
                            Some(info) if info.redis_settings().db() != 0 => {
                                p.add(format!("{key}: a sentinel has no databases: give the master's db in url (redis://[user:password@]<master_name>/<db>)"));
                                ok = false;
                            }
                            Some(_) => {}
                            None => ok = false,
                        }
                    }
                }
            }
            let master_name = match r.master_name.as_deref().map(str::trim) {
                None => {
                    p.add("redis.master_name: required with mode = \"sentinel\": the name the sentinels monitor the master under");
                    None
                }
                Some("") => {
                    p.add("redis.master_name: must not be empty");
                    None
                }
                Some(name) => Some(name.to_string()),
            };
            if let Some(url) = &r.url {
                match parse("redis.url", url, p) {
                    Some(info) => {
                        let host_is_name = match (info.addr(), &master_name) {
                            (ConnectionAddr::Tcp(host, _), Some(name)) => host == name,
                            // Without a valid master_name there is nothing to compare.
                            (_, None) => true,
                            _ => false,
                        };
                        if !host_is_name {
                            p.add("redis.url: with mode = \"sentinel\" the sentinels say where the master is; url only carries the master's password and db: write redis://[user:password@]<master_name>[/db]");
                            ok = false;
                        }
                    }
                    None => ok = false,
                }
            }
            let master_name = master_name?;
            ok.then(|| RedisTarget::Sentinel {
                sentinels: r.sentinels.clone().unwrap_or_default(),
                master_name,
                master_url: r.url.clone(),
            })
        }
        _ => {
            p.add("redis.mode: must be \"single\", \"sentinel\" or \"cluster\"");
            None
        }
    }
}

/// A `redis://` URL, parsed as the client will (without ever quoting it).
fn parse(key: &str, url: &str, p: &mut Problems) -> Option<ConnectionInfo> {
    if !url.starts_with("redis://") {
        // rediss:// would need the redis crate's TLS feature, not built in.
        p.add(format!(
            "{key}: must start with redis:// (TLS to Redis is not supported yet)"
        ));
        return None;
    }
    match url.into_connection_info() {
        Ok(info) => Some(info),
        Err(_) => {
            p.add(format!(
                "{key}: not a valid Redis URL (redis://[user:password@]host[:port][/db])"
            ));
            None
        }
    }
}

fn same_credentials(a: &ConnectionInfo, b: &ConnectionInfo) -> bool {
    let (a, b) = (a.redis_settings(), b.redis_settings());
    a.username() == b.username() && a.password() == b.password()
}

#[cfg(test)]
mod tests {
    use super::super::super::parse as parse_config;
    use std::path::Path;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:1\"\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[[tenants]]\nid = \"acme\"\napi_key = \"k\"\napi_secret = \"0123456789abcdef0123456789abcdef\"\nallow_anonymous = true\n";
    /// A password that must never be printed.
    const PW: &str = "s3cr3t-pw";

    fn errors(redis: &str) -> Vec<String> {
        match parse_config(&format!("{BASE}[redis]\n{redis}\n"), Path::new(".")) {
            Ok(_) => panic!("accepted:\n{redis}"),
            Err(e) => {
                for line in &e.0 {
                    assert!(
                        !line.contains(PW)
                            && !line.contains("redis://:")
                            && !line.contains("127.0.0.1:7"),
                        "a URL or password was printed: {line}"
                    );
                }
                e.0
            }
        }
    }

    fn target(redis: &str) -> crate::redis_conn::RedisTarget {
        match parse_config(&format!("{BASE}[redis]\n{redis}\n"), Path::new(".")) {
            Ok(s) => s.redis.expect("[redis]").target,
            Err(e) => panic!("refused:\n{redis}\n{e}"),
        }
    }

    fn has(errs: &[String], want: &str) {
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "no error containing {want:?} in {errs:#?}"
        );
    }

    #[test]
    fn modes_that_are_accepted() {
        use crate::redis_conn::RedisTarget::*;
        assert!(matches!(
            target("url = \"redis://127.0.0.1:6379\""),
            Single { .. }
        ));
        assert!(matches!(
            target("mode = \"single\"\nurl = \"redis://:pw@127.0.0.1:6379/3\""),
            Single { .. }
        ));
        match target(
            "mode = \"cluster\"\nnodes = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]",
        ) {
            Cluster { nodes } => assert_eq!(nodes.len(), 2),
            _ => panic!("not cluster"),
        }
        match target("mode = \"cluster\"\nurl = \"redis://127.0.0.1:7000\"") {
            Cluster { nodes } => assert_eq!(nodes, vec!["redis://127.0.0.1:7000".to_string()]),
            _ => panic!("not cluster"),
        }
        match target("mode = \"sentinel\"\nsentinels = [\"redis://127.0.0.1:26379\"]\nmaster_name = \"mymaster\"") {
            Sentinel { sentinels, master_name, master_url } => {
                assert_eq!(sentinels.len(), 1);
                assert_eq!(master_name, "mymaster");
                assert_eq!(master_url, None);
            }
            _ => panic!("not sentinel"),
        }
        match target(&format!("mode = \"sentinel\"\nsentinels = [\"redis://127.0.0.1:26379\"]\nmaster_name = \"mymaster\"\nurl = \"redis://:{PW}@mymaster/2\"")) {
            Sentinel { master_url, .. } => assert!(master_url.is_some()),
            _ => panic!("not sentinel"),
        }
    }

    #[test]
    fn every_problem_is_reported_once_per_line_without_urls() {
        let errs = errors("mode = \"sideways\"");
        has(
            &errs,
            "redis.mode: must be \"single\", \"sentinel\" or \"cluster\"",
        );

        let errs = errors("timeout = \"1s\"");
        has(&errs, "redis.url: required");

        // Keys of another mode, all reported together with the bad URL.
        let errs = errors(&format!("url = \"rediss://:{PW}@127.0.0.1:7001\"\nnodes = [\"redis://127.0.0.1:7000\"]\nsentinels = [\"redis://127.0.0.1:7002\"]\nmaster_name = \"m\"\non_redis_error = \"panic\"\ntimeout = \"0s\""));
        has(&errs, "redis.nodes: only used with mode = \"cluster\"");
        has(&errs, "redis.sentinels: only used with mode = \"sentinel\"");
        has(
            &errs,
            "redis.master_name: only used with mode = \"sentinel\"",
        );
        has(&errs, "redis.url: must start with redis://");
        has(&errs, "redis.on_redis_error: must be \"local\" or \"deny\"");
        has(&errs, "redis.timeout: must be more than 0s");
        assert_eq!(errs.len(), 6, "{errs:#?}");

        let errs = errors(&format!("url = \"redis://:{PW}@127.0.0.1:7000/notadb\""));
        has(&errs, "redis.url: not a valid Redis URL");
    }

    #[test]
    fn cluster_problems() {
        let errs = errors("mode = \"cluster\"");
        has(&errs, "redis.nodes: required with mode = \"cluster\"");
        let errs = errors("mode = \"cluster\"\nnodes = []");
        has(&errs, "redis.nodes: must list at least one seed node");
        let errs = errors(
            "mode = \"cluster\"\nurl = \"redis://127.0.0.1:7000\"\nnodes = [\"redis://127.0.0.1:7001\"]",
        );
        has(
            &errs,
            "redis.url: with mode = \"cluster\" list the seed nodes in nodes, or give url alone",
        );
        let errs = errors(&format!(
            "mode = \"cluster\"\nnodes = [\"redis://:{PW}@127.0.0.1:7000\", \"redis://127.0.0.1:7001/2\", \"redis://:other@127.0.0.1:7002\", \"http://127.0.0.1:7003\", \"redis://:{PW}@127.0.0.1:7004\"]\nsentinels = [\"redis://127.0.0.1:7005\"]\nmaster_name = \"m\""
        ));
        has(&errs, "redis.nodes[1]: Redis Cluster has only database 0");
        has(
            &errs,
            "redis.nodes[1]: every node URL must carry the same username and password",
        );
        has(
            &errs,
            "redis.nodes[2]: every node URL must carry the same username and password",
        );
        has(&errs, "redis.nodes[3]: must start with redis://");
        has(&errs, "redis.sentinels: only used with mode = \"sentinel\"");
        has(
            &errs,
            "redis.master_name: only used with mode = \"sentinel\"",
        );
        assert_eq!(errs.len(), 6, "nodes[4] is fine: {errs:#?}");
    }

    #[test]
    fn sentinel_problems() {
        let errs = errors("mode = \"sentinel\"");
        has(&errs, "redis.sentinels: required with mode = \"sentinel\"");
        has(
            &errs,
            "redis.master_name: required with mode = \"sentinel\"",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let errs = errors("mode = \"sentinel\"\nsentinels = []\nmaster_name = \" \"\nnodes = [\"redis://127.0.0.1:7000\"]");
        has(&errs, "redis.sentinels: must list at least one sentinel");
        has(&errs, "redis.master_name: must not be empty");
        has(&errs, "redis.nodes: only used with mode = \"cluster\"");
        let errs = errors(&format!(
            "mode = \"sentinel\"\nsentinels = [\"redis://127.0.0.1:7000/1\", \"tcp://127.0.0.1:7001\"]\nmaster_name = \"mymaster\"\nurl = \"redis://:{PW}@127.0.0.1:7002/2\""
        ));
        has(&errs, "redis.sentinels[0]: a sentinel has no databases");
        has(&errs, "redis.sentinels[1]: must start with redis://");
        has(
            &errs,
            "redis.url: with mode = \"sentinel\" the sentinels say where the master is",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn tenant_ids_with_braces_would_break_hash_tags() {
        let text = BASE.replace("id = \"acme\"", "id = \"a{b}\"");
        let errs = match parse_config(
            &format!("{text}[redis]\nurl = \"redis://127.0.0.1:6379\"\n"),
            Path::new("."),
        ) {
            Ok(_) => panic!("accepted a tenant id with braces"),
            Err(e) => e.0,
        };
        has(
            &errs,
            "tenants[a{b}].id: must not contain { or } with [redis]",
        );
        // Without [redis] the id is never a key.
        assert!(parse_config(&text, Path::new(".")).is_ok());
    }
}
