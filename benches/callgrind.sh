#!/usr/bin/env bash
# User-space instructions per request of the release gateway (issue 8, item 2),
# a number the box's load does not move: the peer harness's nginx upstream, the
# gateway with benches/gateway-bench.toml (GATEWAY_FULL=1 by default: limits and
# the audit file too) under `valgrind --tool=callgrind`, instrumentation off
# during a WARM-second `wrk -t1 -c1` warm-up, then on for MEASURE seconds;
# prints total instructions ÷ requests and calls to malloc ÷ requests, and
# with TOP=n the n costliest functions (inclusive) from callgrind_annotate.
#   cargo build --release --bin stream-gateway
#   benches/callgrind.sh                  (WARM=4 MEASURE=8 TOP=0 USERS=1)
# USERS=n: each request carries one of n session tokens (one user each, the
# peer harness's wrk-multiuser.lua); give WARM time to see them all once.
# valgrind hides the CPU's SHA extensions, so the verified-session cache's
# SHA-256 costs ~10k instructions here in software (a few hundred on the real
# CPU): compare builds, not absolute numbers. Loopback only; stops what it
# started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(cd "${SHARED:-../shared/bench}" && pwd)
WARM=${WARM:-4}
MEASURE=${MEASURE:-8}
TOP=${TOP:-0}
USERS=${USERS:-1}
for tool in wrk nginx valgrind callgrind_control callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "callgrind: needs $tool (apt-get install wrk nginx-light valgrind)" >&2; exit 1; }
done
[[ -x target/release/stream-gateway ]] || {
  echo "callgrind: build first: cargo build --release --bin stream-gateway" >&2; exit 1; }
NAME=callgrind
# shellcheck source=benches/bench-env.sh
source benches/bench-env.sh
nginx -p "$RUN_DIR" -c "$SHARED/nginx-upstream.conf" -g "daemon off; worker_processes 1;" >"$RUN_DIR/upstream.log" 2>&1 &
PIDS+=($!)
wait_port 9001
# run-gateway.sh renders the config and execs the binary under valgrind.
GATEWAY_WRAP="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$RUN_DIR/callgrind.out" \
  benches/run-gateway.sh >"$RUN_DIR/gateway.log" 2>&1 &
GW=$!
PIDS+=($GW)
wait_port 9100
wrk -t1 -c1 -d"${WARM}s" "${WRK_ARGS[@]}" "http://127.0.0.1:9100$BENCH_PATH" >/dev/null
callgrind_control -i on "$GW" >/dev/null 2>&1
out=$(wrk -t1 -c1 -d"${MEASURE}s" "${WRK_ARGS[@]}" "http://127.0.0.1:9100$BENCH_PATH")
callgrind_control -i off "$GW" >/dev/null 2>&1
callgrind_control -d "$GW" >/dev/null 2>&1
non2xx=$(awk '/Non-2xx/ {print $NF} /non2xx=/ {sub(/.*non2xx=/, ""); if ($1 + 0 > 0) print $1}' <<<"$out")
[[ -z "$non2xx" ]] || { echo "callgrind: the gateway answered $non2xx non-2xx" >&2; exit 1; }
reqs=$(awk '/requests in/ {print $1}' <<<"$out")
# The dump is written next to the out file with a suffix (.1, .2, ...).
dump=$(ls -t "$RUN_DIR"/callgrind.out.* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",", "", $1); print $1}')
# Calls into libc's malloc: the callers listed above its line in the caller tree.
mallocs=$(callgrind_annotate --tree=caller "$dump" 2>/dev/null | awk '
  /^$/ { calls = 0; next }
  /^ *[0-9,]+ .*  < / { if (match($0, /\(([0-9,]+)x\)/)) { n = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", n); calls += n } next }
  /\*  .*malloc\.c:malloc \[/ { total += calls }
  END { print total + 0 }')
echo "users=$USERS requests=$reqs instructions=$total per_request=$((total / reqs)) mallocs_per_request=$(awk -v m="$mallocs" -v r="$reqs" 'BEGIN {printf "%.1f", m / r}') (GATEWAY_FULL=$GATEWAY_FULL, raw: $RUN_DIR)"
if ((TOP > 0)); then
  callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n "1,$((TOP + 2))p"
fi
