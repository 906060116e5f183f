#!/bin/sh
# Throughput and latency percentiles of the gateway under closed-loop load, on one node and on a
# three-node cluster on loopback (release build):
#   put     notarized writes (PutRecord by the owner, fresh keys)
#   read         notarized reads (GetRecord, allowed: one node, whose dev samples it reads)
#   denied-read  notarized refusals (GetRecord for a purpose no rule grants)
#   issue   e-license issuance (sign, notarize, prove)
#   verify  online e-license verification
#
#   bench/run.sh [SECONDS]      (default 8 s measured per point, after 2 s of warm-up)
#
# Raw figures (one CSV row per point, CPU seconds of the generator and the nodes included) go
# to $OUT, default bench/results.csv in the clone.
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
out=${OUT:-$here/bench/results.csv}
rm -f "$out"
cleanup() {
    [ -n "${dev_pid:-}" ] && kill "$dev_pid" 2>/dev/null || true
    QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7611 \
        "$here/deploy/local-cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

run() { # label, dev dir, endpoints, identity, workload, extra args, client counts
    for c in ${7:-1 16 64 256}; do
        pid_args=""
        for p in $node_pids; do pid_args="$pid_args --node-pid $p"; done
        line=$(RUST_LOG=warn "$bin" bench --dev-dir "$2" --endpoint "$3" --as "$4" --workload "$5" \
            --clients "$c" --seconds "$secs" --warmup 2 --label "$1" --out "$out" $pid_args $6)
        echo "$1 | $5 | $c | ${line#*: }"
    done
}

echo "setup | workload | clients | result"
RUST_LOG=warn "$bin" dev --dir "$work/dev" --listen 127.0.0.1:7610 >"$work/dev.out" 2>&1 &
dev_pid=$!
node_pids=$dev_pid
until grep -q "ready on" "$work/dev.out" 2>/dev/null; do sleep 0.2; done
run "1 node" "$work/dev" https://127.0.0.1:7610 market-regulation put ""
run "1 node" "$work/dev" https://127.0.0.1:7610 housing read "--purpose permit-review"
run "1 node" "$work/dev" https://127.0.0.1:7610 housing denied-read ""
run "1 node" "$work/dev" https://127.0.0.1:7610 market-regulation issue "" "1 16 64"
run "1 node" "$work/dev" https://127.0.0.1:7610 market-regulation verify "" "1 16 64"
kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=""

RUST_LOG=warn QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7611 \
    "$here/deploy/local-cluster.sh" start >/dev/null
sleep 2
node_pids=$(cat "$work/cluster/node-1/pid" "$work/cluster/node-2/pid" "$work/cluster/node-3/pid")
eps=https://127.0.0.1:7611,https://127.0.0.1:7612,https://127.0.0.1:7613
run "3 nodes" "$work/cluster" "$eps" market-regulation put ""
run "3 nodes" "$work/cluster" "$eps" housing denied-read ""
run "3 nodes" "$work/cluster" "$eps" market-regulation issue "" "64"
run "3 nodes" "$work/cluster" "$eps" market-regulation verify "" "64"
