#!/bin/sh
# Qianlian notarized reads side by side with etcd puts, on the same machine, same load shape:
#
#   bench/compare-etcd.sh [SECONDS] [CLIENTS...]     (default: 10 s measured, clients 1 16 64 256)
#
# Every point is a closed-loop run of `qianlian bench` (WARMUP seconds of warm-up first, default
# 2). etcd: `--workload etcd-put` (etcd v3 KV.Put, plain gRPC, fsynced on a majority) with values
# as large as one of our encoded access records; Qianlian: `--workload read` (allowed GetRecord
# over mutual TLS: identity, policy decision, record store read, access record committed through
# Raft and fsynced on a majority) or the workload QIANLIAN_WORKLOAD names (e.g. denied-read).
# Setups: a 1-member etcd against `qianlian dev` (one node), a 3-member etcd against
# deploy/local-cluster.sh (three nodes), all on 127.0.0.1. Both systems of a setup run at once
# (the idle one costs little), and each client count is measured Qianlian then etcd, back to back.
#
# The one-client target is stated against the machine's fdatasync latency, measured here before
# and after the runs with etcd's own disk check: fio writing 22 MiB in 2300-byte blocks to a new
# file in the same folder as the data, fdatasync after each; the p50 of the two is the figure.
#
# etcd comes from the distribution's packages (etcd-server, 3.4), fio likewise; both are
# installed if missing. Ports:
# Qianlian 7620-7623, etcd 23790-23799 (clients) and 23800-23809 (peers). Everything started
# here (processes, data folders) is removed on exit. Raw figures: $OUT (default
# bench/compare-etcd.csv in the clone), one CSV row per run.
set -eu
secs=${1:-10}
[ $# -gt 0 ] && shift
clients=${*:-1 16 64 256}
warmup=${WARMUP:-2}
workload=${QIANLIAN_WORKLOAD:-read}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/bench/compare-etcd.csv}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/qianlian/target}"

# On a machine run by systemd the etcd package also enables its own member on port 2379; this
# script leaves that service alone and uses other ports.
missing=""
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
command -v fio >/dev/null 2>&1 || missing="$missing fio"
if [ -n "$missing" ]; then
    echo "installing$missing (Debian packages) ..." >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
etcd --version | head -1 >&2

(cd "$here" && cargo build --release --locked --bin qianlian >/dev/null)
bin=$CARGO_TARGET_DIR/release/qianlian
work=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7621 \
        "$here/deploy/local-cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -f "$out"

fdatasync_ms() { # the p50 of fio's fdatasync latencies, in ms, for etcd's disk check
    rm -rf "$work/fio"
    mkdir -p "$work/fio"
    fio --rw=write --ioengine=sync --fdatasync=1 --directory="$work/fio" --size=22m --bs=2300 \
        --name=fdatasync 2>/dev/null |
        sed -n '/sync percentiles/,/99.99th/p' | tr ',' '\n' |
        awk -F'[][]' '/50.00th/ { printf "%.3f", $2 / 1000; exit }'
    rm -rf "$work/fio"
}

bench() { # label, node pids, then bench arguments; prints the summary line to stderr
    label=$1 node_pids=$2
    shift 2
    pid_args=""
    for p in $node_pids; do pid_args="$pid_args --node-pid $p"; done
    # shellcheck disable=SC2086
    RUST_LOG=warn "$bin" bench --label "$label" --seconds "$secs" --warmup "$warmup" \
        --out "$out" $pid_args "$@" | sed "s/^/$label /" >&2
}

wait_for() { # file, text, what
    i=0
    until grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -le 300 ] || { echo "$3 did not start; see $1:" >&2; tail -20 "$1" >&2; exit 1; }
        sleep 0.1
    done
}

start_etcd() { # members; sets $urls to their client URLs
    n=$1 cluster="" urls=""
    for i in $(seq 1 "$n"); do
        cluster="${cluster:+$cluster,}m$i=http://127.0.0.1:$((23800 + i))"
    done
    for i in $(seq 1 "$n"); do
        d=$work/etcd$n/m$i
        mkdir -p "$d"
        etcd --name "m$i" --data-dir "$d/data" \
            --listen-client-urls "http://127.0.0.1:$((23790 + i))" \
            --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
            --listen-peer-urls "http://127.0.0.1:$((23800 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
            --initial-cluster "$cluster" --initial-cluster-token "qianlian-bench-$n" \
            --initial-cluster-state new --logger zap --log-level warn >"$d/log" 2>&1 &
        pids="$pids $!"
        echo $! >"$d/pid"
        urls="${urls:+$urls,}http://127.0.0.1:$((23790 + i))"
    done
}

etcd_pids() { for i in $(seq 1 "$1"); do cat "$work/etcd$1/m$i/pid"; done | tr '\n' ' '; }

stop_etcd() {
    for p in $(etcd_pids "$1"); do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

etcd_ready() { # members: start them and wait until a put commits
    start_etcd "$1"
    # Ready once a put commits (KV.Put through the bench client, which names an unreachable etcd).
    i=0
    until RUST_LOG=off "$bin" bench --workload etcd-put --etcd "$urls" --value-size 1 \
        --seconds 0.1 --warmup 0 >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -le 100 ] || { echo "etcd ($1 members) did not start; see $work/etcd$1/m1/log" >&2; exit 1; }
        sleep 0.2
    done
}

# The record to read: one enterprise registration, stored on every node that serves reads.
key=91520100000000000J
payload='{"name":"贵州黔云数据科技有限公司","status":"存续"}'
record_bytes=""

