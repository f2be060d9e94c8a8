//! The `deploy/` directory: every YAML and JSON file parses; the Kubernetes
//! manifests are exactly the expected kinds and agree with the gateway.toml
//! in their ConfigMap (ports, probes, shutdown timing, secrets); every gateway
//! config under `deploy/` passes `stream-gateway check`; the Dockerfile, the
//! compose file and the systemd units run the gateway with `--config` and
//! keep pingora's signal meanings; the Grafana dashboard uses exactly the
//! metric names the gateway exports.
//!
//! Nothing here needs docker, kubectl or systemd: only files and the built
//! binary. Missing files are failures, never skips.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value as Yaml;

use common::run_cli;

/// The metrics the gateway exports (issue 6), with the labels the dashboard
/// may group by.
const METRICS: &[&str] = &[
    "stream_gateway_requests_total",
    "stream_gateway_request_duration_seconds",
    "stream_gateway_upstream_duration_seconds",
    "stream_gateway_websockets_open",
    "stream_gateway_rate_limited_total",
    "stream_gateway_quota_exceeded_total",
    "stream_gateway_token_mints_total",
    "stream_gateway_token_cache_hits_total",
    "stream_gateway_session_failures_total",
    "stream_gateway_jwks_refreshes_total",
    "stream_gateway_redis_errors_total",
    "stream_gateway_audit_records_total",
    "stream_gateway_audit_dropped_total",
    "stream_gateway_config_reloads_total",
];
/// Of those, the histograms (queried through `_bucket`, `_sum`, `_count`).
const HISTOGRAMS: &[&str] = &[
    "stream_gateway_request_duration_seconds",
    "stream_gateway_upstream_duration_seconds",
];
/// Values of the `decision` label.
const DECISIONS: &[&str] = &[
    "forwarded",
    "refused_server_route",
    "refused_unknown_route",
    "unauthenticated",
    "rate_limited",
    "quota_exceeded",
    "bad_request",
    "upstream_error",
];

/// Where the images and units expect the config.
const CONFIG_PATH: &str = "/etc/stream-gateway/gateway.toml";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose name ends with one of `suffixes`, sorted.
fn files_ending(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every document of a (multi-document) YAML file; empty documents dropped.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", rel(path)))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `v[a][b]...` as a string, panicking with the path when absent.
fn s<'a>(v: &'a Yaml, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string: {v:?}", path.join(".")))
}

fn get<'a>(v: &'a Yaml, path: &[&str]) -> &'a Yaml {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("missing {} in {v:?}", path.join(".")));
    }
    cur
}

