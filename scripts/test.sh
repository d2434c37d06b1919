#!/usr/bin/env bash
# Runs every test: builds the example components (a fresh clone has no .wasm),
# then the whole workspace's tests, end-to-end ones included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
examples/build.sh
cargo test --workspace --all-targets "$@"