pairs() { # setup size (1 or 3), Qianlian node pids, endpoints, dev dir
    # For each client count, Qianlian then etcd, back to back: the machine drifts over minutes
    # (other tenants, the disk), and a pair taken together keeps that drift out of the ratio.
    for c in $clients; do
        bench "qianlian-$1" "$2" --dev-dir "$4" --endpoint "$3" \
            --as housing --workload "$workload" --key "$key" --clients "$c"
        if [ -z "$record_bytes" ]; then
            # The size etcd's values get: one encoded access record of the run above.
            record_bytes=$(awk -F, '$1 == "qianlian-1" && $16 != "" { print $16; exit }' "$out")
            [ -n "$record_bytes" ] || { echo "no record size in $out: did the qianlian-1 run fail?" >&2; exit 1; }
            echo "access record: $record_bytes bytes encoded; etcd values get as many" >&2
        fi
        bench "etcd-$1" "$(etcd_pids "$1")" --workload etcd-put --etcd "$urls" \
            --value-size "$record_bytes" --clients "$c"
    done
}

sync_before=$(fdatasync_ms)
[ -n "$sync_before" ] || { echo "fio printed no fdatasync percentiles" >&2; exit 1; }
echo "fdatasync p50 (fio, 2300-byte writes): $sync_before ms" >&2

# 1 node: qianlian dev and a 1-member etcd, both running, measured in turns.
RUST_LOG=warn "$bin" dev --dir "$work/dev" --listen 127.0.0.1:7620 >"$work/dev.out" 2>&1 &
dev_pid=$!
pids="$pids $dev_pid"
wait_for "$work/dev.out" "ready on" "qianlian dev"
RUST_LOG=warn "$bin" client --dev-dir "$work/dev" --endpoint https://127.0.0.1:7620 \
    --as market-regulation put enterprise-registration "$key" --json "$payload" >/dev/null
etcd_ready 1
pairs 1 "$dev_pid" https://127.0.0.1:7620 "$work/dev"
kill "$dev_pid"
wait "$dev_pid" 2>/dev/null || true
stop_etcd 1

# 3 nodes: deploy/local-cluster.sh and a 3-member etcd; the record stored on each node (each
# serves its own store). Logging at warn, like the one-node run and etcd (--log-level warn): at
# the default level every node also writes one log line per access, which etcd is not asked to do.
RUST_LOG=warn QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7621 \
    "$here/deploy/local-cluster.sh" start >"$work/cluster.out"
eps=""
for n in 1 2 3; do
    ep=https://127.0.0.1:$((7620 + n))
    eps="${eps:+$eps,}$ep"
    RUST_LOG=warn "$bin" client --dev-dir "$work/cluster" --endpoint "$ep" \
        --as market-regulation put enterprise-registration "$key" --json "$payload" >/dev/null
done
node_pids=$(cat "$work/cluster/node-1/pid" "$work/cluster/node-2/pid" "$work/cluster/node-3/pid" | tr '\n' ' ')
etcd_ready 3
pairs 3 "$node_pids" "$eps" "$work/cluster"
QIANLIAN_CLUSTER_DIR=$work/cluster QIANLIAN_BIN=$bin QIANLIAN_BASE_PORT=7621 \
    "$here/deploy/local-cluster.sh" stop >/dev/null
stop_etcd 3

sync_after=$(fdatasync_ms)
[ -n "$sync_after" ] || sync_after=$sync_before
echo "fdatasync p50 (fio, 2300-byte writes): $sync_after ms" >&2

# One table: per setup and client count, etcd and Qianlian side by side.
echo
echo "Qianlian $workload (notarized, mTLS) vs etcd put, $secs s per point after $warmup s warm-up; values of $record_bytes bytes"
echo
awk -F, '
    NR > 1 { key = $1 SUBSEP $3; rps[key] = $9; p50[key] = $10; p99[key] = $12; err[key] = $8
             cpu[key] = ($5 > 0 && $15 != "") ? sprintf("%.0f", $15 / $5 * 1e6) : "-"
             if ($8 > 0) bad = bad " " $1 "/" $3 " clients: " $8 " errors" }
    END {
        print "| setup | clients | etcd req/s | etcd p99 ms | Qianlian req/s | Qianlian p99 ms | throughput Q/etcd | p99 Q/etcd | node CPU µs/req etcd | node CPU µs/req Q |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        n = split(CLIENTS, cs, " ")
        for (s = 1; s <= 3; s += 2) {
            for (i = 1; i <= n; i++) {
                c = cs[i]; e = "etcd-" s SUBSEP c; q = "qianlian-" s SUBSEP c
                tr = (rps[e] > 0) ? sprintf("%.2f", rps[q] / rps[e]) : "-"
                lr = (p99[e] > 0) ? sprintf("%.2f", p99[q] / p99[e]) : "-"
                printf "| %d node%s | %s | %.0f | %.2f | %.0f | %.2f | %s | %s | %s | %s |\n", s, (s > 1 ? "s" : ""), c, rps[e], p99[e], rps[q], p99[q], tr, lr, cpu[e], cpu[q]
            }
        }
        if (bad != "") print "\nruns with errors (see the CSV):" bad
        e = "etcd-1" SUBSEP 1; q = "qianlian-1" SUBSEP 1
        if (q in p50) {
            sync = (S1 + S2) / 2; target = 1.5 * sync + 0.2
            printf "\none client, one node: p50 Qianlian %.2f ms, etcd %.2f ms; fdatasync p50 %.3f and %.3f ms (before, after), target 1.5 x %.3f + 0.2 = %.2f ms: %s\n", p50[q], p50[e], S1, S2, sync, target, (p50[q] <= target ? "met" : "not met")
        }
    }' CLIENTS="$clients" S1="$sync_before" S2="$sync_after" "$out"
echo
echo "raw figures: $out"
