//! The Prometheus endpoint after a few requests: counters, histograms and gauges with sensible
//! values.

mod support;

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{GetRecordRequest, PutRecordRequest, RecordRef};
use support::*;

fn value(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_decisions_commits_and_report_raft_and_storage() {
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let url = node
        .metrics
        .clone()
        .expect("the node prints its metrics URL");
    let key = uscc(3);
    let rec = || {
        Some(RecordRef {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            key: key.clone(),
        })
    };
    exchange(&env, &node, "market-regulation")
        .await
        .put_record(PutRecordRequest {
            record: rec(),
            payload: b"{\"a\":1}".to_vec(),
        })
        .await
        .expect("put");
    let mut housing = exchange(&env, &node, "housing").await;
    for _ in 0..3 {
        housing
            .get_record(GetRecordRequest {
                record: rec(),
                purpose: "permit-review".into(),
            })
            .await
            .expect("allowed");
    }
    housing
        .get_record(GetRecordRequest {
            record: rec(),
            purpose: "marketing".into(),
        })
        .await
        .expect_err("denied");
    let anonymous = channel(&node, tls(&env.pki().join("ca.crt"), None))
        .await
        .expect("connect");
    ExchangeClient::new(anonymous)
        .get_record(GetRecordRequest {
            record: rec(),
            purpose: "permit-review".into(),
        })
        .await
        .expect_err("no certificate");

    let out = std::process::Command::new("curl")
        .args(["-sS", &url])
        .output()
        .expect("curl");
    let text = stdout(&out);
    let req = "qianlian_requests_total";
    assert_eq!(
        value(
            &text,
            req,
            &[
                "method=\"GetRecord\"",
                "code=\"Ok\"",
                "department=\"housing\""
            ]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            req,
            &[
                "method=\"GetRecord\"",
                "code=\"PermissionDenied\"",
                "department=\"housing\""
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            req,
            &[
                "method=\"GetRecord\"",
                "code=\"Unauthenticated\"",
                "department=\"(none)\""
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            req,
            &[
                "method=\"PutRecord\"",
                "code=\"Ok\"",
                "department=\"market-regulation\""
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "qianlian_policy_decisions_total",
            &["action=\"read\"", "decision=\"allow\""]
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "qianlian_policy_decisions_total",
            &["action=\"read\"", "decision=\"deny\""]
        ),
        1.0
    );
    assert_eq!(
        value(&text, "qianlian_commit_seconds_count", &[]),
        5.0,
        "five notarized calls"
    );
    let sum = value(&text, "qianlian_commit_seconds_sum", &[]);
    assert!(sum > 0.0 && sum < 5.0, "commit seconds sum {sum}");
    assert!(value(&text, "qianlian_raft_term", &[]) >= 1.0);
    assert_eq!(value(&text, "qianlian_raft_leader", &[]), 1.0);
    // The five calls, each followed by the batch signature that seals it, after the policy and
    // directory the node seeded.
    let seeded = SEEDED as f64;
    assert_eq!(
        value(&text, "qianlian_log_records", &[]),
        2.0 * 5.0 + seeded
    );
    let batches = value(&text, "qianlian_group_commit_batches", &[]);
    assert!((1.0..=5.0 + seeded).contains(&batches), "batches {batches}");
    assert_eq!(
        value(&text, "qianlian_group_commit_records", &[]),
        5.0 + seeded
    );
    assert_eq!(
        value(&text, "qianlian_group_commit_batch_size", &["le=\"+Inf\""]),
        batches
    );
    // One call at a time: each lone record is answered when its entry commits, ahead of the
    // apply (unless the previous apply was still running, which a busy machine may cause).
    let early = value(&text, "qianlian_group_commit_answered_at_commit", &[]);
    assert!(
        (1.0..=batches).contains(&early),
        "answered at commit {early} of {batches}"
    );
    assert!(value(&text, "qianlian_data_bytes", &[]) > 0.0);
    let expiry = value(
        &text,
        "qianlian_certificate_expiry_seconds",
        &["certificate=\"node\""],
    );
    assert!(
        expiry > 300.0 * 86_400.0 && expiry < 366.0 * 86_400.0,
        "node certificate expiry {expiry}"
    );
}
