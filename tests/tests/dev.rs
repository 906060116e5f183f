//! The embedded default, as a newcomer uses it: `qianlian dev`, then `qianlian client --as …`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Start `qianlian dev` in `dir`; return the child and the endpoint it printed.
fn start_dev(dir: &std::path::Path) -> (std::process::Child, String) {
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

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "dev exits cleanly on Ctrl-C: {status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("qianlian dev did not stop on Ctrl-C");
}

fn client(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["client", "--dev-dir"];
    let d = dir.display().to_string();
    all.push(&d);
    all.extend_from_slice(args);
    cli(&all)
}

#[test]
fn dev_serves_sample_data_to_the_cli_and_reuses_it_after_ctrl_c() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("dev");
    let (child, _endpoint) = start_dev(&dir);
    let samples = qianlian_gateway::dev::samples();
    let key = &samples[0].2;

    let out = client(
        &dir,
        &[
            "--as",
            "housing",
            "get",
            "enterprise-registration",
            key,
            "--purpose",
            "permit-review",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("贵州黔云数据科技有限公司"), "{text}");
    assert!(text.contains("notarized: log index"), "{text}");

    let out = client(
        &dir,
        &[
            "--as",
            "housing",
            "get",
            "enterprise-registration",
            key,
            "--purpose",
            "marketing",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("notarized: log index"),
        "{}",
        stderr(&out)
    );

    let out = client(&dir, &["--as", "nobody", "log", "get", "0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no dev profile `nobody`"),
        "{}",
        stderr(&out)
    );

    // The node seeds the cluster's policy and directory, then the samples are written.
    let out = client(&dir, &["--as", "audit-office", "log", "get", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"Policy\""), "{}", stdout(&out));
    let out = client(&dir, &["--as", "audit-office", "log", "get", "2"]);
    assert!(
        stdout(&out).contains("\"action\": \"write\""),
        "the first record after the configuration is a sample write"
    );
    let first = stdout(&out);
    stop(child);

    // Again: same keys, same log, no second copy of the samples.
    let (child, _) = start_dev(&dir);
    let out = client(&dir, &["--as", "audit-office", "log", "get", "2"]);
    assert_eq!(
        stdout(&out),
        first,
        "the log survived the restart unchanged"
    );
    // Policy and directory, the samples, then the allowed and the denied read above; nothing
    // else was written (no second seeding either).
    let n = 2 + samples.len() + 2;
    let out = client(
        &dir,
        &["--as", "audit-office", "log", "get", &(n - 1).to_string()],
    );
    assert!(
        stdout(&out).contains("\"decision\": \"deny\""),
        "{}",
        stdout(&out)
    );
    let out = client(
        &dir,
        &["--as", "audit-office", "log", "get", &n.to_string()],
    );
    assert!(
        stderr(&out).contains("beyond the end of the log"),
        "samples were not loaded twice: {}",
        stderr(&out)
    );
    stop(child);
}
