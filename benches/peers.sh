#!/usr/bin/env bash
# Re-runs the peer comparison (issue 8: "no regressions later") and prints the
# gateway's ratios to every peer: ../shared/bench/run-peers.sh with the release
# gateway (benches/run-gateway.sh, 1 worker thread, GATEWAY_FULL=1 by default:
# limits and the audit log on too), once per USERS value, then, from each run's
# results.tsv, the median req/s and p99 of every target and gateway ÷ target.
#   cargo build --release --bin stream-gateway
#   benches/peers.sh                      (USERS_LIST="1 10000" GATEWAY_FULL=1)
# Needs wrk, nginx, haproxy (apt-get install wrk nginx-light haproxy). Loopback
# only; run-peers.sh stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=$(cd "${SHARED:-../shared/bench}" && pwd)
[[ -x target/release/stream-gateway ]] || {
  echo "peers: build first: cargo build --release --bin stream-gateway" >&2; exit 1; }
for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null || { echo "peers: needs $tool (apt-get install wrk nginx-light haproxy)" >&2; exit 1; }
done
export GATEWAY_FULL=${GATEWAY_FULL:-1}
for users in ${USERS_LIST:-1 10000}; do
  run_dir=$(mktemp -d -t bench-peers.XXXXXX)
  GATEWAY_CMD="exec $ROOT/benches/run-gateway.sh" GATEWAY_CWD=$ROOT GATEWAY_PORT=9100 \
    WS=0 USERS=$users RUN_DIR=$run_dir bash "$SHARED/run-peers.sh" >"$run_dir/run-peers.out" 2>&1 || {
    tail -20 "$run_dir/run-peers.out" >&2; echo "peers: run-peers.sh failed (USERS=$users), see $run_dir" >&2; exit 1; }
  echo "USERS=$users  ($(date -u +%FT%TZ), GATEWAY_FULL=$GATEWAY_FULL, raw: $run_dir)"
  awk -F'\t' 'NR > 1 { rps[$2] = rps[$2] " " $4; p99[$2] = p99[$2] " " $7 }
    function median(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
      if (!("gateway" in rps)) { print "peers: no gateway row" > "/dev/stderr"; exit 1 }
      g = median(rps["gateway"]); gp = median(p99["gateway"])
      printf "%-18s %12s %10s %16s %14s\n", "target", "req/s", "p99 ms", "gateway/target", "p99 diff ms"
      for (t in rps) {
        r = median(rps[t]); p = median(p99[t])
        printf "%-18s %12.0f %10.2f %16.2f %+14.2f\n", t, r, p / 1000, g / r, (gp - p) / 1000
      }
    }' "$run_dir/results.tsv"
  echo
done
