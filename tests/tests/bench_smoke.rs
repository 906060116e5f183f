//! The load generator against a real dev node, briefly, so the harness cannot rot: its CSV and
//! JSON parse, allowed calls are served without errors, refusals are counted as notarized
//! refusals, a workload answered otherwise than it expects counts errors, and the CPU of the
//! generator and of the node is reported. etcd is measured too when it is installed.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qianlian_cli::bench::report::CSV_HEADER;
use support::*;

/// `qianlian dev` on a free port: the child and its endpoint.
fn start_dev(dir: &Path) -> (Child, String) {
    let mut child = Command::new(bin())
        .args(["dev", "--dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dev");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("ready on ").nth(1) {
            let endpoint = rest.split_whitespace().next().expect("endpoint").to_owned();
            return (child, endpoint);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("qianlian dev did not become ready");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `qianlian bench` briefly with `args`; panics with its output if it fails.
fn bench(args: &[&str]) -> String {
    let mut all = vec!["bench", "--seconds", "1", "--warmup", "0.2"];
    all.extend_from_slice(args);
    let out = cli(&all);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The rows of a CSV written by `--out x.csv`, as (column, value) maps.
fn csv_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("csv written");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert_eq!(header, CSV_HEADER);
    let columns: Vec<&str> = header.split(',').collect();
    lines
        .map(|l| {
            // The smoke runs have no quoted text fields (no errors), so a plain split is exact.
            let values: Vec<&str> = l.split(',').collect();
            assert_eq!(values.len(), columns.len(), "row {l}");
            columns
                .iter()
                .zip(values)
                .map(|(c, v)| (c.to_string(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::BTreeMap<String, String>, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column} = {:?} is not a number", row[column]))
}

#[test]
fn bench_smoke_reports_served_denied_and_failed_calls_with_cpu_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("dev");
    let (child, endpoint) = start_dev(&dir);
    let node = Killed(child);
    let pid = node.0.id().to_string();
    let dev = dir.display().to_string();
    let csv = tmp.path().join("runs.csv");
    let csv_s = csv.display().to_string();
    let common = [
        "--dev-dir",
        dev.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--as",
        "housing",
        "--clients",
        "2",
        "--node-pid",
        pid.as_str(),
    ];

    // Allowed notarized reads, appended to a CSV.
    let line = bench(&[&common[..], &["--label", "smoke", "--out", &csv_s]].concat());
    assert!(line.contains("0 errors"), "{line}");
    // Denied reads: every call a notarized refusal, into the same CSV.
    let line = bench(&[&common[..], &["--workload", "denied-read", "--out", &csv_s]].concat());
    assert!(line.contains("notarized refusals"), "{line}");

    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 2, "one row per run, one header");
    let (read, denied) = (&rows[0], &rows[1]);
    assert_eq!(read["label"], "smoke");
    assert_eq!(
        (read["workload"].as_str(), read["clients"].as_str()),
        ("read", "2")
    );
    assert!(num(read, "requests") > 0.0 && num(read, "throughput") > 0.0);
    assert_eq!(num(read, "ok"), num(read, "requests"));
    assert_eq!((num(read, "denied"), num(read, "errors")), (0.0, 0.0));
    assert!(num(read, "p50_ms") > 0.0);
    assert!(num(read, "p50_ms") <= num(read, "p99_ms"));
    assert!(num(read, "p99_ms") <= num(read, "max_ms"));
    // Every served call is a TLS request and a notarized record: the node works for it.
    assert!(num(read, "nodes_cpu_s") > 0.0, "{read:?}");
    assert!(num(read, "generator_cpu_s") > 0.0, "{read:?}");
    assert!(
        num(read, "record_bytes") > 100.0,
        "an access record: {read:?}"
    );
    assert_eq!(denied["workload"], "denied-read");
    assert!(num(denied, "denied") > 0.0);
    assert_eq!(num(denied, "denied"), num(denied, "requests"));
    assert_eq!((num(denied, "ok"), num(denied, "errors")), (0.0, 0.0));

    // Audit queries as the inspector, after the reads above put accesses by housing on record.
    let audit = tmp.path().join("audit.json");
    let audit_s = audit.display().to_string();
    let inspector = [
        "--dev-dir",
        dev.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--as",
        "audit-office",
    ];
    bench(
        &[
            &inspector[..],
            &["--workload", "audit-query", "--out", &audit_s],
        ]
        .concat(),
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&audit).expect("json written"))
            .expect("JSON parses");
    assert_eq!(v["workload"], "audit-query");
    assert!(v["requests"].as_u64().is_some_and(|r| r > 0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");

    // Online verification of three distinct licenses in turn (each issued first, every verdict
    // genuine), and the health check that is the floor under every workload.
    let owner = [
        "--dev-dir",
        dev.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--as",
        "market-regulation",
    ];
    // Each run: its extra arguments, the workload it reports, and what every call counts for.
    let runs: [(&str, &[&str], &str, u64); 3] = [
        (
            "verify",
            &["--workload", "verify", "--licenses", "3"],
            "verify",
            1,
        ),
        // The same licenses, four per VerifyLicenses call: every document counts.
        (
            "verify-batch",
            &["--workload", "verify", "--licenses", "3", "--batch", "4"],
            "verify",
            4,
        ),
        ("health", &["--workload", "health"], "health", 1),
    ];
    for (name, args, workload, per_call) in runs {
        let file = tmp.path().join(format!("{name}.json"));
        let file_s = file.display().to_string();
        bench(&[&owner[..], args, &["--out", &file_s]].concat());
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("json written"))
                .expect("JSON parses");
        assert_eq!(v["workload"], workload);
        assert!(
            v["requests"]
                .as_u64()
                .is_some_and(|r| r > 0 && r % per_call == 0),
            "{v}"
        );
        assert_eq!(v["errors"], 0, "{v}");
    }
    let none = cli(&[
        &["bench"][..],
        &owner[..],
        &["--workload", "verify", "--licenses", "0"],
    ]
    .concat());
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("--licenses must be 1 to"),
        "{none:?}"
    );
    let reads = cli(&[
        &["bench"][..],
        &owner[..],
        &["--workload", "read", "--batch", "8"],
    ]
    .concat());
    assert!(!reads.status.success());
    assert!(
        String::from_utf8_lossy(&reads.stderr).contains("--batch is for --workload verify"),
        "{reads:?}"
    );

    // A read the policy refuses is an error for the allowed-read workload; JSON output.
    let json = tmp.path().join("refused.json");
    let json_s = json.display().to_string();
    bench(&[&common[..], &["--purpose", "marketing", "--out", &json_s]].concat());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("JSON parses");
    assert_eq!(v["workload"], "read");
    assert_eq!(v["requests"], 0);
    assert!(v["errors"].as_u64().is_some_and(|e| e > 0), "{v}");
    assert_eq!(v["errors"], v["error_kinds"]["PermissionDenied"], "{v}");
    assert!(
        v["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("no rule letting housing read")),
        "{v}"
    );

    // A bad argument is refused before any load, with a message naming the fix.
    let out = cli(&[
        "bench",
        "--dev-dir",
        &dev,
        "--endpoint",
        &endpoint,
        "--out",
        "figures.txt",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--format"), "{}", stderr(&out));

    etcd_smoke(tmp.path(), &dev);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// etcd puts through the same generator, if an `etcd` binary is installed.
fn etcd_smoke(tmp: &Path, dev: &str) {
    let installed = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!(
            "etcd smoke skipped: no `etcd` binary (bench/compare-etcd.sh installs etcd-server)"
        );
        return;
    }
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let etcd = Killed(
        Command::new("etcd")
            .arg("--name=smoke")
            .arg(format!("--data-dir={}", tmp.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=smoke={peer_url}"))
            .args(["--logger=zap", "--log-level=error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd"),
    );
    let pid = etcd.0.id().to_string();
    let json = tmp.join("etcd.json");
    let json_s = json.display().to_string();
    let args = [
        "bench",
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--dev-dir",
        dev,
        "--workload",
        "etcd-put",
        "--etcd",
        &client_url,
        "--value-size",
        "360",
        "--clients",
        "2",
        "--node-pid",
        &pid,
        "--out",
        &json_s,
    ];
    // etcd elects itself within a second or two; until then the probe put is refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = cli(&args);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.status.success(), "etcd bench: {}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("JSON parses");
    assert_eq!(v["workload"], "etcd-put");
    assert_eq!(v["value_bytes"], 360);
    assert!(v["ok"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // A second of a few puts may stay under one clock tick of etcd's CPU: present, not zero-checked.
    assert!(v["nodes_cpu_s"].as_f64().is_some_and(|c| c >= 0.0), "{v}");
    drop(etcd);

    // Once etcd is gone, the generator says which endpoint it could not reach.
    let out = cli(&args[..args.len() - 4]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot reach etcd at {client_url}")),
        "{}",
        stderr(&out)
    );
}
