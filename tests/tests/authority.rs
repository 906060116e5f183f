//! Node authority: a member's node certificate is not a licence to write in anyone's name.
//! Each test is an attack by a node certificate (or a gateway) issued by the cluster's own CA;
//! each must fail with nothing applied on any node and the log's root unchanged.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use openraft::{BasicNode, LeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::raft_client::RaftClient;
use qianlian_proto::v1::{GetRecordRequest, PutRecordRequest, RaftMessage, RecordRef};
use qianlian_raft_store::network::{
    ForwardRefusal, ForwardRequest, ForwardedReceipt, decode_message, encode_message,
};
use qianlian_raft_store::record::Record;
use qianlian_raft_store::types::TypeConfig;
use support::cluster::{Cluster, GATEWAY_CONFIG};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

/// A Raft client presenting node `node`'s certificate (`nodes/node-<node>.crt`) to node `to`.
async fn raft_as(c: &Cluster, node: usize, to: usize) -> RaftClient<Channel> {
    let pki = c.env.pki();
    let crt = pki.join(format!("nodes/node-{node}.crt"));
    let key = pki.join(format!("nodes/node-{node}.key"));
    let ch = channel(c.node(to), tls(&pki.join("ca.crt"), Some((&crt, &key))))
        .await
        .expect("connect with a node certificate");
    RaftClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn message<T: serde::Serialize>(value: &T) -> RaftMessage {
    RaftMessage {
        data: encode_message(value).expect("encode"),
    }
}

/// Every running node's (tree size, root), once they stay the same for a second.
async fn settled(c: &Cluster) -> Vec<(usize, Option<(u64, Vec<u8>)>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = heads(c).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = heads(c).await;
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not settle: {now:?}"
        );
        last = now;
    }
}

/// Every running node's (tree size, root).
async fn heads(c: &Cluster) -> Vec<(usize, Option<(u64, Vec<u8>)>)> {
    let mut out = Vec::new();
    for i in c.running() {
        out.push((i, c.checkpoint(i).await.map(|(s, r, _)| (s, r))));
    }
    out
}

fn record(json: serde_json::Value) -> Record {
    serde_json::from_value(json).expect("a record")
}

fn caller(department: &str, role: &str) -> serde_json::Value {
    serde_json::json!({"department": department, "role": role, "cert_fingerprint": ""})
}

/// Issue a business license as market regulation at `endpoint`; returns its hash (hex).
fn issue_license(pki: &Path, endpoint: &str, dir: &Path) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (ca, crt, key) = (
        pki.join("ca.crt"),
        pki.join("clients/market-regulation.crt"),
        pki.join("clients/market-regulation.key"),
    );
    let out_path = dir.join("license.json");
    let out = cli(&[
        "license",
        "--ca",
        &ca.display().to_string(),
        "--endpoint",
        endpoint,
        "--cert",
        &crt.display().to_string(),
        "--key",
        &key.display().to_string(),
        "issue",
        "--type",
        "business-license",
        "--number",
        "GZ-authority-0001",
        "--holder-name",
        "贵州黔云数据科技有限公司",
        "--holder-id",
        "11010519491231002X",
        "--valid-from",
        &now.to_string(),
        "--valid-until",
        &(now + 86_400 * 365).to_string(),
        "--out",
        &out_path.display().to_string(),
    ]);
    assert!(out.status.success(), "issue: {}", stderr(&out));
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("issued license "))
        .expect("license hash printed")
        .trim()
        .to_owned()
}

