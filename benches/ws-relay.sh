#!/usr/bin/env bash
# Websocket relay latency (issue 3/8): sequential 200-byte echoes over one
# socket, straight to the peer harness's echo upstream (ws_echo.py) and
# through the gateway (1 thread, upstream = that echo server), alternated
# REPS times for SECONDS each; prints p50/p99 round trips and the difference.
# Loopback only; stops what it started, by PID.
#   cargo build --release --bin stream-gateway && benches/ws-relay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
SHARED=${SHARED:-../shared/bench}
SECONDS_EACH=${SECONDS_EACH:-5}
REPS=${REPS:-3}
"$PY" -c 'import websockets' || { echo "ws-relay: needs python3-websockets" >&2; exit 1; }
export BENCH_LISTEN=127.0.0.1:9130 BENCH_UPSTREAM=http://127.0.0.1:9032 BENCH_STREAM_API_KEY=bench-key BENCH_WORKERS=1
export BENCH_APP_SECRET=bench-app-secret BENCH_STREAM_SECRET=bench-stream-secret
TOKEN=$("$PY" "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --user bench-user-1 --exp-in 86400)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; return 1; }
"$PY" "$SHARED/ws_echo.py" 9032 & PIDS+=($!); wait_port 9032
benches/run-gateway.sh >/tmp/ws-relay-gateway.log 2>&1 & PIDS+=($!); wait_port 9130
printf 'rep\ttarget\tp50_us\tp99_us\tmsgs\n'
for rep in $(seq "$REPS"); do
  for target in direct gateway; do
    url=ws://127.0.0.1:9032/connect; [[ $target == gateway ]] && url=ws://127.0.0.1:9130/connect
    printf '%s\t%s\t%s\n' "$rep" "$target" "$("$PY" benches/ws_relay_client.py "$url" "$TOKEN" "$SECONDS_EACH" | tr ' ' '\t')"
  done
done
