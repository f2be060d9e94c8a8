#!/usr/bin/env bash
# TLS row of the peer benchmark (issue 10): the gateway terminating TLS vs
# nginx terminating TLS, in one run, both in front of the peer harness's
# stand-in Stream upstream (../shared/bench/nginx-upstream.conf), one worker
# each, measured with wrk over https (HTTP/1.1; wrk does not speak HTTP/2).
# The plain-HTTP twins run in the same run for the cost of TLS itself.
#
# Targets (interleaved, order rotated every repetition):
#   gw-http      gateway, plain HTTP                      keep-alive
#   gw-https     gateway, TLS ([server.tls])              keep-alive
#   nginx-http   nginx proxy_pass, plain HTTP             keep-alive
#   nginx-https  nginx proxy_pass, TLS                    keep-alive
#   gw-hs        gateway, TLS, `Connection: close`        a full handshake per request
#   nginx-hs     nginx, TLS, `Connection: close`          a full handshake per request
#
# Both servers get the same certificate (ECDSA P-256, made here with
# openssl), TLS 1.2 and 1.3, and keep-alive to the upstream. The gateway
# does its whole request path (session check, policy, token exchange);
# nginx only proxies. Loopback only; everything is stopped by PID.
#   cargo build --release --bin stream-gateway && benches/tls-vs-nginx.sh
# Settings: REPS (3), DURATION (10s), WARMUP (2s), CONNS (64),
#   UPSTREAM_PORT (9001; the harness's), BASE_PORT (9540; uses 9540-9543),
#   HS=0 skips the handshake rows.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared/bench}
REPS=${REPS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
UPSTREAM_PORT=${UPSTREAM_PORT:-9001}
BASE_PORT=${BASE_PORT:-9540}
HS=${HS:-1}
GW_HTTP=$BASE_PORT GW_HTTPS=$((BASE_PORT + 1)) NG_HTTP=$((BASE_PORT + 2)) NG_HTTPS=$((BASE_PORT + 3))
BIN=$ROOT/target/release/stream-gateway
[[ -x $BIN ]] || { echo "build first: cargo build --release --bin stream-gateway" >&2; exit 1; }
for p in $UPSTREAM_PORT $GW_HTTP $GW_HTTPS $NG_HTTP $NG_HTTPS; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is in use (another bench?); set UPSTREAM_PORT / BASE_PORT" >&2
    exit 1
  fi
done

WORK=$(mktemp -d -t tls-bench.XXXXXX)
mkdir -p "$WORK/tmp-upstream" "$WORK/tmp-proxy"
cd "$WORK"
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap stop EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# The harness's upstream, on UPSTREAM_PORT.
sed "s/127.0.0.1:9001/127.0.0.1:$UPSTREAM_PORT/" "$SHARED/nginx-upstream.conf" > "$WORK/nginx-upstream.conf"
nginx -p "$WORK" -c "$WORK/nginx-upstream.conf" -g 'daemon off; worker_processes 1;' & PIDS+=($!)

cat > "$WORK/nginx-tls.conf" <<EOF
pid        nginx-tls.pid;
error_log  nginx-tls.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp-proxy/body;
    proxy_temp_path       tmp-proxy/proxy;
    fastcgi_temp_path     tmp-proxy/fastcgi;
    uwsgi_temp_path       tmp-proxy/uwsgi;
    scgi_temp_path        tmp-proxy/scgi;
    keepalive_requests 1000000;
    keepalive_timeout  75s;
    upstream stream_api {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NG_HTTP backlog=4096;
        listen 127.0.0.1:$NG_HTTPS ssl http2 backlog=4096;
        ssl_certificate     $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols       TLSv1.2 TLSv1.3;
        ssl_session_cache   off;
        ssl_session_tickets off;
        location / {
            proxy_pass http://stream_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$WORK" -c "$WORK/nginx-tls.conf" -g 'daemon off; worker_processes 1;' & PIDS+=($!)

export BENCH_APP_SECRET=bench-app-secret-not-for-production BENCH_STREAM_SECRET=bench-stream-secret-not-for-production
render() {
  sed -e "s|@BENCH_LISTEN@|127.0.0.1:$1|" -e "s|@BENCH_UPSTREAM@|http://127.0.0.1:$UPSTREAM_PORT|" \
      -e "s|@BENCH_STREAM_API_KEY@|bench-key|" -e "s|@BENCH_WORKERS@|1|" \
      "$ROOT/benches/gateway-bench.toml"
}
render $GW_HTTP > "$WORK/gw-http.toml"
# [server.tls] goes after the whole [server] table, before [upstream].
render $GW_HTTPS | awk -v c="$WORK/cert.pem" -v k="$WORK/key.pem" \
  '/^\[upstream\]/ {print "[server.tls]\ncert = \"file:" c "\"\nkey = \"file:" k "\"\n"} {print}' > "$WORK/gw-https.toml"
# Two processes, so that neither run pays for the other's listener.
RUST_LOG=warn "$BIN" --config "$WORK/gw-http.toml" > gw-http.log 2>&1 & PIDS+=($!)
RUST_LOG=warn "$BIN" --config "$WORK/gw-https.toml" > gw-https.log 2>&1 & PIDS+=($!)

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
for p in $UPSTREAM_PORT $NG_HTTP $NG_HTTPS $GW_HTTP $GW_HTTPS; do wait_port $p || exit 1; done

TOKEN=$(python3 "$SHARED/make_token.py" --secret "$BENCH_APP_SECRET" --user bench-user-1 --exp-in 86400)
PATHQ="/channels/messaging/general?api_key=bench-key"
url() {
  case $1 in
    gw-http) echo "http://127.0.0.1:$GW_HTTP$PATHQ" ;;
    gw-https|gw-hs) echo "https://127.0.0.1:$GW_HTTPS$PATHQ" ;;
    nginx-http) echo "http://127.0.0.1:$NG_HTTP$PATHQ" ;;
    nginx-https|nginx-hs) echo "https://127.0.0.1:$NG_HTTPS$PATHQ" ;;
  esac
}
extra() { case $1 in *-hs) echo "Connection: close" ;; *) echo "X-Bench: 1" ;; esac; }