fn seq<'a>(v: &'a Yaml, path: &[&str]) -> &'a Vec<Yaml> {
    get(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

fn int(v: &Yaml, path: &[&str]) -> u64 {
    get(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a number", path.join(".")))
}

/// All Kubernetes documents under deploy/k8s, with their file.
fn k8s_docs() -> Vec<(PathBuf, Yaml)> {
    let files = files_ending(&deploy_dir().join("k8s"), &[".yaml", ".yml"]);
    assert!(!files.is_empty(), "no manifests in deploy/k8s");
    files
        .into_iter()
        .flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn k8s_kind(docs: &[(PathBuf, Yaml)], kind: &str) -> Yaml {
    let found: Vec<&Yaml> = docs
        .iter()
        .filter(|(_, d)| d.get("kind").and_then(Yaml::as_str) == Some(kind))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0].clone()
}

/// The gateway.toml embedded in the ConfigMap.
fn configmap_toml(docs: &[(PathBuf, Yaml)]) -> String {
    s(&k8s_kind(docs, "ConfigMap"), &["data", "gateway.toml"]).to_string()
}

fn parse_toml(text: &str, what: &str) -> toml::Table {
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{what}: not TOML: {e}"))
}

fn toml_str<'a>(t: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    t.get(section)?.get(key)?.as_str()
}

/// The port of an `IP:port` value of `[server]`.
fn server_port(t: &toml::Table, key: &str, what: &str) -> u64 {
    let addr = toml_str(t, "server", key).unwrap_or_else(|| panic!("{what}: no server.{key}"));
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{what}: server.{key} {addr:?}: {e}"))
        .port()
        .into()
}

/// `grace_period + graceful_shutdown_timeout`: how long pingora takes to
/// stop after SIGTERM. Both must be set: pingora's defaults (300 s + 5 s)
/// fit no orchestrator's stop timeout.
fn shutdown_time(t: &toml::Table, what: &str) -> Duration {
    let d = |key: &str| {
        let v = toml_str(t, "server", key).unwrap_or_else(|| {
            panic!("{what}: server.{key} must be set (pingora's default is minutes)")
        });
        humantime::parse_duration(v).unwrap_or_else(|e| panic!("{what}: server.{key}: {e}"))
    };
    d("grace_period") + d("graceful_shutdown_timeout")
}

/// The NAME of every `"env:NAME"` secret reference in a config.
fn env_refs(toml_text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for part in toml_text.split("\"env:").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!name.is_empty(), "empty env: reference");
        names.insert(name);
    }
    // Only active lines count: drop names that appear only in comments.
    names
        .into_iter()
        .filter(|n| {
            toml_text.lines().any(|l| {
                let code = l.split('#').next().unwrap_or("");
                code.contains(&format!("\"env:{n}\""))
            })
        })
        .collect()
}

/// Runs `stream-gateway check` on `text` with a distinct dummy value for
/// every variable it references.
fn assert_check_passes(text: &str, what: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let names = env_refs(text);
    let values: Vec<(String, String)> = names
        .iter()
        .map(|n| (n.clone(), format!("dummy-value-for-{n}")))
        .collect();
    let env: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let out = run_cli(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("config ok"),
        "{what}: `stream-gateway check` failed (env set: {names:?})\nstdout: {stdout}\nstderr: {stderr}"
    );
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = files_ending(&deploy_dir(), &[".yaml", ".yml"]);
    let names: BTreeSet<String> = files.iter().map(|f| rel(f)).collect();
    for expected in [
        "docker-compose.yml",
        "k8s/configmap.yaml",
        "k8s/deployment.yaml",
        "k8s/hpa.yaml",
        "k8s/pdb.yaml",
        "k8s/secret.yaml",
        "k8s/service.yaml",
    ] {
        assert!(names.contains(expected), "deploy/{expected} is missing");
    }
    for f in &files {
        assert!(!yaml_docs(f).is_empty(), "{}: no YAML document", rel(f));
    }
}

#[test]
fn every_json_file_under_deploy_parses() {
    let files = files_ending(&deploy_dir(), &[".json"]);
    assert!(
        files
            .iter()
            .any(|f| rel(f) == "grafana/stream-gateway.json"),
        "deploy/grafana/stream-gateway.json is missing"
    );
    for f in &files {
        serde_json::from_str::<serde_json::Value>(&read(f))
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", rel(f)));
    }
}

#[test]
fn kubernetes_manifests_are_exactly_the_expected_kinds() {
    let docs = k8s_docs();
    let mut kinds = Vec::new();
    for (file, d) in &docs {
        let api = d.get("apiVersion").and_then(Yaml::as_str);
        let kind = d.get("kind").and_then(Yaml::as_str);
        let name = d
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Yaml::as_str);
        match (api, kind, name) {
            (Some(a), Some(k), Some(n)) if !a.is_empty() && !k.is_empty() && !n.is_empty() => {
                kinds.push(format!("{a} {k}"))
            }
            _ => panic!(
                "{}: a document without apiVersion, kind or metadata.name",
                rel(file)
            ),
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "apps/v1 Deployment",
            "autoscaling/v2 HorizontalPodAutoscaler",
            "policy/v1 PodDisruptionBudget",
            "v1 ConfigMap",
            "v1 Secret",
            "v1 Service",
        ]
    );
}

