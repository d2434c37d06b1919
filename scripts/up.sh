#!/usr/bin/env bash
# Builds reef and the examples, then starts a one-process dev cluster serving the
# hello example on 127.0.0.1:8080 (API on 127.0.0.1:7070). Extra arguments go to
# `reef up` (e.g. --data-dir DIR, --ingress 127.0.0.1:0).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/prereqs.sh
examples/build.sh
exec cargo run --bin reef -- up --apply examples/hello/app.toml "$@"
