# The summary of bench/compare-etcd.sh's CSV, in Markdown:
#
#   awk -F, -f bench/compare-etcd-summary.awk [-v spread=0.25] [-v s1=MS -v s2=MS] compare-etcd.csv
#
# The CSV has one row per run: `repeat` and `steal_pct` (CPU steal during the run, % of the
# machine's CPU time; empty where the kernel reports none), then the columns of `qianlian bench
# --out x.csv`. Columns are found by their header names. Labels name system and setup:
# `qianlian-3` is Qianlian on three nodes, `etcd-1` etcd with one member.
#
# A point is a setup and a client count. Its runs of the same repeat number (Qianlian and etcd,
# taken back to back) form a pair, and each pair gives three ratios Q/etcd: throughput, p99
# latency and node CPU per request (CPU seconds of the node processes / requests). Per point the
# table gives the median of each ratio over the pairs (the mean of the middle two for an even
# count) with the lowest and highest, and the medians of the figures themselves. A ratio is
# marked inconclusive (⚠) when its lowest and highest values fall on different sides of 1.0, or
# when (highest - lowest) / median exceeds `spread` (default 0.25).
#
# s1 and s2, the fdatasync p50 before and after the runs in ms, give the one-node one-client
# target: Qianlian's p50 at most 1.5 x their mean + 0.2 ms.
BEGIN {
    if (spread == "") spread = 0.25
    npoints = 0; nsetups = 0
}

NR == 1 {
    for (i = 1; i <= NF; i++) col[$i] = i
    split("repeat label clients requests errors throughput p50_ms p99_ms nodes_cpu_s", need, " ")
    for (i = 1; i in need; i++) {
        if (need[i] in col) continue
        print "no column " need[i] " in " FILENAME > "/dev/stderr"
        bad_header = 1
        exit 1
    }
    next
}

# "1 node, 1 client", "3 nodes, 64 clients".
function point_name(setup, c) {
    return sprintf("%s node%s, %s client%s", setup, setup + 0 > 1 ? "s" : "", c, c + 0 > 1 ? "s" : "")
}

{
    label = $col["label"]
    dash = match(label, /-[0-9]+$/)
    if (!dash) next
    sys = substr(label, 1, dash - 1); setup = substr(label, dash + 1)
    c = $col["clients"]; r = $col["repeat"]
    if (!((setup, c) in seen)) {
        seen[setup, c] = 1
        if (!(setup in setup_seen)) { setup_seen[setup] = 1; setups[++nsetups] = setup }
        npoints++; pt_setup[npoints] = setup; pt_clients[npoints] = c
    }
    if (r + 0 > maxrepeat) maxrepeat = r + 0
    k = sys SUBSEP setup SUBSEP c SUBSEP r
    have[k] = 1
    rps[k] = $col["throughput"] + 0; p50[k] = $col["p50_ms"] + 0; p99[k] = $col["p99_ms"] + 0
    req = $col["requests"] + 0; cpu = $col["nodes_cpu_s"]
    if (req > 0 && cpu != "") cpureq[k] = cpu / req * 1e6
    run = sprintf("%s #%s, %s", label, r, point_name(setup, c))
    if ($col["errors"] + 0 > 0) errs = errs sprintf("\n- %s: %s errors", run, $col["errors"])
    steal = ("steal_pct" in col) ? $col["steal_pct"] : ""
    if (steal != "" && (maxsteal == "" || steal + 0 > maxsteal + 0)) { maxsteal = steal; maxsteal_run = run }
}

# Sorts a[1..n] in place (a few values: insertion sort).
function sort(a, n,    i, j, v) {
    for (i = 2; i <= n; i++) {
        v = a[i]
        for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
        a[j + 1] = v
    }
}

