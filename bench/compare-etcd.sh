#!/bin/sh
# Qianlian notarized reads side by side with etcd puts, on the same machine, same load shape:
#
#   bench/compare-etcd.sh [SECONDS] [CLIENTS...]     (default: 10 s measured, clients 1 64 256)
#   REPEATS=5 SPREAD_LIMIT=0.2 WARMUP=1 bench/compare-etcd.sh 8 64 256
#
# Every run is a closed-loop run of `qianlian bench` (WARMUP seconds of warm-up first, default
# 2). etcd: `--workload etcd-put` (etcd v3 KV.Put, plain gRPC, fsynced on a majority) with values
# as large as one of our encoded access records; Qianlian: `--workload read` (allowed GetRecord
# over mutual TLS: identity, policy decision, record store read, access record committed through
# Raft and fsynced on a majority) or the workload QIANLIAN_WORKLOAD names (e.g. denied-read).
# Setups: a 1-member etcd against `qianlian dev` (one node), a 3-member etcd against
# deploy/local-cluster.sh (three nodes), all on 127.0.0.1. Both systems of a setup run at once
# (the idle one costs little).
#
# Repeats: on a shared machine one run of a point (a setup and a client count) says little: the
# ratio Q/etcd of one point (3 nodes, 256 clients) has been seen at 1.57 and at 0.69 minutes
# apart. So each point is measured REPEATS times (default 3), interleaved: Qianlian, etcd,
# Qianlian, etcd, ...; each Qianlian run and the etcd run right after it form a pair, and the
# CSV row of each run carries its repeat number. Per point the summary gives, for throughput,
# p99 latency and node CPU per request (CPU seconds of the node processes, from `--node-pid`,
# over requests), the median ratio Q/etcd over the pairs with the lowest and the highest, and
# the one-node one-client p50 of both (medians, with lowest and highest).
#
# When a ratio cannot be concluded from: it is marked ⚠ and listed when its lowest and highest
# values fall on different sides of 1.0 (the pairs disagree on which system is ahead), or when
# (highest - lowest) / median exceeds SPREAD_LIMIT (default 0.25). One repeat gives no spread.
#
# Defaults: 10 s measured + 2 s warm-up per run, clients 1 64 256, 3 repeats: 2 setups x 3 client
# counts x 3 repeats x 2 systems = 36 runs of about 12.5 s, 7.5 minutes, plus one to two minutes
# for fio (two passes of 10,000 fdatasyncs: over a minute where one takes 3 ms) and starting the
# nodes: 9 to 10 minutes after the release build. The script prints its estimate first and the
# time taken with the results. Each extra client count adds 2.5 minutes, each extra repeat 2.5.
#
# The machine's state is printed with the results: the load average before and after, CPU steal
# over the whole run (from /proc/stat, as a percentage of all CPU time, where the kernel reports
# steal) and the fdatasync latency. The one-client target is stated against that fdatasync
# latency, measured before and after the runs with etcd's own disk check: fio writing 22 MiB in
# 2300-byte blocks to a new file in the same folder as the data, fdatasync after each; the mean
# of the two p50s is the figure.
#
# etcd comes from the distribution's packages (etcd-server, 3.4), fio likewise; both are
# installed if missing. QIANLIAN_BIN=path uses that qianlian binary instead of building the
# release one (a debug build's figures are not comparable). Ports:
# Qianlian 7620-7623, etcd 23790-23799 (clients) and 23800-23809 (peers). Everything started
# here (processes, data folders) is removed on exit. Raw figures: $OUT (default
# bench/compare-etcd.csv in the clone), one CSV row per run: its repeat number, the CPU steal
# during it (%, empty where not reported), then the columns of `qianlian bench --out x.csv`.
# bench/compare-etcd-summary.awk writes the summary from that file, and can be run on it again.
set -eu
secs=${1:-10}
[ $# -gt 0 ] && shift
clients=${*:-1 64 256}
warmup=${WARMUP:-2}
repeats=${REPEATS:-3}
spread_limit=${SPREAD_LIMIT:-0.25}
case $repeats in
    '' | *[!0-9]* | 0*) echo "REPEATS must be a whole number from 1: $repeats" >&2; exit 2 ;;
esac
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

if [ -n "${QIANLIAN_BIN:-}" ]; then
    bin=$(cd "$(dirname "$QIANLIAN_BIN")" 2>/dev/null && pwd)/$(basename "$QIANLIAN_BIN")
    [ -x "$bin" ] || { echo "QIANLIAN_BIN=$QIANLIAN_BIN is not an executable file" >&2; exit 1; }
else
    (cd "$here" && cargo build --release --locked --bin qianlian >/dev/null)
    bin=$CARGO_TARGET_DIR/release/qianlian
