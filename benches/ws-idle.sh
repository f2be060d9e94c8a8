#!/usr/bin/env bash
# Idle-websocket memory and CPU of the gateway (issue 3's load benchmark).
#   cargo build --release --bin stream-gateway && benches/ws-idle.sh 1000 10000
# For each N: starts the tests' fake Stream as upstream (cargo example
# fake-stream: Rust, answers /connect with a health.check like Stream) and
# the gateway (1 thread, benches/gateway-bench.toml) on loopback, opens N idle
# /connect sockets through it, reads the gateway's RSS (VmRSS) before and with
# the sockets open and its CPU time over 10 idle seconds, then stops everything
# it started, by PID. Needs python3-websockets (Debian) and a file limit of at
# least 2N + 100 for the gateway (raised here with ulimit; run as root or
# raise the hard limit first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
SHARED=${SHARED:-../shared/bench}
"$PY" -c 'import websockets' || { echo "ws-idle: needs python3-websockets (apt-get install python3-websockets)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The fake Stream knows one app: dev-key / dev-stream-secret (config/dev.toml).
export BENCH_LISTEN=127.0.0.1:9110 BENCH_UPSTREAM=http://127.0.0.1:9012 BENCH_STREAM_API_KEY=dev-key BENCH_WORKERS=1
export BENCH_APP_SECRET=bench-app-secret BENCH_STREAM_SECRET=dev-stream-secret
[[ -x target/release/examples/fake-stream ]] || cargo build --release --example fake-stream
TOKEN=$("$PY" "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --user bench-user-1 --exp-in 86400)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; return 1; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
printf 'N\trss_before_kib\trss_open_kib\tper_socket_bytes\tidle_cpu_pct\n'
for N in "${@:-1000 10000}"; do
  target/release/examples/fake-stream 127.0.0.1:9012 >/dev/null 2>&1 & PIDS+=($!); wait_port 9012
  benches/run-gateway.sh >/tmp/ws-idle-gateway.log 2>&1 & GW=$!; PIDS+=($GW); wait_port 9110
  before=$(rss_kib "$GW")
  coproc CLIENT { timeout 300 "$PY" benches/ws_idle_client.py ws://127.0.0.1:9110 "$TOKEN" "$N" 30 "$BENCH_STREAM_API_KEY"; }
  PIDS+=($CLIENT_PID)
  read -r line <&"${CLIENT[0]}"
  [[ "$line" == "opened $N" ]] || { echo "client said: $line" >&2; exit 1; }
  sleep 2
  open=$(rss_kib "$GW"); t0=$(cpu_ticks "$GW"); sleep 10; t1=$(cpu_ticks "$GW")
  hz=$(getconf CLK_TCK)
  printf '%s\t%s\t%s\t%s\t%s\n' "$N" "$before" "$open" $(( (open - before) * 1024 / N )) \
    "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz / 10 * 100}')"
  cleanup
done
