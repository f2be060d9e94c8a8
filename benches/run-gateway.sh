#!/usr/bin/env bash
# GATEWAY_CMD for ../shared/bench/run-peers.sh: renders benches/gateway-bench.toml
# from the BENCH_* variables and runs the release binary in the foreground.
#   cargo build --release
#   GATEWAY_CMD="exec $PWD/benches/run-gateway.sh" GATEWAY_CWD=$PWD bash ../shared/bench/run-peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BENCH_LISTEN:?run me from run-peers.sh}" "${BENCH_UPSTREAM:?}" "${BENCH_STREAM_API_KEY:?}" "${BENCH_WORKERS:?}"
conf="$(mktemp -t gateway-bench.XXXXXX.toml)"
sed -e "s|@BENCH_LISTEN@|$BENCH_LISTEN|" -e "s|@BENCH_UPSTREAM@|$BENCH_UPSTREAM|" \
    -e "s|@BENCH_STREAM_API_KEY@|$BENCH_STREAM_API_KEY|" -e "s|@BENCH_WORKERS@|$BENCH_WORKERS|" \
    benches/gateway-bench.toml >"$conf"
exec env RUST_LOG="${RUST_LOG:-warn}" target/release/stream-gateway --config "$conf"
