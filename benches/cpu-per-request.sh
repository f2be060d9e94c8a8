#!/usr/bin/env bash
# CPU time per request of each proxy (issues 2 and 8), a number that a busy
# box disturbs far less than requests/s: the same wrk load as
# ../shared/bench/run-peers.sh (-t1 -c64, the bench path, a session token in
# Authorization) through nginx (plain proxy), haproxy-jwt-mint (verifies the
# session, mints a Stream token), a pingora proxy with no logic
# (benches/bare_pingora.rs), a tokio proxy with no logic and no pingora
# (benches/bare_tokio.rs: the floor of the gateway's I/O design) and the
# gateway (benches/gateway-bench.toml; with GATEWAY_FULL=1 limits and the
# audit file too), every server 1 worker, in
# front of the harness's nginx upstream. For each run it reads the server's
# user+system CPU ticks (all its processes and threads, /proc) before and
# after, and prints CPU microseconds per request, in all and split into user
# space and kernel (sys); runs rotate REPS times.
#   cargo build --release --bin stream-gateway --example bare-pingora --example bare-tokio
#   benches/cpu-per-request.sh            (SECONDS_EACH=10 REPS=3 USERS=1)
# USERS>1: each request carries the next of USERS session tokens (the
# harness's wrk-multiuser.lua, as run-peers.sh does), so per-user caches and
# limiter tables see many users; wrk's Lua costs it some of its own ceiling.
# Loopback only; stops everything it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=$(cd "${SHARED:-../shared/bench}" && pwd)
SECONDS_EACH=${SECONDS_EACH:-10}
REPS=${REPS:-3}
USERS=${USERS:-1}
PY=python3
for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null || { echo "cpu-per-request: needs $tool (apt-get install wrk nginx-light haproxy)" >&2; exit 1; }
done
[[ -x target/release/stream-gateway && -x target/release/examples/bare-pingora && -x target/release/examples/bare-tokio ]] || {
  echo "cpu-per-request: build first: cargo build --release --bin stream-gateway --example bare-pingora --example bare-tokio" >&2; exit 1; }
RUN_DIR=$(mktemp -d -t cpu-per-request.XXXXXX)
mkdir -p "$RUN_DIR/tmp-upstream" "$RUN_DIR/tmp-proxy"
export BENCH_WORKERS=1 BENCH_RATE_LIMIT=1000000
export BENCH_APP_SECRET=bench-app-secret-not-for-production
export BENCH_STREAM_SECRET=bench-stream-secret-not-for-production
BENCH_STREAM_SECRET_B64=$(printf '%s' "$BENCH_STREAM_SECRET" | base64 -w0); export BENCH_STREAM_SECRET_B64
export BENCH_STREAM_API_KEY=bench-key BENCH_LISTEN=127.0.0.1:9100 BENCH_UPSTREAM=http://127.0.0.1:9001
export BENCH_UPSTREAM_WS=ws://127.0.0.1:9002
export BENCH_BLOCKED_PREFIXES="/channeltypes /campaigns /export_channels /users/deactivate /permissions"
export BENCH_TOKENS_FILE="$RUN_DIR/tokens.txt"
TOKEN=$("$PY" "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --user bench-user-1 --exp-in 86400)
if ((USERS > 1)); then
  "$PY" "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --users "$USERS" --exp-in 86400 >"$BENCH_TOKENS_FILE"
  WRK_ARGS=(-s "$SHARED/wrk-multiuser.lua")
else
  echo "$TOKEN" >"$BENCH_TOKENS_FILE"
  WRK_ARGS=(-H "Authorization: Bearer $TOKEN")
fi
BENCH_PATH="/channels/messaging/general?api_key=bench-key"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; exit 1; }
declare -A PORT=([nginx]=9101 [haproxy-jwt-mint]=9104 [bare-pingora]=9107 [bare-tokio]=9108 [gateway]=9100) SRV=()
start() {  # name port command...
  local name=$1 port=$2; shift 2
  "$@" >"$RUN_DIR/$name.log" 2>&1 & SRV[$name]=$!; PIDS+=($!); wait_port "$port"
}
start upstream 9001 nginx -p "$RUN_DIR" -c "$SHARED/nginx-upstream.conf" -g "daemon off; worker_processes 1;"
start nginx 9101 nginx -p "$RUN_DIR" -c "$SHARED/nginx-proxy.conf" -g "daemon off; worker_processes 1;"
start haproxy-jwt-mint 9104 haproxy -db -f "$SHARED/haproxy-jwt-mint.cfg"
start bare-pingora 9107 target/release/examples/bare-pingora 127.0.0.1:9107 127.0.0.1:9001
start bare-tokio 9108 target/release/examples/bare-tokio 127.0.0.1:9108 127.0.0.1:9001
start gateway 9100 benches/run-gateway.sh
# User and system CPU ticks of a process and all its descendants (nginx:
# master + worker), all threads.
tree_ticks() {
  local pids=($1) all=() p
  while ((${#pids[@]})); do
    all+=("${pids[@]}"); local next=()
    for p in "${pids[@]}"; do next+=($(pgrep -P "$p" || true)); done
    pids=("${next[@]}")
  done
  for p in "${all[@]}"; do cat /proc/"$p"/stat 2>/dev/null || true; done |
    awk '{u += $14; s += $15} END {print u + 0, s + 0}'
}
HZ=$(getconf CLK_TCK)
for t in nginx haproxy-jwt-mint bare-pingora bare-tokio gateway; do  # warm-up, checks the answer
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$t]}$BENCH_PATH")
  [[ "$code" == 200 ]] || { echo "cpu-per-request: $t answered $code" >&2; exit 1; }
  wrk -t1 -c64 -d2s "${WRK_ARGS[@]}" "http://127.0.0.1:${PORT[$t]}$BENCH_PATH" >/dev/null
done
printf 'rep\ttarget\trequests\treq_per_s\tcpu_s\tcpu_us_per_req\tuser_us\tsys_us\n'
order=(nginx haproxy-jwt-mint bare-pingora bare-tokio gateway)
for rep in $(seq "$REPS"); do
  for i in "${!order[@]}"; do
    t=${order[$(( (i + rep) % ${#order[@]} ))]}
    read -r u0 s0 < <(tree_ticks "${SRV[$t]}")
    out=$(wrk -t1 -c64 -d"${SECONDS_EACH}s" "${WRK_ARGS[@]}" "http://127.0.0.1:${PORT[$t]}$BENCH_PATH")
    read -r u1 s1 < <(tree_ticks "${SRV[$t]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [[ -z "$non2xx" ]] || { echo "cpu-per-request: $t answered $non2xx non-2xx" >&2; exit 1; }
    awk -v r="$rep" -v t="$t" -v n="$reqs" -v rps="$rps" -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$HZ" \
      'BEGIN {cpu = (u + s) / hz; printf "%s\t%s\t%d\t%s\t%.2f\t%.1f\t%.1f\t%.1f\n", r, t, n, rps, cpu, cpu * 1e6 / n, u / hz * 1e6 / n, s / hz * 1e6 / n}'
  done
done