/// Housing's node certificate forwards to the leader a policy change, a directory change, an
/// access record in two other departments' names and the revocation of market regulation's
/// license: every batch is refused, with what the node may not do, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_node_cannot_forward_records_it_may_not_originate() {
    let c = Cluster::start(3, GATEWAY_CONFIG);
    let leader = c.leader(Duration::from_secs(20)).await;
    let license = issue_license(&c.env.pki(), &c.endpoint(1), c.env.path());
    let (size, _) = c.converge(1, Duration::from_secs(20)).await;
    let before = heads(&c).await;

    // Node 3 is housing's gateway (its certificate says so).
    let attacker = 3;
    let mut raft = raft_as(&c, attacker, leader).await;
    let attacks = [
        (
            "policy change",
            record(serde_json::json!({"Config": {
                "request_id": "a1", "time_unix_ms": 1, "caller": caller("ops", "operator"),
                "change": {"Policy": {"model": "", "rules": "p, housing, market-regulation, enterprise-registration, read, any, *\n"}},
            }})),
            "may not forward a policy change",
        ),
        (
            "directory change",
            record(serde_json::json!({"Config": {
                "request_id": "a2", "time_unix_ms": 1, "caller": caller("ops", "operator"),
                "change": {"Directory": {"toml": ""}},
            }})),
            "may not forward a directory change",
        ),
        (
            "access record in another department's name",
            record(serde_json::json!({"Access": {
                "request_id": "a3", "time_unix_ms": 1,
                "caller": caller("natural-resources", "department"),
                "owner": "market-regulation", "dataset": "enterprise-registration",
                "key": uscc(1), "action": "read", "purpose": "permit-review",
                "decision": "allow", "policy_version": "1", "rule": "",
                "request_digest": hex::encode([0u8; 32]), "response_digest": null,
            }})),
            "neither is its department",
        ),
        (
            "revocation of another department's license",
            record(serde_json::json!({"LicenseStatus": {
                "request_id": "a4", "time_unix_ms": 1,
                "caller": caller("market-regulation", "department"),
                "license_hash": license, "change": "revoked", "reason": "fraud",
            }})),
            "issued by `market-regulation`",
        ),
    ];
    for (what, record, expected) in attacks {
        let reply = raft
            .forward(message(&ForwardRequest {
                records: vec![record],
            }))
            .await
            .unwrap_or_else(|s| panic!("{what}: the call itself failed: {s:?}"))
            .into_inner();
        let answer: Result<Vec<ForwardedReceipt>, ForwardRefusal> =
            decode_message(&reply.data).expect("a Forward answer");
        match answer {
            Err(ForwardRefusal::NotPermitted { reason }) => {
                assert!(reason.contains(expected), "{what}: {reason}");
                assert!(
                    reason.contains("node-3"),
                    "{what} names the sender: {reason}"
                );
            }
            other => panic!("{what} was not refused: {other:?}"),
        }
    }

    // Nothing was appended on any node: the heads are those from before.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(heads(&c).await, before, "no node's log moved");
    assert_eq!(before[0].1.as_ref().map(|h| h.0), Some(size));
    let shown = c.operator(1, "policy", &["show"]);
    assert!(
        !stdout(&shown).contains("any, *"),
        "the forged policy is not in force"
    );
}

/// A node certificate of a non-member (node 4, issued by the CA but never added) and member
/// certificates sending in another member's name call AppendEntries, Vote and InstallSnapshot:
/// all refused with PERMISSION_DENIED before Raft sees them; no term, leader or log changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_calls_need_a_current_member_in_its_own_name() {
    let c = Cluster::start_with_spares(3, 1, "");
    let leader = c.leader(Duration::from_secs(20)).await;
    let before = settled(&c).await;
    let term = c.status(1).await.expect("status").term;

    let vote = |term: u64, node: u64| Vote {
        leader_id: LeaderId {
            term,
            node_id: node,
        },
        committed: true,
    };
    // (certificate of node, sender named in the message, what the refusal must say)
    let cases = [
        (4usize, 4u64, "member 4) is not one; members are 1, 2, 3"),
        (
            2,
            1,
            "names node 1 as its sender but comes from the certificate of node `node-2`",
        ),
        (
            3,
            2,
            "names node 2 as its sender but comes from the certificate of node `node-3`",
        ),
    ];
    for (cert, sender, expected) in cases {
        let target = if cert == 1 { 2 } else { 1 };
        let mut raft = raft_as(&c, cert, target).await;
        let high = vote(term + 100, sender);
        let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote: high,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let ballot = openraft::raft::VoteRequest::<u64> {
            vote: Vote::new(term + 100, sender),
            last_log_id: Some(LogId::new(
                openraft::CommittedLeaderId::new(term + 100, sender),
                1_000_000,
            )),
        };
        let snapshot = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
            vote: high,
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: "forged".into(),
            },
            offset: 0,
            data: Vec::new(),
            done: true,
        };
        let refusals = [
            ("AppendEntries", raft.append_entries(message(&append)).await),
            ("Vote", raft.vote(message(&ballot)).await),
            (
                "InstallSnapshot",
                raft.install_snapshot(message(&snapshot)).await,
            ),
        ];
        for (call, answer) in refusals {
            let status = answer.expect_err(&format!(
                "{call} from node-{cert}'s certificate as node {sender} was served"
            ));
            assert_eq!(status.code(), Code::PermissionDenied, "{call}: {status:?}");
            assert!(
                status.message().contains(expected) && status.message().contains(call),
                "{call}: {}",
                status.message()
            );
        }
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(heads(&c).await, before, "no node's log moved");
    for i in 1..=3 {
        let s = c.status(i).await.expect("status");
        assert_eq!(s.term, term, "node {i}'s term did not move");
        assert_eq!(s.leader_id as usize, leader, "node {i} kept its leader");
    }
}

