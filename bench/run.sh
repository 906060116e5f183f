#!/bin/sh
# Throughput and latency percentiles of the gateway under closed-loop load, on one node and on a
# three-node cluster on loopback (release build):
#   put     notarized writes (PutRecord by the owner, fresh keys)
#   read    notarized reads (GetRecord; allowed on one node, a notarized refusal on the cluster)
#   issue   e-license issuance (sign, notarize, prove)
#   verify  online e-license verification
#
#   bench/run.sh [SECONDS]      (default 8 s measured per point, after 2 s of warm-up)
#
# Every call is a real request over mutual TLS: identity, policy decision, access record
# appended through Raft and fsynced on a majority, receipt returned. The load generator runs on
# the same machine and competes with the nodes for the CPU.
set -eu
secs=${1:-8}
here=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qianlian/target}
target=$CARGO_TARGET_DIR
(cd "$here" && cargo build --release --locked --bin qianlian >/dev/null)
bin=$target/release/qianlian
work=$(mktemp -d)
cleanup() {
    [ -n "${dev_pid:-}" ] && kill "$dev_pid" 2>/dev/null || true
    QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7611 \
        "$here/deploy/local-cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

run() { # label, dev dir, endpoints, identity, workload, extra args, client counts
    for c in ${7:-1 16 64 256}; do
        line=$(RUST_LOG=warn "$bin" bench --dev-dir "$2" --endpoint "$3" --as "$4" --workload "$5" \
            --clients "$c" --seconds "$secs" --warmup 2 $6)
        echo "$1 | $5 | $c | ${line#*: }"
    done
}

echo "setup | workload | clients | result"
RUST_LOG=warn "$bin" dev --dir "$work/dev" --listen 127.0.0.1:7610 >"$work/dev.out" 2>&1 &
dev_pid=$!
until grep -q "ready on" "$work/dev.out" 2>/dev/null; do sleep 0.2; done
run "1 node" "$work/dev" https://127.0.0.1:7610 market-regulation put ""
run "1 node" "$work/dev" https://127.0.0.1:7610 housing read "--purpose permit-review"
run "1 node" "$work/dev" https://127.0.0.1:7610 market-regulation issue "" "1 16 64"
run "1 node" "$work/dev" https://127.0.0.1:7610 market-regulation verify "" "1 16 64"
kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=""

QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7611 \
    "$here/deploy/local-cluster.sh" start >/dev/null
sleep 2
eps=https://127.0.0.1:7611,https://127.0.0.1:7612,https://127.0.0.1:7613
run "3 nodes" "$work/cluster" "$eps" market-regulation put ""
run "3 nodes" "$work/cluster" "$eps" housing read "--purpose marketing"
run "3 nodes" "$work/cluster" "$eps" market-regulation issue "" "64"
run "3 nodes" "$work/cluster" "$eps" market-regulation verify "" "64"
