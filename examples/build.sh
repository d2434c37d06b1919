#!/usr/bin/env bash
# Builds every example component for wasm32-wasip2 (release) and copies each
# NAME.wasm beside its app.toml as examples/NAME/NAME.wasm, the path the
# manifests name. Runs from any directory; honours CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=wasm32-wasip2

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

cargo build --manifest-path "$here/Cargo.toml" --workspace --release --target "$target"

# Ask cargo where it put things: that covers CARGO_TARGET_DIR (relative or
# absolute) and any build.target-dir setting alike.
target_dir="$(cargo metadata --manifest-path "$here/Cargo.toml" --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "$target_dir" ]]; then
    echo "build.sh: could not find cargo's target directory" >&2
    exit 1
fi

for manifest in "$here"/*/Cargo.toml; do
    dir="$(dirname "$manifest")"
    name="$(basename "$dir")"
    artifact="$target_dir/$target/release/${name//-/_}.wasm"
    if [[ ! -f "$artifact" ]]; then
        echo "build.sh: $artifact not found (is $name a cdylib named after its directory?)" >&2
        exit 1
    fi
    cp "$artifact" "$dir/$name.wasm"
    echo "built $dir/$name.wasm ($(wc -c <"$dir/$name.wasm") bytes)"
done
