#!/usr/bin/env bash
# Soak run (issue 9): the release gateway (1 thread) in front of the tests'
# fake Stream, with a per-user rate limit, websocket caps, a leased Redis quota
# and a file audit log, takes mixed REST and websocket traffic from
# benches/soak.py for SOAK_SECONDS (default 1800); redis-server is restarted
# half-way. Reports requests and errors by kind, and the gateway's RSS, sampled
# every 10 s: after warm-up, over the run, and at the end. Loopback only; stops
# everything it started, by PID.
#   cargo build --release --bin stream-gateway --example fake-stream
#   SOAK_SECONDS=1800 benches/soak.sh
# Exit status: 0 when there was no unexpected error and memory stayed flat, 1
# otherwise. "Flat": the median RSS of the last third of the loaded run is less
# than 5 % above the median of the first third after warm-up. Medians of
# windows, not two single samples: a single sample catches allocator
# churn (the RSS series of a 12-minute run moved 44.8-50.3 MiB minute to
# minute and jumped to 57.8 MiB in the last second while every client
# closed at once). The single-sample numbers and the least-squares slope
# over the run are printed too. Needs redis-server and python3-websockets.
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
# RSS every 10 s while the load runs, to tell a plateau from a creep.
( while kill -0 $GW 2>/dev/null && kill -0 $LOAD 2>/dev/null; do echo "$(( $(date +%s) - START )) $(rss_kib $GW)"; sleep 10; done ) >"$WORK/rss.log" 2>/dev/null &
SAMPLER=$!; PIDS+=($SAMPLER)
sleep "$WARMUP"; RSS_WARM=$(rss_kib $GW)
echo "soak: RSS after warm-up ${RSS_WARM} KiB" >&2
sleep $(( SECONDS_TOTAL / 2 - WARMUP > 0 ? SECONDS_TOTAL / 2 - WARMUP : 1 ))
echo "soak: restarting redis-server at +$(( $(date +%s) - START ))s" >&2
kill "$REDIS"; wait "$REDIS" 2>/dev/null || true
sleep 3
start_redis
wait "$LOAD"
RSS_END=$(rss_kib $GW)
wait "$SAMPLER" 2>/dev/null || true
sleep 5; RSS_SETTLED=$(rss_kib $GW)
echo "soak: RSS every minute (s=KiB):" $(awk 'NR % 6 == 1 {print $1 "s=" $2}' "$WORK/rss.log") >&2
kill -0 $GW 2>/dev/null || { echo "soak: the gateway died" >&2; exit 1; }
"$PY" - "$WORK/report.json" "$RSS_WARM" "$RSS_END" "$RSS_SETTLED" "$WORK/rss.log" "$WARMUP" <<'EOP'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
warm, end, settled = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
warmup = int(sys.argv[6])
series = [tuple(map(int, l.split())) for l in open(sys.argv[5]) if l.strip()]
run = [(t, kib) for t, kib in series if t >= warmup]
print(json.dumps(r, indent=1))
print(f"requests+sockets: {r['requests']}, unexpected errors: {r['unexpected']}")
pct = lambda a, b: (b - a) * 100.0 / a
print(f"gateway RSS, single samples: {warm} KiB after warm-up -> {end} KiB as the load ended "
      f"({pct(warm, end):+.1f} %) -> {settled} KiB 5 s later ({pct(warm, settled):+.1f} %)")
if len(run) < 6:
    print(f"too few RSS samples after warm-up ({len(run)}): run longer"); sys.exit(1)
third = len(run) // 3
first = statistics.median(k for _, k in run[:third])
last = statistics.median(k for _, k in run[-third:])
ts = [t for t, _ in run]; ks = [k for _, k in run]
mt, mk = statistics.fmean(ts), statistics.fmean(ks)
slope = sum((t - mt) * (k - mk) for t, k in run) / sum((t - mt) ** 2 for t in ts)
span = ts[-1] - ts[0]
print(f"gateway RSS over the run ({len(run)} samples after warm-up, every 10 s): "
      f"min {min(ks)} max {max(ks)} KiB; median of the first third {first:.0f} KiB, "
      f"of the last third {last:.0f} KiB ({pct(first, last):+.1f} %); least-squares slope "
      f"{slope * 60:+.1f} KiB/min ({slope * span * 100.0 / first:+.1f} % over {span} s)")
flat = pct(first, last) < 5
print("memory flat (last-third median < 5 % above first-third median):", "yes" if flat else "NO")
sys.exit(0 if r["unexpected"] == 0 and flat else 1)
EOP
