#!/bin/sh
# Install the system packages the build needs, if they are missing (Debian/Ubuntu).
#   librocksdb-dev  RocksDB 7.8, linked instead of compiling the bundled C++ sources
#   libclang-dev    bindgen generates the RocksDB bindings
set -eu
need=""
for pkg in librocksdb-dev libclang-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "installing:$need"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
