#!/usr/bin/env bash
# Compares builds of the gateway on one box in one run, interleaved (each rep
# starting with the next build), by the two
# numbers that a noisy box moves least: CPU time per request (user + kernel,
# from /proc, all threads) and user space alone, plus req/s. Each rep starts
# each build in turn (benches/run-gateway.sh, everything on: GATEWAY_FULL=1),
# warms it for 1 s, loads it with wrk -t1 -c64 for SECS and stops it; the
# upstream is the harness's nginx. Prints every rep and the medians.
#   cp target/release/stream-gateway /tmp/gw-before   (build, change, rebuild)
#   benches/ab.sh /tmp/gw-before target/release/stream-gateway   (REPS=5 SECS=6 USERS=1)
# Loopback only; stops everything it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(cd "${SHARED:-../shared/bench}" && pwd)
REPS=${REPS:-5}
SECS=${SECS:-6}
USERS=${USERS:-1}
(($# >= 2)) || { echo "ab: give two or more gateway binaries" >&2; exit 1; }
for b in "$@"; do [[ -x "$b" ]] || { echo "ab: $b is not an executable" >&2; exit 1; }; done
for tool in wrk nginx python3; do
  command -v "$tool" >/dev/null || { echo "ab: needs $tool (apt-get install wrk nginx-light)" >&2; exit 1; }
done
NAME=ab
# shellcheck source=benches/bench-env.sh
source benches/bench-env.sh
nginx -p "$RUN_DIR" -c "$SHARED/nginx-upstream.conf" -g "daemon off; worker_processes 1;" >"$RUN_DIR/upstream.log" 2>&1 &
PIDS+=($!)
wait_port 9001
HZ=$(getconf CLK_TCK)
printf 'rep\tbuild\treq_per_s\tcpu_us_per_req\tuser_us\tsys_us\n' | tee "$RUN_DIR/ab.tsv"
for rep in $(seq "$REPS"); do
  # Each rep starts with the next build: the order within a rep shows in
  # the numbers (the first and second runs of a pair differ by ~0.3 us).
  builds=("$@")
  for k in "${!builds[@]}"; do
    n=$(( (k + rep - 1) % ${#builds[@]} + 1 ))
    b=${builds[$((n - 1))]}
    GATEWAY_BIN="$b" benches/run-gateway.sh >"$RUN_DIR/gateway-$n.log" 2>&1 &
    gw=$!
    wait_port 9100
    wrk -t1 -c64 -d1s "${WRK_ARGS[@]}" "http://127.0.0.1:9100$BENCH_PATH" >/dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$gw/stat")
    out=$(wrk -t1 -c64 -d"${SECS}s" "${WRK_ARGS[@]}" "http://127.0.0.1:9100$BENCH_PATH")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$gw/stat")
    kill "$gw"; wait "$gw" 2>/dev/null || true
    wait_closed 9100
    non2xx=$(awk '/Non-2xx/ {print $NF} /non2xx=/ {sub(/.*non2xx=/, ""); if ($1 + 0 > 0) print $1}' <<<"$out")
    [[ -z "$non2xx" ]] || { echo "ab: $b answered $non2xx non-2xx" >&2; exit 1; }
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    awk -v r="$rep" -v b="$n:$b" -v n="$reqs" -v rps="$rps" -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$HZ" \
      'BEGIN {printf "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\n", r, b, rps, (u + s) / hz * 1e6 / n, u / hz * 1e6 / n, s / hz * 1e6 / n}' |
      tee -a "$RUN_DIR/ab.tsv"
  done
done
echo
echo "medians ($REPS reps, USERS=$USERS, raw: $RUN_DIR/ab.tsv)"
awk -F'\t' 'NR > 1 { rps[$2] = rps[$2] " " $3; cpu[$2] = cpu[$2] " " $4; usr[$2] = usr[$2] " " $5 }
  function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    printf "%-48s %10s %14s %10s\n", "build", "req/s", "cpu us/req", "user us"
    for (b in rps) printf "%-48s %10.0f %14.2f %10.2f\n", b, median(rps[b]), median(cpu[b]), median(usr[b])
  }' "$RUN_DIR/ab.tsv"
