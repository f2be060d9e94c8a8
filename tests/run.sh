#!/usr/bin/env bash
# The whole test suite: prerequisites, formatting, lints, then every test
# (unit tests, and integration tests that start the built gateway, a fake
# Stream upstream and real sockets on 127.0.0.1, among them the official JS SDK
# in Node and in headless Chromium: tests/sdk_node.rs, tests/sdk_browser.rs, which
# run `npm ci` in tests/sdk when needed). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
echo "tests/run.sh: all passed"