fi
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

cpu_ticks() { # "steal total" of /proc/stat's cpu line (USER_HZ ticks); steal is - where not reported
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9 && i <= NF; i++) t += $i
                       print (NF >= 9 ? $9 : "-"), t; exit }' /proc/stat 2>/dev/null || echo "- 0"
}

steal_pct() { # two cpu_ticks samples: the steal between them as % of all CPU time, or nothing
    echo "$1 $2" | awk '$1 != "-" && $3 != "-" && $4 > $2 { printf "%.1f", 100 * ($3 - $1) / ($4 - $2) }'
}

bench() { # label, repeat, node pids, then bench arguments; appends the run's row to $out and
    # prints its summary line to stderr. A failed run is reported and leaves no row.
    label=$1 repeat=$2 node_pids=$3
    shift 3
    pid_args=""
    for p in $node_pids; do pid_args="$pid_args --node-pid $p"; done
    rm -f "$work/run.csv"
    ticks=$(cpu_ticks)
    # shellcheck disable=SC2086
    if RUST_LOG=warn "$bin" bench --label "$label" --seconds "$secs" --warmup "$warmup" \
        --out "$work/run.csv" $pid_args "$@" >"$work/run.out"; then
        run_steal=$(steal_pct "$ticks" "$(cpu_ticks)")
        sed "s/^/$label #$repeat /" "$work/run.out" >&2
        [ -s "$out" ] || echo "repeat,steal_pct,$(head -1 "$work/run.csv")" >"$out"
        tail -n +2 "$work/run.csv" | sed "s/^/$repeat,$run_steal,/" >>"$out"
    else
        sed "s/^/$label #$repeat /" "$work/run.out" >&2
        echo "$label #$repeat: qianlian bench failed, no row for this run" >&2
    fi
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
    # For each client count, REPEATS pairs: Qianlian then etcd, back to back. The machine drifts
    # over minutes (other tenants, the disk); a pair taken together keeps most of that drift out
    # of its ratio, and the spread of the ratios over the pairs shows what is left.
    for c in $clients; do
        r=1
        while [ "$r" -le "$repeats" ]; do
            bench "qianlian-$1" "$r" "$2" --dev-dir "$4" --endpoint "$3" \
                --as housing --workload "$workload" --key "$key" --clients "$c"
            if [ -z "$record_bytes" ]; then
                # The size etcd's values get: one encoded access record of the run above.
                record_bytes=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "record_bytes") k = i }
                                        NR == 2 && k { print $k }' "$work/run.csv" 2>/dev/null || true)
                [ -n "$record_bytes" ] || { echo "no record size: did the first qianlian-1 run fail?" >&2; exit 1; }
                echo "access record: $record_bytes bytes encoded; etcd values get as many" >&2
            fi
            bench "etcd-$1" "$r" "$(etcd_pids "$1")" --workload etcd-put --etcd "$urls" \
                --value-size "$record_bytes" --clients "$c"
            r=$((r + 1))
        done
    done
}

# The machine before the runs, and what the runs will take.
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
ticks_before=$(cpu_ticks)
runs=$((4 * $(echo "$clients" | wc -w) * repeats))
echo "$runs runs (2 setups x client counts $clients x $repeats repeats x 2 systems):" \
    "$(awk -v n="$runs" -v s="$secs" -v w="$warmup" 'BEGIN { printf "%.1f", n * (s + w + 0.5) / 60 }')" \
    "minutes, plus one to two for fio and start-up" >&2

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
steal=$(steal_pct "$ticks_before" "$(cpu_ticks)")
if [ -n "$steal" ]; then steal="$steal% of CPU time over the run"; else steal="not reported by this kernel"; fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
took=$(($(date +%s) - started))

# The summary: per setup and client count, medians and spreads of the pairs' ratios.
echo
echo "Qianlian $workload (notarized, mTLS) vs etcd put, $secs s per run after $warmup s warm-up, $repeats repeats (Q, etcd, Q, etcd, ...); values of $record_bytes bytes"
[ -z "${QIANLIAN_BIN:-}" ] || echo "binary: $bin (QIANLIAN_BIN)"
echo
echo "Machine: $(nproc 2>/dev/null || echo "?") CPUs; load average (1, 5, 15 min) $load_before before, $load_after after;" \
    "fdatasync p50 $sync_before ms before, $sync_after ms after;" \
    "CPU steal $steal;" \
    "took $((took / 60)) min $((took % 60)) s"
echo
awk -F, -f "$here/bench/compare-etcd-summary.awk" -v spread="$spread_limit" \
    -v s1="$sync_before" -v s2="$sync_after" "$out"
echo
echo "raw figures: $out"