/// A snapshot file of another cluster's longer log (same node names) is offered to
/// a follower by the leader's own certificate in the leader's name: internally consistent, but
/// not an extension of the tree the follower signed, so it is refused and the follower keeps
/// its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_does_not_extend_the_signed_tree_is_refused() {
    // The other cluster: one node writing one Raft entry per call past several snapshots.
    let other = Cluster::start(
        2,
        "[raft]\nsnapshot_every = 20\nlog_kept_after_snapshot = 5\n",
    );
    other.leader(Duration::from_secs(20)).await;
    let mut writer = ExchangeClient::new(other.channel(1, "housing").await.expect("connect"));
    for _ in 0..60 {
        // A read the policy refuses: recorded all the same, one record per Raft entry.
        let refused = writer
            .get_record(GetRecordRequest {
                record: Some(RecordRef {
                    department: "market-regulation".into(),
                    dataset: "enterprise-registration".into(),
                    key: uscc(1),
                }),
                purpose: "marketing".into(),
            })
            .await
            .expect_err("no rule allows marketing");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let snapshot = wait_for_snapshot(&other.dir(1).join("data/snapshots"));

    let c = Cluster::start(3, "");
    let leader = c.leader(Duration::from_secs(20)).await;
    c.converge(1, Duration::from_secs(20)).await;
    let before = heads(&c).await;
    let victim = leader % 3 + 1;
    let term = c.status(leader).await.expect("status").term;

    // Re-label the file as a snapshot of this cluster's leader, far ahead of its log.
    let ahead = LogId::new(
        openraft::CommittedLeaderId::new(term + 1000, leader as u64),
        1_000_000,
    );
    let members = StoredMembership::new(
        Some(ahead),
        openraft::Membership::new(
            vec![[1u64, 2, 3].into_iter().collect()],
            [1u64, 2, 3]
                .into_iter()
                .map(|i| (i, BasicNode::new(c.endpoint(i as usize))))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    );
    let (data, other_size) = relabel(&snapshot, ahead, members.clone());
    let mut raft = raft_as(&c, leader, victim).await;
    let offer = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
        vote: Vote {
            leader_id: LeaderId {
                term: term + 1000,
                node_id: leader as u64,
            },
            committed: true,
        },
        meta: SnapshotMeta {
            last_log_id: Some(ahead),
            last_membership: members,
            snapshot_id: "from-another-log".into(),
        },
        offset: 0,
        data,
        done: true,
    };
    // The refusal stops Raft on the victim (a storage error); the call may answer either way.
    let _ = raft.install_snapshot(message(&offer)).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = c.node(victim).log_text();
        if log.contains("does not extend the tree this node signed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} did not refuse the snapshot; its log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = heads(&c).await;
    let victim_before = before.iter().find(|(i, _)| *i == victim).expect("victim");
    let victim_after = after.iter().find(|(i, _)| *i == victim).expect("victim");
    assert_eq!(victim_after, victim_before, "the victim kept its tree");
    assert_ne!(
        victim_after.1.as_ref().map(|h| h.0),
        Some(other_size),
        "the other log was not installed"
    );
    for (i, head) in &after {
        assert_eq!(
            Some(head),
            before.iter().find(|(j, _)| j == i).map(|(_, h)| h),
            "node {i} kept its tree"
        );
    }
}

/// The newest snapshot file in `dir`, once there is one.
fn wait_for_snapshot(dir: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "snap"))
        });
        if let Some(path) = found {
            return std::fs::read(path).expect("snapshot file");
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The snapshot file header (see raft-store's `state_machine::snapshot`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    tree_size: u64,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
}

/// `file` with its header saying `last_applied` and `membership`, and its digest recomputed:
/// a well-formed snapshot of the other log. Returns it and its tree size.
fn relabel(
    file: &[u8],
    last_applied: LogId<u64>,
    membership: StoredMembership<u64, BasicNode>,
) -> (Vec<u8>, u64) {
    use sha2::Digest;
    let len = u32::from_be_bytes(file[8..12].try_into().expect("length")) as usize;
    // The header is a stored value: a format byte (1) and postcard, as the wire writes it.
    let header: Header = decode_message(&file[12..12 + len]).expect("snapshot header");
    let header = Header {
        tree_size: header.tree_size,
        last_applied: Some(last_applied),
        last_membership: membership,
    };
    let encoded = encode_message(&header).expect("encode header");
    let body = &encoded[..];
    let frames = &file[12 + len..file.len() - 33];
    let mut out = file[..8].to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(frames);
    let digest = sha2::Sha256::digest(&out);
    out.push(0xff);
    out.extend_from_slice(&digest);
    (out, header.tree_size)
}

/// The directory names node 2 (natural resources' gateway, by its certificate) as market
/// regulation's gateway: housing's gateway refuses to forward a read of market regulation's
/// data to it, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_certificate_naming_another_department_is_refused() {
    let c = Cluster::start(3, GATEWAY_CONFIG);
    c.leader(Duration::from_secs(20)).await;
    c.apply_gateways();
    let code = uscc(7);
    let record = Some(RecordRef {
        department: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: code.clone(),
    });
    ExchangeClient::new(c.channel(1, "market-regulation").await.expect("connect"))
        .put_record(PutRecordRequest {
            record: record.clone(),
            payload: serde_json::json!({"name": "n", "status": "存续"})
                .to_string()
                .into_bytes(),
        })
        .await
        .expect("put");
    let mut housing = ExchangeClient::new(c.channel(3, "housing").await.expect("connect"));
    let get = GetRecordRequest {
        record,
        purpose: "permit-review".into(),
    };
    housing
        .get_record(get.clone())
        .await
        .expect("a read through market regulation's own gateway");

    // Now the directory sends market regulation's reads to node 2.
    let path = c.env.pki().join("departments.toml");
    let mut doc: toml::Table = std::fs::read_to_string(&path)
        .expect("directory")
        .parse()
        .expect("toml");
    for d in doc["department"].as_array_mut().expect("departments") {
        let id = d["id"].as_str().expect("id").to_owned();
        let node = match id.as_str() {
            "market-regulation" | "natural-resources" => 2,
            _ => 3,
        };
        d.as_table_mut()
            .expect("table")
            .insert("gateway".into(), c.endpoint(node).into());
    }
    let file = c.env.path().join("wrong-gateway.toml");
    std::fs::write(&file, toml::to_string(&doc).expect("toml")).expect("write");
    let out = c.operator(1, "directory", &["apply", &file.display().to_string()]);
    assert!(out.status.success(), "directory apply: {}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&c.operator(3, "directory", &["show"])).contains("directory version 3 ") {
        assert!(Instant::now() < deadline, "node 3 did not switch directory");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.converge(1, Duration::from_secs(20)).await;
    let before = heads(&c).await;

    let refused = until_refused(
        Code::FailedPrecondition,
        "a read through another department's gateway",
        || {
            let (mut housing, get) = (housing.clone(), get.clone());
            async move { housing.get_record(get).await }
        },
    )
    .await;
    let m = refused.message();
    assert!(
        m.contains("is not the gateway of `market-regulation`")
            && m.contains("node `node-2`'s, the gateway of `natural-resources`"),
        "{m}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(heads(&c).await, before, "nothing was recorded on any node");
}

/// The membership node `i` has in force: (voters, learners), each as `id=address`.
async fn membership_of(c: &Cluster, i: usize) -> (Vec<String>, Vec<String>) {
    let s = c.status(i).await.expect("status");
    let list = |m: &[qianlian_proto::v1::Member]| -> Vec<String> {
        m.iter()
            .map(|m| format!("{}={}", m.node_id, m.address))
            .collect()
    };
    (list(&s.voters), list(&s.learners))
}

/// `AppendEntries` as the leader (its own certificate, its own term) carrying one membership
/// entry that makes `voters` vote among `members`: what a captured leader can send.
fn forged_membership(
    term: u64,
    leader: u64,
    last_index: u64,
    voters: &[u64],
    members: &[(u64, String)],
) -> openraft::raft::AppendEntriesRequest<TypeConfig> {
    let log_id = |index| LogId::new(openraft::CommittedLeaderId::new(term, leader), index);
    let membership = openraft::Membership::new(
        vec![voters.iter().copied().collect()],
        members
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a.clone())))
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    openraft::raft::AppendEntriesRequest {
        vote: Vote {
            leader_id: LeaderId {
                term,
                node_id: leader,
            },
            committed: true,
        },
        prev_log_id: Some(log_id(last_index)),
        entries: vec![openraft::Entry {
            log_id: log_id(last_index + 1),
            payload: openraft::EntryPayload::Membership(membership),
        }],
        leader_commit: None,
    }
}

