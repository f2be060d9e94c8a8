#!/usr/bin/env bash
# Throughput with local limits only vs with the shared Redis quota (exact: one
# script per batch of concurrent requests) vs the leased quota (`lease = 100`), in one run (issue 4's
# "Redis quotas cost under 10 %"). Alternates the three gateway configs
# REPS (3) times against the peer harness's nginx stand-in upstream (:9001) and a
# redis-server of its own (:6391), wrk -t1 -c64 -d10s; loopback only; stops what
# it started, by PID. Needs wrk, nginx-light, redis-server and a release build.
#   cargo build --release --bin stream-gateway && benches/quota-vs-local.sh
# Prints per run req/s, p99 and the CPU per request of the gateway and of
# Redis (from /proc: what the quota costs the box, steadier than req/s here),
# then the medians. GATEWAY_BIN picks another build.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared/bench}
GATEWAY_BIN=$(realpath "${GATEWAY_BIN:-$ROOT/target/release/stream-gateway}")
[[ -x "$GATEWAY_BIN" ]] || { echo "quota-vs-local: no gateway binary at $GATEWAY_BIN (cargo build --release --bin stream-gateway)" >&2; exit 1; }
WORK=$(mktemp -d -t quota-bench.XXXXXX)
mkdir -p "$WORK/tmp-upstream"
cd "$WORK"
nginx -p "$WORK" -c "$SHARED/nginx-upstream.conf" -g 'daemon off; worker_processes 1;' & NG=$!
redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 & RS=$!
export BENCH_APP_SECRET=bench-app-secret-not-for-production BENCH_STREAM_SECRET=bench-stream-secret-not-for-production
base=$WORK/gw-local.toml
sed -e "s|@BENCH_LISTEN@|127.0.0.1:9100|" -e "s|@BENCH_UPSTREAM@|http://127.0.0.1:9001|" -e "s|@BENCH_STREAM_API_KEY@|bench-key|" -e "s|@BENCH_WORKERS@|1|" $ROOT/benches/gateway-bench.toml > $base
cp $base $WORK/gw-redis.toml
cp $base $WORK/gw-lease.toml
printf '\n[tenants.quota]\nrequests_per_minute = 1000000000\n\n[redis]\nurl = "redis://127.0.0.1:6391"\n' >> $WORK/gw-redis.toml
printf '\n[tenants.quota]\nrequests_per_minute = 1000000000\nlease = 100\n\n[redis]\nurl = "redis://127.0.0.1:6391"\n' >> $WORK/gw-lease.toml
TOKEN=$(python3 $SHARED/make_token.py --secret $BENCH_APP_SECRET --user bench-user-1 --exp-in 86400)
wait_port() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }
HZ=$(getconf CLK_TCK)
# CPU seconds (user + kernel, all threads) of a process so far, in ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_port 6391
echo "mode req/s p99 non2xx gateway_cpu_us_per_req redis_cpu_us_per_req"
for rep in $(seq "${REPS:-3}"); do
  for mode in local redis lease; do
    RUST_LOG=warn "$GATEWAY_BIN" --config $WORK/gw-$mode.toml > gw-$mode.log 2>&1 & GW=$!; wait_port 9100
    wrk -t1 -c64 -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:9100/channels/messaging/general?api_key=bench-key" >/dev/null
    g0=$(ticks $GW); r0=$(ticks $RS)
    out=$(wrk -t1 -c64 -d10s --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:9100/channels/messaging/general?api_key=bench-key")
    g1=$(ticks $GW); r1=$(ticks $RS)
    awk -v m=$mode -v g=$((g1 - g0)) -v r=$((r1 - r0)) -v hz=$HZ '/requests in/ {n=$1} /Requests\/sec/ {rps=$2} / 99%/ {p=$2} /Non-2xx/ {x=$NF}
      END {printf "%s %s %s non2xx=%d %.2f %.2f\n", m, rps, p, x, g / hz * 1e6 / n, r / hz * 1e6 / n}' <<<"$out" | tee -a results.txt
    kill $GW; wait $GW 2>/dev/null
  done
done
echo
echo "medians (${REPS:-3} reps; CPU per request: the gateway's, Redis's, and both against local only)"
awk '{rps[$1] = rps[$1] " " $2; g[$1] = g[$1] " " $5; r[$1] = r[$1] " " $6}
  function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    base = median(rps["local"]); cbase = median(g["local"]) + median(r["local"])
    for (m in rps) printf "%-6s req/s %8.0f (%+.1f %%)  cpu us/req gateway %.2f + redis %.2f (%+.1f %%)\n", m, median(rps[m]),
      100 * (median(rps[m]) / base - 1), median(g[m]), median(r[m]), 100 * ((median(g[m]) + median(r[m])) / cbase - 1)
  }' results.txt
# Time inside Redis per script call (all reps).
redis-cli -p 6391 INFO commandstats | grep -E '^cmdstat_(evalsha|eval):' | tr -d '\r'
kill $NG $RS; wait $NG $RS 2>/dev/null
