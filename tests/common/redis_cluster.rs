//! Redis as it is run in production, for integration tests: a 3-node Redis
//! Cluster and a Sentinel setup (master, replica, one sentinel), each process
//! a real `redis-server` on 127.0.0.1 and a free port, killed when dropped
//! (by its `Child` handle, see `redis.rs`).
//!
//! `redis-server` and `redis-cli` are required, never optional: without them
//! this panics and names `deploy/setup.sh` (Debian's redis-server and
//! redis-tools packages).

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{raw_command, Options, RedisServer};

const CLI_NOT_FOUND: &str =
    "redis-cli not found: run deploy/setup.sh (installs the redis-tools package)";
/// How long a new cluster or sentinel has to become usable.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// Three masters (no replicas) sharing the 16384 slots.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli
    /// --cluster create ... --cluster-replicas 0 --cluster-yes`, and waits
    /// until every node says `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(Options {
                    cluster: true,
                    ..Options::default()
                })
            })
            .collect();
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => panic!("{CLI_NOT_FOUND}"),
                _ => panic!("could not run redis-cli: {e}"),
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + SETUP_DEADLINE;
        for n in &cluster.nodes {
            loop {
                if n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node 127.0.0.1:{} never said cluster_state:ok",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The seed URLs, as a TOML array: `["redis://127.0.0.1:P1", ...]`.
    pub fn nodes_toml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Sends one command to the node that owns its key (following one
    /// `-MOVED`), and returns the raw RESP reply.
    pub fn command(&self, args: &[&str]) -> String {
        let reply = self.nodes[0].command(args);
        match reply.strip_prefix("-MOVED ") {
            Some(rest) => {
                let port: u16 = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|addr| addr.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("bad MOVED reply: {reply}"));
                raw_command(port, args)
                    .unwrap_or_else(|e| panic!("redis command {args:?} on port {port}: {e}"))
            }
            None => reply,
        }
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn slot(&self, key: &str) -> u16 {
        let reply = self.nodes[0].command(&["CLUSTER", "KEYSLOT", key]);
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("bad KEYSLOT reply: {reply}"))
    }
}

/// The master name the sentinel monitors.
pub const MASTER_NAME: &str = "mymaster";

/// A master, one replica of it and one sentinel (quorum 1) watching it.
pub struct SentinelSetup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl SentinelSetup {
    /// Starts the three and waits until the sentinel knows the master and
    /// the replica (so a `SENTINEL FAILOVER` can pick it) and the replica is
    /// in sync.
    pub fn start() -> SentinelSetup {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(Options {
            replica_of: Some(master.port),
            ..Options::default()
        });
        let conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n",
            master.port
        );
        let sentinel = RedisServer::start_with(Options {
            conf: Some(conf),
            sentinel: true,
            ..Options::default()
        });
        let setup = SentinelSetup {
            master,
            replica,
            sentinel,
        };
        setup.wait_for("the replica in sync", |s| {
            s.replica
                .command(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        // The sentinel finds replicas in the master's INFO, read every 10 s.
        setup.wait_for("the sentinel to know the replica", |s| {
            s.sentinel
                .command(&["SENTINEL", "REPLICAS", MASTER_NAME])
                .contains(&format!("127.0.0.1:{}", s.replica.port))
        });
        setup
    }

    /// `sentinels = ["redis://127.0.0.1:P"]` and `master_name`, for `[redis]`.
    pub fn redis_toml(&self) -> String {
        format!(
            "mode = \"sentinel\"\nsentinels = [\"{}\"]\nmaster_name = \"{MASTER_NAME}\"",
            self.sentinel.url()
        )
    }

    /// The master's port as the sentinel names it now.
    pub fn master_port(&self) -> u16 {
        let reply = self
            .sentinel
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        reply
            .lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad GET-MASTER-ADDR-BY-NAME reply: {reply}"))
    }

    /// `SENTINEL FAILOVER`, then waits until the replica is the master the
    /// sentinel names and the old master has been turned into its replica.
    pub fn failover(&self) {
        let reply = self
            .sentinel
            .command(&["SENTINEL", "FAILOVER", MASTER_NAME]);
        assert!(reply.starts_with("+OK"), "SENTINEL FAILOVER: {reply}");
        self.wait_for("the sentinel to name the replica as master", |s| {
            s.master_port() == s.replica.port
        });
        self.wait_for("the old master to be demoted", |s| {
            s.master.command(&["ROLE"]).contains("slave")
        });
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&SentinelSetup) -> bool) {
        let deadline = Instant::now() + SETUP_DEADLINE;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "sentinel setup: waited {SETUP_DEADLINE:?} for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
