#!/usr/bin/env bash
# Installs what building and testing stream-gateway needs on a fresh Debian
# machine, and nothing when it is already there:
#   - cmake (pingora's zlib-ng build), a C compiler, pkg-config
#   - ca-certificates (upstream TLS verification uses the system CA store)
#   - redis-server (integration tests start a real one: tests/common/redis.rs)
# Rust itself (cargo, rustc) must already be installed (rustup).
# Exits non-zero with a message when something is missing and cannot be installed.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[[ -d /etc/ssl/certs ]] || need+=(ca-certificates)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)

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
