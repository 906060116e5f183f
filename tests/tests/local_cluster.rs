//! `deploy/local-cluster.sh` as an operator runs it: start, status, stop, start again.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::cluster::free_port;
use support::*;

fn script(dir: &Path, base: u16, cmd: &str) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster.sh"))
        .arg(cmd)
        .env("QIANLIAN_CLUSTER_DIR", dir)
        .env("QIANLIAN_BIN", bin())
        .env("QIANLIAN_BASE_PORT", base.to_string())
        .output()
        .expect("run local-cluster.sh")
}

/// Three consecutive free ports (probed; the script needs a base and the next two).
fn free_base() -> u16 {
    for _ in 0..50 {
        let p = free_port();
        if p < 65000
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 2)).is_ok()
        {
            return p;
        }
    }
    panic!("no three consecutive free ports");
}

#[test]
fn local_cluster_script_starts_reports_and_stops_three_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let base = free_base();
    let out = script(&dir, base, "start");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for n in 0..3 {
        assert!(
            text.contains(&format!("ready on https://127.0.0.1:{}", base + n)),
            "{text}"
        );
    }
    assert!(text.contains("voters:"), "{text}");

    let out = script(&dir, base, "status");
    let text = stdout(&out);
    assert!(text.contains("node 3 running"), "{text}");
    assert!(
        text.contains(&format!("3=https://127.0.0.1:{}", base + 2)),
        "{text}"
    );

    let out = script(&dir, base, "stop");
    assert!(out.status.success());
    assert!(stdout(&out).contains("node 2 stopped"));
    let out = script(&dir, base, "status");
    assert!(stdout(&out).contains("node 1 stopped"), "{}", stdout(&out));

    // Again: same data, no second init, a leader is elected.
    let out = script(&dir, base, "start");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.join("initialised").exists());
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
    for n in 0..3 {
        assert!(stdout(&out).contains(&format!("ready on https://127.0.0.1:{}", base + n)));
    }
    let out = script(&dir, base, "stop");
    assert!(out.status.success());
}
