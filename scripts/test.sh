#!/usr/bin/env bash
# Runs every test: installs prerequisites, builds the example components (a fresh
# clone has no .wasm files), then runs the whole workspace's tests, the
# end-to-end ones (which start real `reef` processes) included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/prereqs.sh
examples/build.sh
# The partition test needs a Docker engine; without one it skips, and cargo hides
# what a passing test prints, so say it here where it shows.
if ! docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; then
    echo "*** WARNING: no Docker engine answers: the Docker partition test will SKIP ***" >&2
fi
cargo test --workspace --all-targets "$@"
