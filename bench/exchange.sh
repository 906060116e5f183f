#!/bin/sh
# Cross-department reads through two gateways against direct reads, in one run, on a local
# three-department cluster (deploy/local-cluster.sh with QIANLIAN_GATEWAYS=1, release build):
#   direct     housing calls market regulation's gateway (node 1) with its own certificate
#   forwarded  housing calls its own gateway (node 3), which forwards to node 1 over mutual TLS;
#              both gateways notarize their side
# Every read is allowed for `permit-review` with the fields that purpose discloses.
#
#   bench/exchange.sh [SECONDS] [CLIENTS...]     (default 5 s per point; 1 16 64 clients)
set -eu
secs=${1:-5}
[ $# -gt 0 ] && shift
clients=${*:-1 16 64}
here=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qianlian/target}
(cd "$here" && cargo build --release --locked --bin qianlian >/dev/null)
bin=$CARGO_TARGET_DIR/release/qianlian
work=$(mktemp -d)
base=7631
cleanup() {
    QIANLIAN_CLUSTER_DIR=$work QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=$base \
        "$here/deploy/local-cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
QIANLIAN_CLUSTER_DIR=$work QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=$base QIANLIAN_GATEWAYS=1 \
    "$here/deploy/local-cluster.sh" start >/dev/null
owner=https://127.0.0.1:$base
consumer=https://127.0.0.1:$((base + 2))
# The record read, stored by its owner through its own gateway (a valid credit code).
key=93520100005YDFU029
"$bin" client --dev-dir "$work" --as market-regulation --endpoint "$owner" \
    put enterprise-registration "$key" \
    --json '{"name":"贵州黔云数据科技有限公司","status":"存续","legal_representative_id":"11010519491231002X"}' >/dev/null
echo "path | clients | result"
for c in $clients; do
    for path in direct forwarded; do
        ep=$owner; [ "$path" = forwarded ] && ep=$consumer
        line=$(RUST_LOG=warn "$bin" bench --dev-dir "$work" --endpoint "$ep" --as housing \
            --workload read --purpose permit-review --key "$key" \
            --clients "$c" --seconds "$secs" --warmup 2)
        echo "$path | $c | ${line#*: }"
    done
done
