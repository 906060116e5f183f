//! Cluster membership through the operator's CLI, against real node processes.

mod support;

use std::time::Duration;

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{GetRecordRequest, RecordRef};
use support::cluster::Cluster;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_node_joins_as_learner_becomes_voter_and_is_removed() {
    let cluster = Cluster::start_with_spares(3, 1, "");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = leader % 3 + 1;
    let mut c = ExchangeClient::new(cluster.channel(follower, "housing").await.expect("connect"));
    for _ in 0..10 {
        let s = c
            .get_record(GetRecordRequest {
                record: Some(RecordRef {
                    department: "market-regulation".into(),
                    dataset: "enterprise-registration".into(),
                    key: uscc(1),
                }),
                purpose: "permit-review".into(),
            })
            .await
            .expect_err("nothing stored");
        assert_eq!(
            s.code(),
            tonic::Code::NotFound,
            "a follower takes writes: {}",
            s.message()
        );
    }

    // Sent to a follower: the CLI follows the leader hint.
    let add = format!("4={}", cluster.endpoint(4));
    let out = cluster.ops(follower, &["add-learner", &add]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("learners: 4={}", cluster.endpoint(4))),
        "{}",
        stdout(&out)
    );
    // Each membership change is recorded (signed by the operator) before Raft makes it.
    cluster
        .converge(10 + SEEDED + 1, Duration::from_secs(20))
        .await;

    let out = cluster.ops(leader, &["promote", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = cluster.status(4).await.expect("status of node 4");
    assert_eq!(s.voters.len(), 4, "{s:?}");
    let at_leader = cluster.status(leader).await.expect("status of the leader");
    assert_eq!(
        s.tree_size, at_leader.tree_size,
        "the new voter has the whole log, both membership records included"
    );
    assert!(s.tree_size >= 10 + SEEDED + 2, "{s:?}");

    let out = cluster.ops(leader, &["remove", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = cluster.status(leader).await.expect("status");
    assert_eq!(s.voters.len(), 3);
    assert!(s.learners.is_empty());

    // Bad requests are refused with the fix.
    let out = cluster.ops(leader, &["promote", "9"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("add it first"), "{}", stderr(&out));
    let out = cluster.ops(leader, &["add-learner", "5=http://127.0.0.1:1"]);
    assert!(
        stderr(&out).contains("must be an https:// URL"),
        "{}",
        stderr(&out)
    );
    let out = cluster.ops(leader, &["add-learner", "five"]);
    assert!(stderr(&out).contains("<id>=https://"), "{}", stderr(&out));
    // Only operators administer the cluster.
    let pki = cluster.env.pki();
    let out = cli(&[
        "cluster",
        "--ca",
        &pki.join("ca.crt").display().to_string(),
        "--cert",
        &pki.join("clients/housing.crt").display().to_string(),
        "--key",
        &pki.join("clients/housing.key").display().to_string(),
        "--endpoint",
        &cluster.endpoint(leader),
        "status",
    ]);
    assert!(
        stderr(&out).contains("needs an operator certificate"),
        "{}",
        stderr(&out)
    );
}