/// A container port given by name or number, as a number.
fn resolve_port(port: &Yaml, named: &BTreeMap<String, u64>) -> u64 {
    match port {
        Yaml::Number(n) => n.as_u64().expect("port number"),
        Yaml::String(name) => *named
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name:?}")),
        other => panic!("bad port {other:?}"),
    }
}

#[test]
fn kubernetes_manifests_agree_with_the_configmap_config() {
    let docs = k8s_docs();
    let toml_text = configmap_toml(&docs);
    let cfg = parse_toml(&toml_text, "ConfigMap gateway.toml");
    let listen = server_port(&cfg, "listen", "ConfigMap");
    let admin = server_port(&cfg, "admin_listen", "ConfigMap");
    for key in ["listen", "admin_listen"] {
        assert!(
            toml_str(&cfg, "server", key).is_some_and(|a| a.starts_with("0.0.0.0:")),
            "server.{key} must listen on all interfaces in a pod"
        );
    }

    let deploy = k8s_kind(&docs, "Deployment");
    let configmap = k8s_kind(&docs, "ConfigMap");
    let secret = k8s_kind(&docs, "Secret");
    let service = k8s_kind(&docs, "Service");
    let hpa = k8s_kind(&docs, "HorizontalPodAutoscaler");
    let pdb = k8s_kind(&docs, "PodDisruptionBudget");
    let deploy_name = s(&deploy, &["metadata", "name"]);

    assert!(int(&deploy, &["spec", "replicas"]) >= 2, "replicas < 2");
    let pod_labels = get(&deploy, &["spec", "template", "metadata", "labels"]);
    let selector = get(&deploy, &["spec", "selector", "matchLabels"]);
    assert_eq!(selector, pod_labels, "Deployment selector != pod labels");
    assert_eq!(get(&service, &["spec", "selector"]), selector);
    assert_eq!(get(&pdb, &["spec", "selector", "matchLabels"]), selector);
    assert!(
        get(&pdb, &["spec"]).get("minAvailable").is_some()
            || get(&pdb, &["spec"]).get("maxUnavailable").is_some()
    );

    let pod = get(&deploy, &["spec", "template", "spec"]);
    let containers = seq(pod, &["containers"]);
    assert_eq!(containers.len(), 1, "one container");
    let c = &containers[0];

    // Ports: the listener and the admin port, by name.
    let mut named = BTreeMap::new();
    for p in seq(c, &["ports"]) {
        named.insert(s(p, &["name"]).to_string(), int(p, &["containerPort"]));
    }
    let numbers: BTreeSet<u64> = named.values().copied().collect();
    assert_eq!(numbers, BTreeSet::from([listen, admin]), "containerPorts");
    let svc_ports = seq(&service, &["spec", "ports"]);
    assert_eq!(
        svc_ports.len(),
        1,
        "the Service exposes the client listener only"
    );
    assert_eq!(
        resolve_port(get(&svc_ports[0], &["targetPort"]), &named),
        listen
    );

    // Probes on the admin port.
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(s(c, &[probe, "httpGet", "path"]), path, "{probe}");
        assert_eq!(
            resolve_port(get(c, &[probe, "httpGet", "port"]), &named),
            admin,
            "{probe} port"
        );
    }
    let ann = get(pod_labels_parent(&deploy), &["annotations"]);
    assert_eq!(s(ann, &["prometheus.io/scrape"]), "true");
    assert_eq!(s(ann, &["prometheus.io/port"]), admin.to_string());
    assert_eq!(s(ann, &["prometheus.io/path"]), "/metrics");

    // The config: the ConfigMap mounted where --config points.
    let args: Vec<&str> = seq(c, &["args"])
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    assert_eq!(args, ["--config", CONFIG_PATH]);
    let config_dir = Path::new(CONFIG_PATH).parent().expect("dir");
    let mount = seq(c, &["volumeMounts"])
        .iter()
        .find(|m| Path::new(s(m, &["mountPath"])) == config_dir)
        .expect("a volume mounted at the config's folder");
    let volume = seq(pod, &["volumes"])
        .iter()
        .find(|v| s(v, &["name"]) == s(mount, &["name"]))
        .expect("the config volume");
    assert_eq!(
        s(volume, &["configMap", "name"]),
        s(&configmap, &["metadata", "name"])
    );

    // Secrets: every env: reference comes from the Secret, and the Secret
    // holds placeholders only.
    let env_from: Vec<&str> = seq(c, &["envFrom"])
        .iter()
        .map(|e| s(e, &["secretRef", "name"]))
        .collect();
    assert_eq!(env_from, [s(&secret, &["metadata", "name"])]);
    let data = get(&secret, &["stringData"])
        .as_mapping()
        .expect("stringData");
    let keys: BTreeSet<String> = data
        .keys()
        .map(|k| k.as_str().expect("key").to_string())
        .collect();
    assert_eq!(keys, env_refs(&toml_text), "Secret keys vs env: references");
    for v in data.values() {
        assert!(
            v.as_str().is_some_and(|v| v.contains("PLACEHOLDER")),
            "Secret values must be marked placeholders"
        );
    }

    // Hardening.
    assert_eq!(
        get(pod, &["securityContext", "runAsNonRoot"]),
        &Yaml::Bool(true)
    );
    assert!(int(pod, &["securityContext", "runAsUser"]) > 0);
    let sc = get(c, &["securityContext"]);
    assert_eq!(get(sc, &["readOnlyRootFilesystem"]), &Yaml::Bool(true));
    assert_eq!(get(sc, &["allowPrivilegeEscalation"]), &Yaml::Bool(false));
    assert_eq!(get(sc, &["runAsNonRoot"]), &Yaml::Bool(true));
    let drop: Vec<&str> = seq(sc, &["capabilities", "drop"])
        .iter()
        .map(|d| d.as_str().expect("capability"))
        .collect();
    assert_eq!(drop, ["ALL"]);
    assert!(
        get(c, &["resources", "requests"]).get("cpu").is_some(),
        "the CPU HPA needs a CPU request"
    );
    assert!(get(c, &["resources", "limits"]).get("memory").is_some());

    // Shutdown: preStop sleep, then SIGTERM and pingora's grace period, all
    // within terminationGracePeriodSeconds.
    let pre_stop = Duration::from_secs(int(c, &["lifecycle", "preStop", "sleep", "seconds"]));
    assert!(
        pre_stop >= Duration::from_secs(5),
        "preStop sleep too short to drain endpoints"
    );
    let budget = Duration::from_secs(int(pod, &["terminationGracePeriodSeconds"]));
    let needed = pre_stop + shutdown_time(&cfg, "ConfigMap");
    assert!(
        budget > needed,
        "terminationGracePeriodSeconds ({budget:?}) must exceed preStop + grace_period + graceful_shutdown_timeout ({needed:?})"
    );

    // Autoscaling.
    assert_eq!(s(&hpa, &["spec", "scaleTargetRef", "kind"]), "Deployment");
    assert_eq!(s(&hpa, &["spec", "scaleTargetRef", "name"]), deploy_name);
    assert!(int(&hpa, &["spec", "minReplicas"]) >= 2);
    assert!(int(&hpa, &["spec", "maxReplicas"]) >= int(&hpa, &["spec", "minReplicas"]));
    let metrics = seq(&hpa, &["spec", "metrics"]);
    assert!(metrics
        .iter()
        .any(|m| s(m, &["type"]) == "Resource" && s(m, &["resource", "name"]) == "cpu"));
}

