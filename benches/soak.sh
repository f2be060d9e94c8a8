#!/usr/bin/env bash
# Soak run (issue 9): the release gateway (1 thread) in front of the tests'
# fake Stream, with a per-user rate limit, websocket caps, a leased Redis quota
# and a file audit log, takes mixed REST and websocket traffic from
# benches/soak.py for SOAK_SECONDS (default 1800); redis-server is restarted
# half-way. Reports requests and errors by kind, and the gateway's RSS after
# warm-up and at the end. Loopback only; stops everything it started, by PID.
#   cargo build --release --bin stream-gateway --example fake-stream
#   SOAK_SECONDS=1800 benches/soak.sh
# Exit status: 0 when there was no unexpected error and RSS grew < 5 % after
# warm-up; 1 otherwise. Needs redis-server and python3-websockets.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# Debian's python3 (python3-websockets), not a pyenv shim.
PY=/usr/bin/python3
SECONDS_TOTAL=${SOAK_SECONDS:-1800}
# Pause after each request of each of the 16 REST workers, in ms (default 5:
# a steady ~2,000-3,000 requests/s that leaves the box usable; 0: flat out).
PAUSE_MS=${SOAK_PAUSE_MS:-5}
WARMUP=${SOAK_WARMUP:-$(( SECONDS_TOTAL / 10 < 60 ? SECONDS_TOTAL / 10 : 60 ))}
GW_PORT=9120 ADMIN_PORT=9121 UP_PORT=9013 REDIS_PORT=6395
command -v redis-server >/dev/null || { echo "soak: redis-server missing (deploy/setup.sh)" >&2; exit 1; }
"$PY" -c 'import websockets' 2>/dev/null || { echo "soak: needs python3-websockets" >&2; exit 1; }
[[ -x target/release/stream-gateway && -x target/release/examples/fake-stream ]] || {
  echo "soak: build first: cargo build --release --bin stream-gateway --example fake-stream" >&2; exit 1; }
WORK=$(mktemp -d -t soak.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; return 1; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
start_redis() {
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS=$!; PIDS+=($REDIS); wait_port $REDIS_PORT
}
export SOAK_SESSION_SECRET=soak-session-secret
cat >"$WORK/gateway.toml" <<EOT
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
threads = 1
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[upstream]
url = "http://127.0.0.1:$UP_PORT"

[[tenants]]
id = "soak"
api_key = "dev-key"
api_secret = "dev-stream-secret"
stream_token_ttl = "1h"

[tenants.session]
type = "jwt"
algorithms = ["HS256"]
secret = "env:SOAK_SESSION_SECRET"

[tenants.limits]
per_user = { rate = "20/s", burst = 20 }
max_connections_per_user = 3

[tenants.quota]
requests_per_minute = 1000000000
lease = 50

[redis]
url = "redis://127.0.0.1:$REDIS_PORT"

[audit]
sink = "file"
path = "$WORK/audit.jsonl"
max_file_bytes = 50000000
keep_files = 1
EOT
ulimit -n 65536 2>/dev/null || true
target/release/examples/fake-stream 127.0.0.1:$UP_PORT >"$WORK/fake.log" 2>&1 & PIDS+=($!); wait_port $UP_PORT
start_redis
RUST_LOG=warn target/release/stream-gateway --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 & GW=$!; PIDS+=($GW)
wait_port $GW_PORT
echo "soak: ${SECONDS_TOTAL}s, warm-up ${WARMUP}s, work dir $WORK" >&2
"$PY" benches/soak.py $GW_PORT "$SECONDS_TOTAL" "$SOAK_SESSION_SECRET" dev-key 2000 "$PAUSE_MS" >"$WORK/report.json" &
LOAD=$!; PIDS+=($LOAD)
START=$(date +%s)
# RSS every 60 s, to tell a plateau from a creep.
( while kill -0 $GW 2>/dev/null; do echo "$(( $(date +%s) - START ))s $(rss_kib $GW) KiB"; sleep 60; done ) >"$WORK/rss.log" 2>/dev/null &
PIDS+=($!)
sleep "$WARMUP"; RSS_WARM=$(rss_kib $GW)
echo "soak: RSS after warm-up ${RSS_WARM} KiB" >&2
sleep $(( SECONDS_TOTAL / 2 - WARMUP > 0 ? SECONDS_TOTAL / 2 - WARMUP : 1 ))
echo "soak: restarting redis-server at +$(( $(date +%s) - START ))s" >&2
kill "$REDIS"; wait "$REDIS" 2>/dev/null || true
sleep 3
start_redis
wait "$LOAD"
RSS_END=$(rss_kib $GW)
echo "soak: RSS over time (KiB):" $(awk '{print $1 "=" $2}' "$WORK/rss.log") >&2
kill -0 $GW 2>/dev/null || { echo "soak: the gateway died" >&2; exit 1; }
"$PY" - "$WORK/report.json" "$RSS_WARM" "$RSS_END" <<'EOP'
import json, sys
r = json.load(open(sys.argv[1]))
warm, end = int(sys.argv[2]), int(sys.argv[3])
growth = (end - warm) * 100.0 / warm
print(json.dumps(r, indent=1))
print(f"requests+sockets: {r['requests']}, unexpected errors: {r['unexpected']}")
print(f"gateway RSS: {warm} KiB after warm-up -> {end} KiB at the end ({growth:+.1f} %)")
sys.exit(0 if r["unexpected"] == 0 and growth < 5 else 1)
EOP
