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
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
# schemathesis (PyPI) fuzzes the live API against /openapi.json (tests/openapi.rs);
# installed once into a venv in the target dir, and required from here on.
venv="$target_dir/schemathesis-venv"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    echo "test: installing schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis>=4,<5"
fi
export REEF_REQUIRE_SCHEMATHESIS=1
# containerd (tests/containerd.rs) runs a private instance, which needs root.
if command -v containerd >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    export REEF_REQUIRE_CONTAINERD=1
else
    echo "*** WARNING: no containerd, or not root: the containerd tests will SKIP ***" >&2
fi
# prereqs.sh installed docker-registry: the OCI tests (tests/oci.rs) must run, not skip.
export REEF_REQUIRE_REGISTRY=1
# Figures tests measured (printed by them, hidden by cargo when they pass).
target_tmp="$target_dir/tmp"
rm -f "$target_tmp/figures.txt"
cargo test --workspace --all-targets "$@"
if [[ -s "$target_tmp/figures.txt" ]]; then
    echo "figures measured by the tests:"
    sed 's/^/  /' "$target_tmp/figures.txt"
fi