# Correctness first: each target answers 200 with the upstream's body.
for t in gw-http gw-https nginx-http nginx-https; do
  code=$(curl -sk -o /dev/null -w '%{http_code} %{http_version}' -H "Authorization: Bearer $TOKEN" "$(url $t)")
  echo "check $t: $code"
done

TARGETS=(gw-http gw-https nginx-http nginx-https)
[[ $HS == 1 ]] && TARGETS+=(gw-hs nginx-hs)
printf 'rep\ttarget\treq_s\tp50\tp99\tnon2xx\terrors\n' > results.tsv
n=${#TARGETS[@]}
for rep in $(seq "$REPS"); do
  for i in $(seq 0 $((n - 1))); do
    t=${TARGETS[$(((i + rep - 1) % n))]}
    timeout 60 wrk -t1 -c"$CONNS" -d"$WARMUP" -H "Authorization: Bearer $TOKEN" -H "$(extra $t)" "$(url $t)" > /dev/null
    timeout 120 wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" -H "$(extra $t)" "$(url $t)" > "wrk-$t-$rep.txt"
    awk -v rep="$rep" -v t="$t" '
      /Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
      /Non-2xx/ {n=$NF} /Socket errors/ {e=$0}
      END {gsub(/^ +/, "", e); printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rep, t, r, p50, p99, (n==""?0:n), (e==""?"-":e)}' "wrk-$t-$rep.txt" | tee -a results.tsv
  done
done

echo
echo "median req/s per target (run dir: $WORK)"
for t in "${TARGETS[@]}"; do
  awk -F'\t' -v t="$t" '$2 == t {print $3}' results.tsv | sort -n | awk -v t="$t" '{a[NR]=$1} END {printf "%-12s %s (min %s, max %s)\n", t, a[int((NR+1)/2)], a[1], a[NR]}'
done
