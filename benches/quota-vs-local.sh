#!/usr/bin/env bash
# Throughput with local limits only vs with the shared Redis quota (exact: one
# script per batch of concurrent requests) vs the leased quota (`lease = 100`), in one run (issue 4's
# "Redis quotas cost under 10 %"). Alternates the three gateway configs
# REPS (3) times against the peer harness's nginx stand-in upstream (:9001) and a
# redis-server of its own (:6391), wrk -t1 -c64 -d10s; loopback only; stops what
# it started, by PID. Needs wrk, nginx-light, redis-server and a release build.
#   cargo build --release --bin stream-gateway && benches/quota-vs-local.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared/bench}
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
run() { wrk -t1 -c64 -d10s --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:9100/channels/messaging/general?api_key=bench-key" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} /Non-2xx/ {n=$NF} END {print r, p, "non2xx=" (n==""?0:n)}'; }
wait_port 6391
for rep in $(seq "${REPS:-3}"); do
  for mode in local redis lease; do
    RUST_LOG=warn $ROOT/target/release/stream-gateway --config $WORK/gw-$mode.toml > gw-$mode.log 2>&1 & GW=$!; wait_port 9100
    wrk -t1 -c64 -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:9100/channels/messaging/general?api_key=bench-key" >/dev/null
    echo "$mode $(run)"; kill $GW; wait $GW 2>/dev/null
  done
done
# Time inside Redis per script call (all reps), and requests per call.
redis-cli -p 6391 INFO commandstats | grep -E '^cmdstat_(evalsha|eval):' | tr -d '\r'
kill $NG $RS; wait $NG $RS 2>/dev/null
