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
    let mut pki_written = 0;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        pki_written += usize::from(line.starts_with("dev PKI written to"));
        assert!(pki_written <= 1, "the dev PKI is reported once: {line}");
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
    let samples = qianlian_gateway::domain::samples::samples();
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

    // The tour's citizen: natural resources reads the enterprise with its legal
    // representative's ID; the representative's dev token shows that read, and only theirs.
    let out = client(
        &dir,
        &[
            "--as",
            "natural-resources",
            "get",
            "enterprise-registration",
            key,
            "--purpose",
            "property-registration",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let d = dir.display().to_string();
    let representative = samples[0].3["legal_representative_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let token = cli(&[
        "audit",
        "dev-token",
        "--dev-dir",
        &d,
        "--subject",
        &representative,
    ]);
    assert!(token.status.success(), "{}", stderr(&token));
    let token = stdout(&token).trim().to_owned();
    let out = cli(&[
        "audit",
        "mine",
        "--dev-dir",
        &d,
        "--token",
        &token,
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    // Newest first: the read, then the owner's registration of the record; housing's permit
    // review saw no personal field of the representative and is not listed.
    assert_eq!(lines.len(), 2, "{}", stdout(&out));
    assert_eq!(lines[0]["consumer"], "natural-resources");
    assert_eq!(lines[0]["purpose"], "property-registration");
    assert_eq!(
        (lines[1]["consumer"].as_str(), lines[1]["action"].as_str()),
        (Some("market-regulation"), Some("write"))
    );
    let out = cli(&["audit", "dev-token", "--dev-dir", &d, "--subject", "12345"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--subject"), "{}", stderr(&out));

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
    // Policy and directory, the samples, then the allowed read, the denied read and the
    // property registration read above; nothing else was written (no second seeding either).
    // Between them stand the batch signature records that seal the node's records.
    let mut records = Vec::new();
    for i in 0.. {
        let out = client(
            &dir,
            &["--as", "audit-office", "log", "get", &i.to_string()],
        );
        if stderr(&out).contains("beyond the end of the log") {
            break;
        }
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        if !text.contains("\"BatchSignature\"") {
            records.push(text);
        }
    }
    assert_eq!(
        records.len(),
        2 + samples.len() + 3,
        "samples were not loaded twice"
    );
    let denied = &records[records.len() - 2];
    assert!(denied.contains("\"decision\": \"deny\""), "{denied}");
    stop(child);
}
