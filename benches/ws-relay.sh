#!/usr/bin/env bash
# Websocket relay latency (issues 3 and 8): sequential 200-byte echoes over one
# socket, straight to an echo upstream and through the gateway (1 thread,
# upstream = that echo server), alternated REPS times for SECONDS_EACH each;
# prints p50/p99/p99.9 round trips per run and the gateway's added p99.
#   CLIENT=rust (default): benches/ws_rtt.rs as echo server and client
#     (cargo build --release --bin stream-gateway --example ws-rtt)
#   CLIENT=python: the peer harness's ws_echo.py and benches/ws_relay_client.py
#   PIN=1: gateway on CPU 1, echo server and client on CPU 0 (taskset)
# Loopback only; stops what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
SHARED=${SHARED:-../shared/bench}
SECONDS_EACH=${SECONDS_EACH:-5}
REPS=${REPS:-3}
CLIENT=${CLIENT:-rust}
RTT=target/release/examples/ws-rtt
# "taskset -c CPU" with PIN=1, nothing otherwise (word-split on purpose).
pin() { [[ ${PIN:-0} == 1 ]] && echo "taskset -c $1" || true; }
if [[ $CLIENT == rust ]]; then
  [[ -x $RTT && -x target/release/stream-gateway ]] || {
    echo "ws-relay: build first: cargo build --release --bin stream-gateway --example ws-rtt" >&2; exit 1; }
else
  "$PY" -c 'import websockets' || { echo "ws-relay: needs python3-websockets" >&2; exit 1; }
fi
[[ ${PIN:-0} != 1 ]] || command -v taskset >/dev/null || { echo "ws-relay: PIN=1 needs taskset (util-linux)" >&2; exit 1; }
export BENCH_LISTEN=127.0.0.1:9130 BENCH_UPSTREAM=http://127.0.0.1:9032 BENCH_STREAM_API_KEY=bench-key BENCH_WORKERS=1
export BENCH_APP_SECRET=bench-app-secret BENCH_STREAM_SECRET=bench-stream-secret
TOKEN=$("$PY" "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --user bench-user-1 --exp-in 86400)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; return 1; }
if [[ $CLIENT == rust ]]; then
  $(pin 0) "$RTT" echo 9032 & PIDS+=($!)
else
  $(pin 0) "$PY" "$SHARED/ws_echo.py" 9032 & PIDS+=($!)
fi
wait_port 9032
$(pin 1) benches/run-gateway.sh >/tmp/ws-relay-gateway.log 2>&1 & PIDS+=($!); wait_port 9130
measure() {
  if [[ $CLIENT == rust ]]; then $(pin 0) "$RTT" client "$1" "$TOKEN" "$SECONDS_EACH"
  else $(pin 0) "$PY" benches/ws_relay_client.py "$1" "$TOKEN" "$SECONDS_EACH" | awk '{print $1, $2, "-", $3}'; fi
}
printf 'rep\ttarget\tp50_us\tp99_us\tp999_us\tmsgs\n'
for rep in $(seq "$REPS"); do
  for target in direct gateway; do
    url=ws://127.0.0.1:9032/connect; [[ $target == gateway ]] && url=ws://127.0.0.1:9130/connect
    line=$(measure "$url")
    printf '%s\t%s\t%s\n' "$rep" "$target" "$(tr ' ' '\t' <<<"$line")"
    read -r _ p99 _ _ <<<"$line"
    if [[ $target == direct ]]; then direct_p99=$p99; else echo "rep $rep: gateway p99 - direct p99 = $((p99 - direct_p99)) us"; fi
  done
done
