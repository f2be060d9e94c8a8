#!/usr/bin/env bash
# Installs what building and testing stream-gateway needs on a fresh Debian
# machine, and nothing when it is already there:
#   - cmake (pingora's zlib-ng build), a C compiler, pkg-config
#   - ca-certificates (upstream TLS verification uses the system CA store)
#   - redis-server (integration tests start a real one: tests/common/redis.rs;
#     with --cluster-enabled and --sentinel too: tests/common/redis_cluster.rs)
#   - redis-tools, for redis-cli (`redis-cli --cluster create` joins the test cluster)
#   - chromium (Debian's, /usr/bin/chromium: tests/sdk_browser.rs drives it headless)
# Rust itself (cargo, rustc) and Node.js 18+ with npm (tests/sdk: the official JS
# SDK tests, which run `npm ci` themselves) must already be installed.
# Exits non-zero with a message when something is missing and cannot be installed.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[[ -d /etc/ssl/certs ]] || need+=(ca-certificates)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
[[ -x /usr/bin/chromium ]] || need+=(chromium)

if ((${#need[@]})); then
  echo "setup: installing ${need[*]} (Debian packages)" >&2
  if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "setup: need root (or sudo) to apt-get install ${need[*]}; install them and re-run" >&2; exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no apt-get here; install ${need[*]} with your package manager and re-run" >&2; exit 1
  fi
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
node_hint="install Node.js 18 or newer with npm (Debian: apt-get install nodejs npm) and re-run"
command -v node >/dev/null 2>&1 || { echo "setup: node not found; $node_hint" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup: npm not found; $node_hint" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 18)); then
  echo "setup: node $(node --version 2>/dev/null) is too old for the SDK tests; $node_hint" >&2; exit 1
fi
