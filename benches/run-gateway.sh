#!/usr/bin/env bash
# GATEWAY_CMD for ../shared/bench/run-peers.sh: renders benches/gateway-bench.toml
# from the BENCH_* variables and runs the release binary in the foreground.
#   cargo build --release
#   GATEWAY_CMD="exec $PWD/benches/run-gateway.sh" GATEWAY_CWD=$PWD bash ../shared/bench/run-peers.sh
#   (GATEWAY_FULL=1 adds local limits and the audit log to a file)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BENCH_LISTEN:?run me from run-peers.sh}" "${BENCH_UPSTREAM:?}" "${BENCH_STREAM_API_KEY:?}" "${BENCH_WORKERS:?}"
conf="$(mktemp -t gateway-bench.XXXXXX.toml)"
sed -e "s|@BENCH_LISTEN@|$BENCH_LISTEN|" -e "s|@BENCH_UPSTREAM@|$BENCH_UPSTREAM|" \
    -e "s|@BENCH_STREAM_API_KEY@|$BENCH_STREAM_API_KEY|" -e "s|@BENCH_WORKERS@|$BENCH_WORKERS|" \
    benches/gateway-bench.toml >"$conf"
# GATEWAY_FULL=1: everything issue 8 asks to have on as well: local rate limits
# (generous: they count but never refuse in the bench) and the audit log to a
# file (metrics are always on).
if [[ "${GATEWAY_FULL:-0}" == 1 ]]; then
  audit="${GATEWAY_AUDIT_FILE:-$(mktemp -t gateway-audit.XXXXXX.jsonl)}"
  cat >>"$conf" <<EOT

[tenants.limits]
per_user = { rate = "1000000/s", burst = 1000000 }
per_ip = { rate = "1000000/s", burst = 1000000 }
per_tenant = { rate = "1000000/s", burst = 1000000 }

[audit]
sink = "file"
path = "$audit"
max_file_bytes = 0
EOT
fi
# GATEWAY_WRAP: a command to run the binary under (benches/callgrind.sh: valgrind).
# GATEWAY_BIN: another build of the gateway (benches/ab.sh compares builds).
# shellcheck disable=SC2086
exec env RUST_LOG="${RUST_LOG:-warn}" ${GATEWAY_WRAP:-} "${GATEWAY_BIN:-target/release/stream-gateway}" --config "$conf"
