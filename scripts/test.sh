#!/usr/bin/env bash
# Runs every test: installs prerequisites, builds the example components (a fresh
# clone has no .wasm files), then runs the whole workspace's tests, the
# end-to-end ones (which start real `reef` processes) included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/prereqs.sh
examples/build.sh
cargo test --workspace --all-targets "$@"