/// Send `follower`, as the captured `leader`, a membership entry making `voters` vote among
/// `members`; the refusal.
async fn forge(
    c: &Cluster,
    leader: usize,
    follower: usize,
    voters: &[u64],
    members: &[(u64, String)],
) -> tonic::Status {
    let s = c.status(follower).await.expect("status");
    let append = forged_membership(s.term, leader as u64, s.last_log_index, voters, members);
    let mut raft = raft_as(c, leader, follower).await;
    raft.append_entries(message(&append))
        .await
        .expect_err("a membership entry no operator signed was let in")
}

/// Raft membership changes need the operators' signatures, on every node. In a cluster whose
/// directory lists two operators:
/// - a captured leader (its own certificate, in its own name and term) sends a follower a
///   membership entry adding a node: refused before Raft sees it;
/// - an operator certificate without a signature asks the leader to add a node: refused;
/// - an operator adds and promotes node 4 with the CLI, which signs each change;
/// - the captured leader then forges what was not signed (dropping a voter): refused;
/// - removing node 4 needs both operators: one alone is refused, `--out` / `--cosign` passes.
///
/// After each refusal every node's membership and log are as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_need_the_operators_signatures() {
    let c = Cluster::start_with_operators(3, 1, "", &["ops", "ops-b"]);
    let leader = c.leader(Duration::from_secs(20)).await;
    let follower = leader % 3 + 1;
    let before = settled(&c).await;
    let members_before = membership_of(&c, follower).await;
    let member = |i: u64| (i, c.endpoint(i as usize));
    let three: Vec<(u64, String)> = (1..=3).map(member).collect();
    let four: Vec<(u64, String)> = (1..=4).map(member).collect();

    let refused = forge(&c, leader, follower, &[1, 2, 3], &four).await;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("carries no operator signature"),
        "{}",
        refused.message()
    );

    // An operator certificate alone: the leader refuses the unsigned change.
    let mut admin = qianlian_proto::v1::admin_client::AdminClient::new(
        c.channel(leader, "ops").await.expect("connect"),
    );
    let unsigned = admin
        .add_learner(qianlian_proto::v1::AddLearnerRequest {
            member: Some(qianlian_proto::v1::Member {
                node_id: 4,
                address: c.endpoint(4),
            }),
            signed_record: Vec::new(),
        })
        .await
        .expect_err("an unsigned membership change was made");
    assert_eq!(unsigned.code(), Code::PermissionDenied, "{unsigned:?}");
    assert!(
        unsigned.message().contains("membership") && unsigned.message().contains("sign"),
        "{}",
        unsigned.message()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(heads(&c).await, before, "no node's log moved");
    for i in 1..=3 {
        assert_eq!(membership_of(&c, i).await, members_before, "node {i}");
    }

    // The CLI signs with the operator's key: node 4 joins and votes.
    let out = c.ops(follower, &["add-learner", &format!("4={}", c.endpoint(4))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.ops(leader, &["promote", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (size, _) = c.converge(4, Duration::from_secs(30)).await;
    for i in 1..=4 {
        let (voters, learners) = membership_of(&c, i).await;
        assert_eq!(voters.len(), 4, "node {i}: {voters:?}");
        assert!(learners.is_empty(), "node {i}: {learners:?}");
    }

    // The captured leader drops node 3's vote: not what the operators signed.
    let refused = forge(&c, leader, follower, &[1, 2, 4], &four).await;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("neither the signed change's old voters"),
        "{}",
        refused.message()
    );
    for i in 1..=4 {
        assert_eq!(membership_of(&c, i).await.0.len(), 4, "node {i}");
    }

    // Removing a node takes two operators.
    let out = c.ops(leader, &["remove", "4"]);
    assert!(!out.status.success(), "one operator removed a node");
    assert!(
        stderr(&out).contains("needs the signatures of 2 different operators")
            && stderr(&out).contains("removes node 4"),
        "{}",
        stderr(&out)
    );
    let file = c.env.dir.path().join("remove-4.json");
    let file_arg = file.display().to_string();
    let out = c.ops(leader, &["remove", "4", "--out", &file_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        membership_of(&c, leader).await.0.len(),
        4,
        "--out changes nothing"
    );
    let out = c.operator_as(
        "ops-b",
        leader,
        "cluster",
        &["remove", "4", "--cosign", &file_arg],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (voters, learners) = membership_of(&c, leader).await;
    assert_eq!(
        voters,
        three
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
    );
    assert!(learners.is_empty());
    let after = c.status(leader).await.expect("status").tree_size;
    assert_eq!(
        after,
        size + 1,
        "one more record: the two operators' removal"
    );
}
