#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each, one
# after the other, on one core; prints executions, corpus size and crashes.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default 60 s, all six)
#
# Exit status: 0 no crash, 1 a target crashed (its input is in
# fuzz/artifacts/<target>/), 2 cargo-fuzz missing or the build failed.
# No network: the targets only call library functions in-process.
#
# Environment:
#   FUZZ_SANITIZER  none (default) or address: the library is
#                   #![forbid(unsafe_code)], so ASan would mostly check the
#                   dependencies' unsafe code, at about half the speed.
#   FUZZ_RSS_MB     libFuzzer's memory limit per target (default 2048).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: fuzz/run.sh [seconds-per-target] [target...]" >&2
    exit 2
fi
all=(path_policy credential connect_json jwt config fast_head)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
sanitizer=${FUZZ_SANITIZER:-none}
rss_mb=${FUZZ_RSS_MB:-2048}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cat >&2 <<'EOF'
cargo-fuzz is not installed. Install it with:
    cargo install cargo-fuzz --locked
(it builds libFuzzer from C++ sources: a C++ compiler, g++ or clang++, is needed)
EOF
    exit 2
fi

# Without a sanitizer cargo-fuzz passes only stable compiler flags; ASan
# needs -Zsanitizer, which a stable toolchain takes with RUSTC_BOOTSTRAP=1.
# (Only then: some build scripts probe RUSTC_BOOTSTRAP, so setting it
# changes their output and rebuilds everything.)
# Each sanitizer builds into its own folder, so switching does not rebuild.
dir=()
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
    dir=(--target-dir "target/sanitizer-$sanitizer")
fi

echo "== building fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build -s "$sanitizer" "${dir[@]}"; then
    echo "fuzz build failed" >&2
    exit 2
fi

max_len() {
    case $1 in
        connect_json) echo 20000 ;; # past the 16 KiB cap on the json parameter
        config) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

# A final statistic of libFuzzer's -print_final_stats from a log.
final_stat() { grep -m1 "^stat::$2:" "$1" | awk '{print $2}'; }

mkdir -p logs
crashed=()
summary=()
for t in "${targets[@]}"; do
    if [ ! -f "fuzz_targets/$t.rs" ]; then
        echo "unknown target $t (known: ${all[*]})" >&2
        exit 2
    fi
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
    log="logs/$t.log"
    echo "== $t: ${secs}s (log: fuzz/$log)"
    # corpus/$t gathers what the fuzzer finds; seeds/$t (in git) is read only.
    cargo fuzz run -s "$sanitizer" "${dir[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb="$rss_mb" \
        -max_len="$(max_len "$t")" -print_final_stats=1 "${dict[@]}" \
        </dev/null >"$log" 2>&1
    rc=$?
    execs=$(final_stat "$log" number_of_executed_units)
    rate=$(final_stat "$log" average_exec_per_sec)
    rss=$(final_stat "$log" peak_rss_mb)
    # libFuzzer's own corpus at the end (inputs/bytes), and the files kept
    # in corpus/$t across runs.
    units=$(grep -o 'corp: [0-9]*/[0-9A-Za-z]*' "$log" | tail -1 | cut -d' ' -f2)
    files=$(find "corpus/$t" -type f | wc -l)
    line=$(printf '%-13s execs %-10s exec/s %-7s corpus %-11s files %-6s peak_rss_mb %-5s' \
        "$t" "${execs:-?}" "${rate:-?}" "${units:-?}" "$files" "${rss:-?}")
    if [ $rc -ne 0 ]; then
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | cut -d' ' -f5)
        line="$line CRASH (exit $rc) ${artifact:-see the log}"
        crashed+=("$t")
        grep -E -m5 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /'
    else
        line="$line no crash"
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), ${secs}s per target, sanitizer $sanitizer, $(nproc) cores)"
printf '%s\n' "${summary[@]}"
if [ ${#crashed[@]} -gt 0 ]; then
    echo "crashed: ${crashed[*]} (reproduce: cd fuzz && cargo fuzz run -s $sanitizer <target> <artifact>)"
    exit 1
fi