/// `spec.template.metadata` of a Deployment.
fn pod_labels_parent(deploy: &Yaml) -> &Yaml {
    get(deploy, &["spec", "template", "metadata"])
}

#[test]
fn compose_file_agrees_with_its_gateway_config() {
    let dir = deploy_dir();
    let docs = yaml_docs(&dir.join("docker-compose.yml"));
    assert_eq!(docs.len(), 1);
    let compose = &docs[0];
    let services = get(compose, &["services"]);
    let gw = get(services, &["gateway"]);
    assert!(services.get("redis").is_some(), "a redis service");
    assert_eq!(s(gw, &["build", "dockerfile"]), "deploy/Dockerfile");
    assert_eq!(
        dir.join(s(gw, &["build", "context"]))
            .canonicalize()
            .expect("context"),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .canonicalize()
            .expect("repo"),
        "the build context is the repository root"
    );

    // The mounted config is the one under deploy/compose.
    let mount = seq(gw, &["volumes"])
        .iter()
        .map(|v| v.as_str().expect("short volume syntax"))
        .find(|v| v.split(':').nth(1) == Some(CONFIG_PATH))
        .expect("a volume mounted at the config path");
    let source = dir.join(mount.split(':').next().expect("source"));
    let text = read(&source);
    let cfg = parse_toml(&text, "compose gateway.toml");

    // Published ports reach the listener and the admin port.
    let published: BTreeSet<u64> = seq(gw, &["ports"])
        .iter()
        .map(|p| {
            let p = p.as_str().expect("port string");
            p.rsplit(':')
                .next()
                .and_then(|c| c.trim_end_matches("/tcp").parse().ok())
                .unwrap_or_else(|| panic!("bad port mapping {p:?}"))
        })
        .collect();
    for key in ["listen", "admin_listen"] {
        let port = server_port(&cfg, key, "compose gateway.toml");
        assert!(
            published.contains(&port),
            "server.{key} port {port} not published"
        );
        assert!(toml_str(&cfg, "server", key).is_some_and(|a| a.starts_with("0.0.0.0:")));
    }

    // Every env: secret is passed in.
    let env: BTreeSet<String> = get(gw, &["environment"])
        .as_mapping()
        .expect("environment as a map")
        .keys()
        .map(|k| k.as_str().expect("name").to_string())
        .collect();
    for name in env_refs(&text) {
        assert!(env.contains(&name), "{name} is referenced but not passed");
    }

    // Redis is the compose service.
    let url = toml_str(&cfg, "redis", "url").expect("[redis] url");
    let host = url
        .trim_start_matches("redis://")
        .split(':')
        .next()
        .expect("host");
    assert!(
        services.get(host).is_some(),
        "redis url host {host:?} is no service"
    );

    // docker stop waits longer than the gateway's graceful shutdown.
    assert_eq!(s(gw, &["stop_signal"]), "SIGTERM");
    let stop = humantime::parse_duration(s(gw, &["stop_grace_period"])).expect("duration");
    assert!(stop > shutdown_time(&cfg, "compose gateway.toml"));
}

