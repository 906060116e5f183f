#!/bin/sh
# Build the `qianlian:latest` image FROM scratch: the release binary plus exactly the shared
# libraries `ldd` says it needs, copied from this machine (no base image is pulled).
#   deploy/build-image.sh [TAG]
set -eu
tag=${1:-qianlian:latest}
here=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/qianlian/target}"
(cd "$here" && cargo build --release --locked --bin qianlian)
bin=$CARGO_TARGET_DIR/release/qianlian
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/writable/data" "$ctx/writable/pki" "$ctx/writable/tmp"
chmod 0755 "$ctx/writable/data" "$ctx/writable/pki"
chmod 1777 "$ctx/writable/tmp"
cp "$bin" "$ctx/rootfs/usr/local/bin/qianlian"
# Every library with its resolved path, and the dynamic loader itself.
ldd "$bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$here/deploy/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx"
echo "built $tag"
