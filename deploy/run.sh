#!/usr/bin/env bash
# Runs stream-gateway.
#
#   deploy/run.sh                         # development: the fake Stream on 127.0.0.1:3031
#                                         # plus the gateway with config/dev.toml
#   deploy/run.sh --config my.toml        # the gateway alone, with your config
#
# Installs build prerequisites (deploy/setup.sh), builds the release binary,
# then runs in the foreground; Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
cargo build --release --bin stream-gateway

if (($#)); then
  exec target/release/stream-gateway "$@"
fi

cargo build --release --example fake-stream
target/release/examples/fake-stream 127.0.0.1:3031 &
FAKE=$!
trap 'kill "$FAKE" 2>/dev/null; wait "$FAKE" 2>/dev/null' EXIT
target/release/stream-gateway check --config config/dev.toml
target/release/stream-gateway --config config/dev.toml
