//! Operator signatures on configuration, end to end: three real nodes from a PKI with two
//! operators, whose directory (the cluster's first, seeded at `cluster init`) lists both
//! operators' keys. From then on every policy or directory change must carry operators'
//! signatures made by the CLI; unsigned, wrongly signed, replayed or under-signed changes are
//! refused with the reason and leave every node's tree as it was.

mod support;

use std::time::Duration;

use qianlian_proto::v1::admin_client::AdminClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{ApplyDirectoryRequest, ApplyPolicyRequest, GetLogEntryRequest};
use support::cluster::Cluster;
use support::*;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

/// The log index a successful `policy apply` / `directory apply` printed.
fn applied_at(out: &std::process::Output) -> u64 {
    let text = stdout(out);
    text.rsplit("log index ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no log index in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_need_the_operators_signatures_on_every_node() {
    let c = Cluster::start_with_operators(3, 0, "", &["ops", "ops-b"]);
    let leader = c.leader(T).await;
    // The seeded policy and directory.
    let (seeded, _) = c.converge(2, T).await;

    let out = c.operator(2, "directory", &["show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains("# not signed by an operator"), "{shown}");
    assert!(shown.contains("id = \"ops-b\""), "{shown}");

    // An operator changes the policy: the CLI signs it with the operator's key.
    let rules = std::fs::read_to_string(policies().join("policy.csv")).expect("rules");
    let file = c.env.path().join("policy.csv");
    std::fs::write(&file, format!("{rules}\n# reviewed\n")).expect("write");
    let file = file.display().to_string();
    let out = c.operator(1, "policy", &["apply", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("policy version 2"),
        "{}",
        stdout(&out)
    );
    let policy_at = applied_at(&out);
    let (size, root) = c.converge(seeded + 1, T).await;
    let out = c.operator(3, "policy", &["show"]);
    assert!(
        stdout(&out).contains("# signed by ops\n"),
        "{}",
        stdout(&out)
    );
    let unchanged = |what: &'static str| {
        let root = root.clone();
        let c = &c;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                c.converge(size, T).await,
                (size, root),
                "{what} changed the log"
            );
        }
    };

    // Unsigned, from an operator certificate straight to the leader.
    let mut ops = AdminClient::new(c.channel(leader, "ops").await.expect("connect"));
    let s = ops
        .apply_policy(ApplyPolicyRequest {
            rules: rules.clone(),
            ..Default::default()
        })
        .await
        .expect_err("unsigned");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains(
            "the policy change is not signed, but the directory in force lists operator keys"
        ),
        "{}",
        s.message()
    );
    unchanged("an unsigned policy").await;

    // Signed with a key the directory does not list for that operator (ops-b's, as ops).
    let stray = c.env.pki().join("clients/ops-b.sign.key");
    let out = c.operator(
        1,
        "policy",
        &["apply", &file, "--sign-key", &stray.display().to_string()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("of ops is not among the operator keys"),
        "{}",
        stderr(&out)
    );
    unchanged("a policy signed by an unlisted key").await;

    // Removing a department takes two operators.
    let mut doc: toml::Table = std::fs::read_to_string(c.env.pki().join("departments.toml"))
        .expect("directory")
        .parse()
        .expect("toml");
    doc["department"]
        .as_array_mut()
        .expect("departments")
        .retain(|d| d["id"].as_str() != Some("housing"));
    let smaller = c.env.path().join("directory.toml");
    std::fs::write(&smaller, toml::to_string(&doc).expect("toml")).expect("write");
    let smaller = smaller.display().to_string();
    let out = c.operator(1, "directory", &["apply", &smaller]);
    assert!(!out.status.success());
    for needle in [
        "needs the signatures of 2 different operators (it removes department housing), but has 1",
        "--cosign",
    ] {
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
    unchanged("a removal signed by one operator").await;

    // The first operator signs it and passes it on; nothing is applied yet.
    let change = c.env.path().join("change.json");
    let change_arg = change.display().to_string();
    let out = c.operator(1, "directory", &["apply", &smaller, "--out", &change_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("qianlian directory apply --cosign"),
        "{}",
        stdout(&out)
    );
    unchanged("signing without applying").await;

    // The submitting operator must have signed: ops-b sends ops's signed bytes as they are.
    let passed_on: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&change).expect("read")).expect("json");
    let bytes = hex::decode(passed_on["record"].as_str().expect("record")).expect("hex");
    let mut ops_b = AdminClient::new(c.channel(leader, "ops-b").await.expect("connect"));
    let s = ops_b
        .apply_directory(ApplyDirectoryRequest {
            signed_record: bytes,
            ..Default::default()
        })
        .await
        .expect_err("not a signer");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("did not sign this change"),
        "{}",
        s.message()
    );
    unchanged("a change submitted by an operator who did not sign it").await;

    // The second operator adds its signature and applies it.
    let out = c.operator_as("ops-b", 2, "directory", &["apply", "--cosign", &change_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("directory version 2"),
        "{}",
        stdout(&out)
    );
    // Once every node has applied it, each shows it with its signers.
    let (size, _) = c.converge(size + 1, T).await;
    let out = c.operator(3, "directory", &["show"]);
    let shown = stdout(&out);
    assert!(shown.contains("# signed by ops, ops-b\n"), "{shown}");
    assert!(!shown.contains("id = \"housing\""), "{shown}");

    // A signed change replayed: the policy signed for version 1 is not the one it replaces now.
    let mut notary = NotaryClient::new(c.channel(leader, "ops").await.expect("connect"));
    let signed = notary
        .get_log_entry(GetLogEntryRequest {
            log_index: policy_at,
        })
        .await
        .expect("entry")
        .into_inner()
        .record;
    let out = c.operator(1, "policy", &["apply", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (size, root) = c.converge(size + 1, T).await;
    let s = ops
        .apply_policy(ApplyPolicyRequest {
            signed_record: signed,
            ..Default::default()
        })
        .await
        .expect_err("replayed");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .contains("signed to replace version 1, but version 3 is in force"),
        "{}",
        s.message()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.converge(size, T).await,
        (size, root),
        "a replay changed the log"
    );
}
