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
# Figures tests measured (printed by them, hidden by cargo when they pass).
target_tmp="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/tmp"
rm -f "$target_tmp/figures.txt"
cargo test --workspace --all-targets "$@"
if [[ -s "$target_tmp/figures.txt" ]]; then
    echo "figures measured by the tests:"
    sed 's/^/  /' "$target_tmp/figures.txt"
fi