#[test]
fn every_gateway_config_under_deploy_passes_check() {
    let mut configs: Vec<(String, String)> = files_ending(&deploy_dir(), &[".toml"])
        .into_iter()
        .map(|f| (rel(&f), read(&f)))
        .collect();
    configs.push((
        "k8s/configmap.yaml (gateway.toml)".into(),
        configmap_toml(&k8s_docs()),
    ));
    let names: Vec<&str> = configs.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["compose/gateway.toml", "systemd/gateway.toml"] {
        assert!(names.contains(&expected), "deploy/{expected} is missing");
    }
    for (name, text) in &configs {
        assert_check_passes(text, name);
    }
}

/// Instruction lines of a Dockerfile, continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (op, rest) = cur.split_once(' ').unwrap_or((cur.as_str(), ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_builds_locked_and_runs_the_gateway_unprivileged() {
    let dir = deploy_dir();
    let ins = dockerfile_instructions(&read(&dir.join("Dockerfile")));
    let all = |op: &str| -> Vec<&str> {
        ins.iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    assert!(all("FROM").len() >= 2, "multi-stage build");
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked --bin stream-gateway")),
        "the release build is --locked"
    );
    assert!(
        all("RUN").iter().any(|r| r.contains("cmake")),
        "cmake for zlib-ng"
    );
    assert_eq!(all("ENTRYPOINT"), [r#"["stream-gateway"]"#]);
    assert_eq!(
        all("CMD"),
        [format!(r#"["--config", "{CONFIG_PATH}"]"#).as_str()]
    );
    let user = *all("USER").last().expect("USER");
    let uid: u64 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("numeric USER");
    assert!(uid > 0, "non-root USER");
    let deploy = k8s_kind(&k8s_docs(), "Deployment");
    assert_eq!(
        int(
            &deploy,
            &["spec", "template", "spec", "securityContext", "runAsUser"]
        ),
        uid,
        "Kubernetes runAsUser is the image's USER"
    );
    let exposed: BTreeSet<u64> = all("EXPOSE")
        .iter()
        .flat_map(|r| r.split_whitespace())
        .map(|p| p.parse().expect("port"))
        .collect();
    let cfg = parse_toml(
        &read(&dir.join("compose/gateway.toml")),
        "compose gateway.toml",
    );
    for key in ["listen", "admin_listen"] {
        assert!(exposed.contains(&server_port(&cfg, key, "compose gateway.toml")));
    }
    assert_eq!(all("STOPSIGNAL"), ["SIGTERM"]);

    // The build context filter keeps target/ (and everything else not
    // needed) out: an allowlist starting with "*".
    let ignore = read(&dir.join("Dockerfile.dockerignore"));
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "excludes everything first");
    assert!(!rules.iter().any(|r| r.starts_with("!target")));
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/"] {
        assert!(
            rules.contains(&needed),
            "{needed} missing from the allowlist"
        );
    }
}

/// `[Section]` → key → values (a key may repeat), active lines only.
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {t:?}"));
        assert!(!section.is_empty(), "{t:?} before any section");
        unit.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    unit
}