function median(a, n) {
    sort(a, n)
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

# The median, lowest and highest of a[1..n] into st["med"], st["lo"], st["hi"]; n = 0 leaves "".
function stats(a, n) {
    st["med"] = st["lo"] = st["hi"] = ""
    if (n == 0) return
    st["med"] = median(a, n); st["lo"] = a[1]; st["hi"] = a[n]
}

# The reason a ratio's spread is too wide to conclude, or "".
function inconclusive(lo, hi, med) {
    if (lo < 1 && hi > 1) return sprintf("%.2f to %.2f: on both sides of 1.0", lo, hi)
    if (med <= 0) return "median 0"
    if ((hi - lo) / med > spread)
        return sprintf("%.2f to %.2f: (highest - lowest) / median = %.3f > %s",
                       lo, hi, (hi - lo) / med, spread)
    return ""
}

# A ratio cell: "median (lowest–highest)", marked when inconclusive; `what` names it in warnings.
function ratio_cell(a, n, what, where,    why) {
    if (n == 0) return "-"
    stats(a, n)
    why = inconclusive(st["lo"], st["hi"], st["med"])
    if (why != "") { warnings = warnings sprintf("\n- %s, %s: %s", where, what, why); nwarn++ }
    nratios++
    return sprintf("%.2f (%.2f–%.2f)%s", st["med"], st["lo"], st["hi"], why != "" ? " ⚠" : "")
}

# Whether both runs of repeat r of a point left a row.
function paired(setup, c, r) {
    return (("qianlian" SUBSEP setup SUBSEP c SUBSEP r) in have) && (("etcd" SUBSEP setup SUBSEP c SUBSEP r) in have)
}

# "Q / etcd" of the medians of one figure over the pairs of a point.
function pair_cell(fig, setup, c, fmt,    r, n, a, out, s, k) {
    out = ""
    split("qianlian etcd", syss, " ")
    for (s = 1; s <= 2; s++) {
        n = 0; delete a
        for (r = 1; r <= maxrepeat; r++) {
            if (!paired(setup, c, r)) continue
            k = syss[s] SUBSEP setup SUBSEP c SUBSEP r
            if (fig == "rps" && k in rps) a[++n] = rps[k]
            if (fig == "p99" && k in p99) a[++n] = p99[k]
            if (fig == "cpu" && k in cpureq) a[++n] = cpureq[k]
        }
        out = out (s > 1 ? " / " : "") (n ? sprintf(fmt, median(a, n)) : "-")
    }
    return out
}

END {
    if (bad_header) exit 1
    if (npoints == 0) { print "no runs in the CSV"; exit 1 }
    printf "| setup | clients | pairs | req/s Q / etcd | throughput Q/etcd | p99 ms Q / etcd | p99 Q/etcd"
    print " | node CPU µs/req Q / etcd | CPU per request Q/etcd |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (s = 1; s <= nsetups; s++) {
        for (p = 1; p <= npoints; p++) {
            if (pt_setup[p] != setups[s]) continue
            setup = pt_setup[p]; c = pt_clients[p]
            nt = nl = nc = np = 0; delete t; delete l; delete u
            for (r = 1; r <= maxrepeat; r++) {
                if (!paired(setup, c, r)) continue
                q = "qianlian" SUBSEP setup SUBSEP c SUBSEP r; e = "etcd" SUBSEP setup SUBSEP c SUBSEP r
                np++
                if (rps[e] > 0) t[++nt] = rps[q] / rps[e]
                if (p99[e] > 0) l[++nl] = p99[q] / p99[e]
                if ((q in cpureq) && (e in cpureq) && cpureq[e] > 0) u[++nc] = cpureq[q] / cpureq[e]
            }
            where = point_name(setup, c)
            if (np < maxrepeat)
                notes = notes sprintf("\n- %s: %d of %d pairs (a run failed or left no row)%s",
                                      where, np, maxrepeat, np == 1 ? ", no spread" : "")
            printf "| %s node%s | %s | %d | %s | %s | %s | %s | %s | %s |\n",
                setup, (setup + 0 > 1 ? "s" : ""), c, np,
                pair_cell("rps", setup, c, "%.0f"), ratio_cell(t, nt, "throughput Q/etcd", where),
                pair_cell("p99", setup, c, "%.2f"), ratio_cell(l, nl, "p99 Q/etcd", where),
                pair_cell("cpu", setup, c, "%.0f"), ratio_cell(u, nc, "CPU per request Q/etcd", where)
        }
    }
    print ""
    print "Ratios: median over the pairs (lowest–highest). Throughput above 1.0, p99 and CPU below 1.0"
    print "favour Qianlian. Figures: medians over the same pairs' runs."
    if (maxrepeat == 1)
        print "\nOne repeat: the ratios have no spread; nothing here says how far they would move on another run."
    rule = "lowest and highest on both sides of 1.0, or (highest - lowest) / median > " spread
    if (nwarn > 0)
        print "\n⚠ spread too wide to conclude (" rule "): " nwarn " of " nratios " ratios:" warnings
    else if (maxrepeat > 1)
        print "\nNo ratio's spread is too wide to conclude (" rule ")."
    if (notes != "") print "\nincomplete points:" notes
    if (errs != "") print "\nruns with errors (see the CSV):" errs
    if (maxsteal != "") printf "\nhighest CPU steal in one run: %.1f%% (%s)\n", maxsteal, maxsteal_run

    # One client, one node: the latency target.
    nq = ne = 0; delete a; delete b
    for (r = 1; r <= maxrepeat; r++) {
        q = "qianlian" SUBSEP 1 SUBSEP 1 SUBSEP r; e = "etcd" SUBSEP 1 SUBSEP 1 SUBSEP r
        if (q in p50) a[++nq] = p50[q]
        if (e in p50) b[++ne] = p50[e]
    }
    if (nq > 0) {
        stats(a, nq); qm = st["med"]; ql = st["lo"]; qh = st["hi"]
        line = sprintf("one client, one node: p50 Qianlian %.2f ms (%.2f–%.2f)", qm, ql, qh)
        if (ne > 0) {
            stats(b, ne)
            line = line sprintf(", etcd %.2f ms (%.2f–%.2f)", st["med"], st["lo"], st["hi"])
        }
        if (s1 != "" && s2 != "") {
            sync = (s1 + s2) / 2; target = 1.5 * sync + 0.2
            line = line sprintf("; fdatasync p50 %.3f and %.3f ms (before, after), target 1.5 x %.3f + 0.2 = %.2f ms: %s",
                                s1, s2, sync, target, qm <= target ? "met" : "not met")
            if (ql <= target && qh > target) line = line " (the repeats fall on both sides of it)"
        }
        print "\n" line
    }
}
