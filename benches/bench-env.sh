# Shared set-up of the gateway benches that run it alone in front of the
# harness's nginx upstream (callgrind.sh, ab.sh); sourced, not run:
#   NAME=ab; source benches/bench-env.sh
# Needs SHARED (../shared/bench) and USERS set. Checks that 127.0.0.1:9001 and
# :9100 are free; sets RUN_DIR, the BENCH_* variables run-gateway.sh reads
# (GATEWAY_FULL=1 unless set), TOKEN, WRK_ARGS (one session token, or USERS
# tokens through the harness's multi-user wrk script), BENCH_PATH, PIDS with
# a cleanup trap that stops them by PID, wait_port and wait_closed.
for port in 9001 9100; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$NAME: 127.0.0.1:$port is already in use (another bench still running?)" >&2; exit 1
  fi
done
RUN_DIR=$(mktemp -d -t "$NAME.XXXXXX")
mkdir -p "$RUN_DIR/tmp-upstream"
export BENCH_WORKERS=1 BENCH_APP_SECRET=bench-app-secret-not-for-production
export BENCH_STREAM_SECRET=bench-stream-secret-not-for-production
export BENCH_STREAM_API_KEY=bench-key BENCH_LISTEN=127.0.0.1:9100 BENCH_UPSTREAM=http://127.0.0.1:9001
export GATEWAY_FULL=${GATEWAY_FULL:-1} GATEWAY_AUDIT_FILE="$RUN_DIR/audit.jsonl"
TOKEN=$(python3 "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --user bench-user-1 --exp-in 86400)
WRK_ARGS=(-H "Authorization: Bearer $TOKEN")
if ((USERS > 1)); then
  export BENCH_TOKENS_FILE="$RUN_DIR/tokens.txt"
  python3 "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --users "$USERS" --exp-in 86400 >"$BENCH_TOKENS_FILE"
  WRK_ARGS=(-s "$SHARED/wrk-multiuser.lua")
fi
BENCH_PATH="/channels/messaging/general?api_key=bench-key"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "$NAME: port $1 not open" >&2; exit 1; }
wait_closed() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0; sleep 0.1; done; echo "$NAME: port $1 still open" >&2; exit 1; }
