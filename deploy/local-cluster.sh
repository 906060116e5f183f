#!/bin/sh
# Three Qianlian nodes as processes on 127.0.0.1, each with its own data folder and port.
#
#   deploy/local-cluster.sh start    generate PKI and configs (first time), start, form the cluster
#   deploy/local-cluster.sh status   processes and Raft membership
#   deploy/local-cluster.sh stop     stop the three nodes (SIGTERM), keep their data
#
# Environment: QIANLIAN_CLUSTER_DIR (default ./qianlian-cluster), QIANLIAN_BIN (default: the
# binary `make build` writes), QIANLIAN_BASE_PORT (default 7401: nodes use 7401, 7402, 7403),
# QIANLIAN_GATEWAYS=1: each node is one department's gateway (1 market-regulation,
# 2 natural-resources, 3 housing), serves that department's datasets and forwards its requests
# for others' data to their gateways, named in the directory applied after `cluster init`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dir=${QIANLIAN_CLUSTER_DIR:-$PWD/qianlian-cluster}
bin=${QIANLIAN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/qianlian/target}/debug/qianlian}
base=${QIANLIAN_BASE_PORT:-7401}
nodes="1 2 3"
gateways=${QIANLIAN_GATEWAYS:-}
unset QIANLIAN_GATEWAYS
dept() { case $1 in 1) echo market-regulation ;; 2) echo natural-resources ;; 3) echo housing ;; esac; }

[ -x "$bin" ] || { echo "no qianlian binary at $bin: run \`make build\` or set QIANLIAN_BIN" >&2; exit 1; }

port() { echo $((base + $1 - 1)); }

ops() {
    "$bin" cluster --ca "$dir/pki/ca.crt" --cert "$dir/pki/clients/ops.crt" \
        --key "$dir/pki/clients/ops.key" --endpoint "https://127.0.0.1:$(port 1)" "$@"
}

running() { [ -f "$dir/node-$1/pid" ] && kill -0 "$(cat "$dir/node-$1/pid")" 2>/dev/null; }

prepare() {
    mkdir -p "$dir"
    # A gateway node's certificate names its department: other gateways forward to it only then,
    # and it may forward to the leader only its own department's records.
    node_args=""
    for n in $nodes; do
        if [ -n "$gateways" ]; then node_args="$node_args --node node-$n=$(dept "$n")"
        else node_args="$node_args --node node-$n"; fi
    done
    # shellcheck disable=SC2086
    "$bin" pki init --out "$dir/pki" --trust-domain gov.example \
        --dept market-regulation --dept natural-resources --dept housing \
        --inspector audit-office --operator ops $node_args >/dev/null
    mkdir -p "$dir/policies"
    [ -f "$dir/policies/model.conf" ] || cp "$here/../policies/model.conf" "$dir/policies/"
    [ -f "$dir/policies/policy.csv" ] || cp "$here/../policies/policy.csv" "$dir/policies/"
    for n in $nodes; do
        mkdir -p "$dir/node-$n"
        [ -f "$dir/node-$n/node.toml" ] && continue
        cat >"$dir/node-$n/node.toml" <<CONF
node_id = $n
listen = "127.0.0.1:$(port "$n")"
data_dir = "data"
trust_domain = "gov.example"

[tls]
ca = "../pki/ca.crt"
cert = "../pki/nodes/node-$n.crt"
key = "../pki/nodes/node-$n.key"

[policy]
model = "../policies/model.conf"
rules = "../policies/policy.csv"

[checkpoint]
signing_key = "../pki/nodes/node-$n.note.key"

[licenses]
directory = "../pki/departments.toml"
signing_keys = ["../pki/departments/market-regulation.license.key", "../pki/departments/natural-resources.license.key", "../pki/departments/housing.license.key"]
subject_key = "../pki/subject.key"
trust_node_keys = ["../pki/nodes/node-1.note.pub", "../pki/nodes/node-2.note.pub", "../pki/nodes/node-3.note.pub"]
min_cosigners = 2
CONF
        if [ -n "$gateways" ]; then
            cat >>"$dir/node-$n/node.toml" <<CONF

[gateway]
department = "$(dept "$n")"
client_cert = "../pki/clients/$(dept "$n").crt"
client_key = "../pki/clients/$(dept "$n").key"
CONF
        fi
    done
}

# The directory with every department's gateway address, applied to the cluster.
apply_gateways() {
    cp "$dir/pki/departments.toml" "$dir/directory.toml"
    for n in $nodes; do
        sed -i "/^id = \"$(dept "$n")\"\$/a gateway = \"https://127.0.0.1:$(port "$n")\"" "$dir/directory.toml"
    done
    "$bin" directory --ca "$dir/pki/ca.crt" --cert "$dir/pki/clients/ops.crt" \
        --key "$dir/pki/clients/ops.key" --endpoint "https://127.0.0.1:$(port 1)" \
        apply "$dir/directory.toml"
}

start() {
    prepare
    for n in $nodes; do
        if running "$n"; then echo "node $n already running (pid $(cat "$dir/node-$n/pid"))"; continue; fi
        : >"$dir/node-$n/stdout"
        "$bin" serve --config "$dir/node-$n/node.toml" >"$dir/node-$n/stdout" 2>>"$dir/node-$n/node.log" &
        echo $! >"$dir/node-$n/pid"
    done
    for n in $nodes; do
        i=0
        until grep -q "ready on" "$dir/node-$n/stdout" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -gt 300 ] || ! running "$n"; then
                echo "node $n did not start; its log ($dir/node-$n/node.log):" >&2
                tail -n 20 "$dir/node-$n/node.log" >&2
                exit 1
            fi
            sleep 0.1
        done
        echo "node $n ready on https://127.0.0.1:$(port "$n") (pid $(cat "$dir/node-$n/pid"))"
    done
    if [ ! -f "$dir/initialised" ]; then
        ops init --node "1=https://127.0.0.1:$(port 1)" --node "2=https://127.0.0.1:$(port 2)" \
            --node "3=https://127.0.0.1:$(port 3)"
        [ -z "$gateways" ] || apply_gateways
        touch "$dir/initialised"
    fi
    ops status
}

stop() {
    for n in $nodes; do
        if running "$n"; then
            kill -TERM "$(cat "$dir/node-$n/pid")"
            i=0
            while running "$n" && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
            echo "node $n stopped"
        fi
        rm -f "$dir/node-$n/pid"
    done
}

status() {
    for n in $nodes; do
        if running "$n"; then echo "node $n running (pid $(cat "$dir/node-$n/pid"), port $(port "$n"))"
        else echo "node $n stopped"; fi
    done
    ops status || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