fn one<'a>(unit: &'a Unit, key: &str) -> &'a str {
    let values = unit
        .get("Service")
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("[Service] {key}= missing"));
    assert_eq!(values.len(), 1, "{key}= set more than once");
    &values[0]
}

/// The sandbox part of a unit (between the `# --- sandbox` markers).
fn sandbox(text: &str) -> Vec<String> {
    let start = text.find("# --- sandbox").expect("sandbox marker");
    let end = text
        .find("# --- end of sandbox")
        .expect("end of sandbox marker");
    text[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn systemd_units_run_the_gateway_with_config_and_keep_pingoras_signals() {
    let dir = deploy_dir().join("systemd");
    let cfg = parse_toml(&read(&dir.join("gateway.toml")), "systemd gateway.toml");
    let single_text = read(&dir.join("stream-gateway.service"));
    let template_text = read(&dir.join("stream-gateway@.service"));
    let single = parse_unit(&single_text);
    let template = parse_unit(&template_text);
    let base = format!("/usr/local/bin/stream-gateway --config {CONFIG_PATH}");

    assert_eq!(one(&single, "ExecStart"), base);
    assert_eq!(
        one(&template, "ExecStart"),
        format!("{base} $UPGRADE_FLAGS")
    );
    let template_env = &template["Service"]["EnvironmentFile"];
    assert!(
        template_env
            .iter()
            .any(|e| e == "-/run/stream-gateway-%i.env"),
        "the template reads its upgrade flag from /run/stream-gateway-%i.env"
    );

    for (name, unit) in [
        ("stream-gateway.service", &single),
        ("stream-gateway@.service", &template),
    ] {
        // Foreground (systemd tracks the PID), graceful stop.
        assert_eq!(one(unit, "Type"), "exec", "{name}");
        assert!(
            !one(unit, "ExecStart").contains(" -d"),
            "{name}: no daemon mode"
        );
        assert_eq!(
            one(unit, "KillSignal"),
            "SIGTERM",
            "{name}: SIGTERM is the graceful shutdown"
        );
        // Reload is SIGHUP (config reload) or absent until that lands; never
        // the upgrade (SIGQUIT / --upgrade).
        if let Some(reload) = unit["Service"].get("ExecReload") {
            assert_eq!(
                reload,
                &vec!["/bin/kill -HUP $MAINPID".to_string()],
                "{name}"
            );
        }
        for (key, values) in &unit["Service"] {
            for v in values {
                assert!(
                    !v.contains("QUIT") && !v.contains("--upgrade") && !v.split_whitespace().any(|w| w == "-u"),
                    "{name}: {key}={v}: the upgrade is a documented procedure, not part of the unit"
                );
            }
        }
        let stop = humantime::parse_duration(one(unit, "TimeoutStopSec")).expect("TimeoutStopSec");
        assert!(
            stop > shutdown_time(&cfg, "systemd gateway.toml"),
            "{name}: TimeoutStopSec"
        );
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("DynamicUser", "yes"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(one(unit, key), want, "{name}: {key}");
        }
        // pid_file and upgrade_sock live in the RuntimeDirectory (PrivateTmp
        // hides /tmp from the other instance).
        let run_dir = format!("/run/{}/", one(unit, "RuntimeDirectory"));
        for key in ["pid_file", "upgrade_sock"] {
            let path = toml_str(&cfg, "server", key).unwrap_or_else(|| panic!("server.{key}"));
            assert!(
                path.starts_with(&run_dir),
                "server.{key} {path:?} not under {run_dir}"
            );
        }
    }
    assert_eq!(
        sandbox(&single_text),
        sandbox(&template_text),
        "the two sandboxes differ"
    );

    // The documented recipe uses the flag the template reads.
    let readme = read(&deploy_dir().join("README.md"));
    for needle in ["UPGRADE_FLAGS=--upgrade", "SIGQUIT", "stream-gateway@green"] {
        assert!(readme.contains(needle), "deploy/README.md lacks {needle:?}");
    }
}

/// Every `stream_gateway_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("stream_gateway_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    out
}

/// A metric as exported: histogram series lose `_bucket` / `_sum` / `_count`.
fn base_metric(series: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if HISTOGRAMS.contains(&base) {
                return base;
            }
        }
    }
    series
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_uses_exactly_the_exported_metrics() {
    let path = deploy_dir().join("grafana/stream-gateway.json");
    let dash: serde_json::Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a ${{datasource}} Prometheus variable"
    );
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            p["title"]
        );
    }

    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(!exprs.is_empty(), "no PromQL in the dashboard");
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(
            !names.is_empty(),
            "an expression with no gateway metric: {e}"
        );
        for series in names {
            let base = base_metric(&series);
            assert!(
                METRICS.contains(&base),
                "{series} (in {e}) is not a metric the gateway exports"
            );
            if HISTOGRAMS.contains(&base) {
                assert_ne!(
                    series, base,
                    "a histogram is queried by _bucket/_sum/_count: {e}"
                );
            }
            if series.ends_with("_bucket") {
                assert!(e.contains("histogram_quantile("), "{e}");
            }
            used.insert(base.to_string());
        }
        // decision="..." values are ones the gateway uses.
        for part in e.split("decision").skip(1) {
            let value = part
                .trim_start_matches(['=', '!', '~'])
                .strip_prefix('"')
                .and_then(|r| r.split('"').next());
            if let Some(v) = value {
                assert!(DECISIONS.contains(&v), "unknown decision {v:?} in {e}");
            }
        }
    }
    let missing: Vec<&&str> = METRICS.iter().filter(|m| !used.contains(**m)).collect();
    assert!(missing.is_empty(), "metrics with no panel: {missing:?}");
}
