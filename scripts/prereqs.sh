#!/usr/bin/env bash
# Installs what building reef needs beyond the Rust toolchain: libclang (bindgen
# for RocksDB's bindings), a C++ compiler (RocksDB itself) and the wasm32-wasip2
# target (the example components), and for the tests a real OCI registry
# (Debian's docker-registry, CNCF distribution 2.8), and protoc for containerd's
# gRPC bindings. Idempotent; sourced by the
# other scripts.
set -euo pipefail

need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
# containerd-client's generated gRPC code (the node's containerd runtime).
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
if ((${#need_apt[@]})); then
    echo "prereqs: installing ${need_apt[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
