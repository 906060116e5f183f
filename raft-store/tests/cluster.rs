//! Three notary nodes in one process, talking Raft over real gRPC on 127.0.0.1 (plain HTTP/2).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use qianlian_raft_store::notary::{
    LicenseCurrentStatus, Notary, NotaryConfig, NotaryError, NotaryStatus,
};
use qianlian_raft_store::record::{LicenseStatusChange, Record};
use qianlian_verifier::license::{LicenseState, open_status_list};
use qianlian_verifier::{NoteSigner, SignedNote, open_checkpoint, verify_inclusion};
use support::{STEP, issued, record, status, unix};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Node {
    id: u64,
    addr: String,
    notary: Notary,
    stop_server: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

/// Node `id`'s checkpoint key, as its department would hold it.
fn key(id: u64) -> NoteSigner {
    match NoteSigner::from_seed(format!("node-{id}"), &[id as u8; 32]) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

impl Node {
    async fn start(id: u64, bootstrap: bool) -> Result<Node, Box<dyn std::error::Error>> {
        Node::start_with(id, bootstrap, |_| {}).await
    }

    async fn start_with(
        id: u64,
        bootstrap: bool,
        configure: impl FnOnce(&mut NotaryConfig),
    ) -> Result<Node, Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let dir = tempfile::tempdir()?;
        let mut config = NotaryConfig::new(id, dir.path(), addr.clone());
        config.bootstrap_single = bootstrap;
        config.signer = Some(key(id));
        configure(&mut config);
        let notary = Notary::open(config).await?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = notary.raft_service_without_authority();
        tokio::spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    // Without TCP_NODELAY on accepted sockets, small replies wait for delayed
                    // ACKs: forwarded appends ran 5x slower.
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
            if let Err(e) = served {
                eprintln!("raft server of node {id}: {e}");
            }
        });
        Ok(Node {
            id,
            addr,
            notary,
            stop_server: Some(stop_server),
            _dir: dir,
        })
    }

    async fn stop(&mut self) -> Result<(), NotaryError> {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        self.notary.shutdown().await
    }
}

/// Nodes 1, 2 and 3 as voters, node 1 leading.
async fn three_nodes(
    configure: impl Fn(&mut NotaryConfig) + Copy,
) -> Result<(Node, Node, Node), Box<dyn std::error::Error>> {
    let n1 = Node::start_with(1, true, configure).await?;
    let n2 = Node::start_with(2, false, configure).await?;
    let n3 = Node::start_with(3, false, configure).await?;
    n1.notary.add_learner(2, n2.addr.clone()).await?;
    n1.notary.add_learner(3, n3.addr.clone()).await?;
    n1.notary
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await?;
    Ok((n1, n2, n3))
}

/// Poll `node`'s status until `done` holds; fails the test with `what` and the last status
/// after [`STEP`]. Raft's metrics trail the state machine: a learner's tree size reaches the
/// snapshot's before the metrics name the snapshot, so tests that read both wait here.
async fn wait_for_status(
    node: &Node,
    what: &str,
    done: impl Fn(&NotaryStatus) -> bool,
) -> NotaryStatus {
    let deadline = Instant::now() + STEP;
    loop {
        let status = node.notary.status();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "node {}: {what} within {STEP:?}: {status:?}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_all_have(
    nodes: &[&Node],
    receipts: &[(u64, qianlian_raft_store::Receipt)],
) -> TestResult {
    let size = receipts.len() as u64;
    for node in nodes {
        node.notary.wait_for_tree_size(size, STEP).await?;
        for (i, receipt) in receipts {
            let (bytes, hash) = node
                .notary
                .entry(receipt.log_index)
                .await?
                .ok_or_else(|| format!("node {} lacks {}", node.id, receipt.log_index))?;
            assert_eq!(Record::decode(&bytes)?, record(*i));
            assert_eq!(hash, receipt.record_hash);
        }
    }
    Ok(())
}

/// Append records `from..to` on `notary` from `tasks` concurrent tasks; receipts by record.
async fn append_from(
    notary: &Notary,
    from: u64,
    to: u64,
    tasks: u64,
) -> Result<Vec<(u64, qianlian_raft_store::Receipt)>, Box<dyn std::error::Error>> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let notary = notary.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = from + t;
            while i < to {
                out.push((i, notary.append(record(i)).await?));
                i += tasks;
            }
            Ok::<_, NotaryError>(out)
        }));
    }
    let mut receipts = Vec::new();
    for h in handles {
        receipts.extend(h.await??);
    }
    receipts.sort_by_key(|(_, r)| r.log_index);
    Ok(receipts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_leader() -> TestResult {
    let (mut n1, mut n2, mut n3) = three_nodes(|_| {}).await?;
    let status = n1.notary.status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(status.voters.get(&2), Some(&n2.addr));

    let mut receipts = append_from(&n1.notary, 0, 20, 20).await?;
    let indices: Vec<u64> = receipts.iter().map(|(_, r)| r.log_index).collect();
    assert_eq!(indices, (0..20).collect::<Vec<_>>());
    check_all_have(&[&n1, &n2, &n3], &receipts).await?;

    // A follower takes writes too: it forwards them to the leader.
    let forwarded = append_from(&n2.notary, 20, 30, 10).await?;
    let indices: Vec<u64> = forwarded.iter().map(|(_, r)| r.log_index).collect();
    assert_eq!(indices, (20..30).collect::<Vec<_>>());
    receipts.extend(forwarded);
    check_all_have(&[&n1, &n2, &n3], &receipts).await?;

    // Lose the leader: the other two elect one of themselves and the log goes on.
    n1.stop().await?;
    let started = Instant::now();
    let deadline = started + STEP;
    let new_leader = loop {
        let leader = n2.notary.wait_for_leader(STEP).await?;
        if leader != 1 {
            break leader;
        }
        assert!(Instant::now() < deadline, "no new leader within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("new leader {new_leader} after {:?}", started.elapsed());
    let leader = if new_leader == 2 { &n2 } else { &n3 };
    let follower = if new_leader == 2 { &n3 } else { &n2 };
    let receipt = leader.notary.append(record(30)).await?;
    assert_eq!(receipt.log_index, 30);
    receipts.push((30, receipt));
    let receipt = follower.notary.append(record(31)).await?;
    assert_eq!(receipt.log_index, 31);
    receipts.push((31, receipt));
    check_all_have(&[&n2, &n3], &receipts).await?;
    assert_eq!(follower.notary.tree_size(), 32);
    assert_eq!(
        n2.notary.root_at(32).await?,
        n3.notary.root_at(32).await?,
        "same log, same root"
    );

    n2.stop().await?;
    n3.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_on_any_node_and_their_throughput() -> TestResult {
    let (mut n1, mut n2, mut n3) = three_nodes(|_| {}).await?;
    for (node, from) in [(&n2, 0u64), (&n1, 2000)] {
        let started = Instant::now();
        let receipts = append_from(&node.notary, from, from + 2000, 200).await?;
        let elapsed = started.elapsed();
        eprintln!(
            "2000 appends from 200 tasks on node {} ({}): {elapsed:?}, {:.0} appends/s",
            node.id,
            if node.id == 1 {
                "leader"
            } else {
                "follower, forwarded"
            },
            2000.0 / elapsed.as_secs_f64()
        );
        assert_eq!(receipts.len(), 2000);
    }
    for node in [&n1, &n2, &n3] {
        node.notary.wait_for_tree_size(4000, STEP).await?;
    }
    for node in [&n1, &n2] {
        let started = Instant::now();
        for i in 0..20 {
            node.notary.append(record(5000 + i)).await?;
        }
        eprintln!(
            "one append at a time on node {}: {:?} each",
            node.id,
            started.elapsed() / 20
        );
    }
    n3.notary.wait_for_tree_size(4040, STEP).await?;
    assert_eq!(
        n1.notary.root_at(4040).await?,
        n3.notary.root_at(4040).await?
    );

    n1.notary.remove_node(3).await?;
    let status = n1.notary.status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert!(status.learners.is_empty());
    n1.stop().await?;
    n2.stop().await?;
    n3.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_majority_an_append_fails_in_bounded_time() -> TestResult {
    let commit_timeout = Duration::from_secs(2);
    let (mut n1, mut n2, mut n3) = three_nodes(|c| c.commit_timeout = commit_timeout).await?;
    n1.notary.append(record(0)).await?;
    n3.notary.wait_for_tree_size(1, STEP).await?;

    // Leader and one follower gone: node 3 is alone.
    n1.stop().await?;
    n2.stop().await?;
    for attempt in 0..2 {
        let started = Instant::now();
        let res = n3.notary.append(record(1 + attempt)).await;
        let elapsed = started.elapsed();
        eprintln!("append without a majority: {res:?} after {elapsed:?}");
        assert!(matches!(res, Err(NotaryError::Unavailable(_))), "{res:?}");
        assert!(
            elapsed < commit_timeout + Duration::from_millis(500),
            "took {elapsed:?}"
        );
    }
    n3.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_are_cosigned_by_the_members_that_applied_them() -> TestResult {
    let (mut n1, mut n2, mut n3) = three_nodes(|_| {}).await?;
    let receipts = append_from(&n2.notary, 0, 25, 5).await?;
    for node in [&n1, &n2, &n3] {
        node.notary.wait_for_tree_size(25, STEP).await?;
    }
    let trusted: Vec<_> = [1, 2, 3].map(|id| key(id).verifier()).to_vec();
    // Each node's own latest head is what it answers, its own signature first, then the
    // cosigners in member order; all three applied 25 records.
    let checkpoint = n3.notary.checkpoint().await?;
    assert_eq!(checkpoint.size, 25);
    assert_eq!(checkpoint.root, n1.notary.root_at(25).await?);
    assert_eq!(checkpoint.signers, ["node-3", "node-1", "node-2"]);
    let opened = open_checkpoint(&checkpoint.note, &trusted)?
        .require_origin("gov.example/qianlian")?
        .require_signers(3)?;
    assert_eq!(opened.checkpoint.size, 25);
    // An inclusion proof against the cosigned head, checked as a phone would.
    let (_, receipt) = receipts[7];
    let proof = n1.notary.inclusion_proof(receipt.log_index, 25).await?;
    verify_inclusion(
        &receipt.record_hash,
        receipt.log_index,
        25,
        &proof,
        &opened.checkpoint.root,
    )?;

    // Right after a commit the followers have not applied it yet; they are asked again.
    let receipt = n1.notary.append(record(25)).await?;
    let checkpoint = n1.notary.checkpoint().await?;
    assert_eq!(checkpoint.size, receipt.log_index + 1);
    assert_eq!(checkpoint.signers, ["node-1", "node-2", "node-3"]);

    // A member that is down is left out, within the cosign timeout.
    n2.stop().await?;
    let started = Instant::now();
    let checkpoint = n1.notary.checkpoint().await?;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(checkpoint.signers, ["node-1", "node-3"]);
    open_checkpoint(&checkpoint.note, &trusted)?.require_signers(2)?;
    n1.stop().await?;
    n3.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_catches_up_by_snapshot_after_the_log_was_purged() -> TestResult {
    let small = |c: &mut NotaryConfig| {
        c.snapshot_every = 10;
        c.log_kept_after_snapshot = 2;
    };
    let mut n1 = Node::start_with(1, true, small).await?;
    // 40 Raft entries of 50 records: several snapshots, the log purged behind them.
    for batch in 0..40u64 {
        let records = (batch * 50..(batch + 1) * 50).map(record).collect();
        n1.notary.append_batch(records).await?;
    }
    let status = wait_for_status(&n1, "a purged log", |s| s.purged_raft_index.is_some()).await;
    eprintln!(
        "leader: snapshot at raft index {:?}, purged to {:?}",
        status.snapshot_raft_index, status.purged_raft_index
    );

    let mut n2 = Node::start_with(2, false, small).await?;
    let started = Instant::now();
    n1.notary.add_learner(2, n2.addr.clone()).await?;
    n2.notary.wait_for_tree_size(2000, STEP).await?;
    eprintln!("learner caught up 2000 records in {:?}", started.elapsed());
    wait_for_status(&n2, "an installed snapshot", |s| {
        s.snapshot_raft_index.is_some()
    })
    .await;
    assert_eq!(
        n2.notary.root_at(2000).await?,
        n1.notary.root_at(2000).await?
    );
    let (bytes, _) = n2.notary.entry(1234).await?.ok_or("missing")?;
    assert_eq!(Record::decode(&bytes)?, record(1234));
    assert_eq!(n2.notary.index_of(&record(1999).hash()).await?, Some(1999));

    // And it follows the log from there.
    let receipt = n1.notary.append(record(2000)).await?;
    n2.notary.wait_for_tree_size(2001, STEP).await?;
    assert_eq!(
        n2.notary.inclusion_proof(receipt.log_index, 2001).await?,
        n1.notary.inclusion_proof(receipt.log_index, 2001).await?
    );
    n1.stop().await?;
    n2.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn license_status_and_status_lists_agree_on_every_node() -> TestResult {
    let (mut n1, mut n2, mut n3) = three_nodes(|_| {}).await?;
    let (license, other, holder) = ([0x11; 32], [0x05; 32], [0x22; 32]);
    // Written through different nodes: followers forward to the leader.
    n2.notary.append(issued(1, license, holder)).await?;
    n3.notary.append(issued(2, other, holder)).await?;
    n1.notary
        .append(status(
            3,
            license,
            LicenseStatusChange::Suspended,
            "court-order",
        ))
        .await?;
    let revoked = n3
        .notary
        .append(status(4, other, LicenseStatusChange::Revoked, "fraud"))
        .await?;
    for node in [&n1, &n2, &n3] {
        node.notary.wait_for_tree_size(4, STEP).await?;
    }
    // Each node answers from its own applied state, identically.
    let want = n1.notary.license(&other).await?;
    assert!(matches!(
        want.as_ref().map(|v| &v.status),
        Some(LicenseCurrentStatus::Revoked { index, .. }) if *index == revoked.log_index
    ));
    for node in [&n2, &n3] {
        assert_eq!(node.notary.license(&other).await?, want, "node {}", node.id);
        assert_eq!(
            node.notary.holder_records(&holder).await?,
            [0, 1, 2, 3],
            "node {}",
            node.id
        );
    }

    // The status list of each node: cosigned by all three, over one body.
    let trusted: Vec<_> = [1, 2, 3].map(|id| key(id).verifier()).to_vec();
    let mut bodies = Vec::new();
    for node in [&n1, &n2, &n3] {
        let cosigned = node.notary.status_list().await?;
        assert_eq!(cosigned.tree_size, 4);
        assert_eq!(
            cosigned.signers.len(),
            3,
            "node {}: {:?}",
            node.id,
            cosigned.signers
        );
        assert_eq!(cosigned.signers[0], format!("node-{}", node.id));
        let opened = open_status_list(&cosigned.note, &trusted)?
            .require_origin("gov.example/qianlian")?
            .require_signers(3)?;
        let list = opened.list;
        assert_eq!(list.root, n1.notary.root_at(4).await?);
        assert_eq!(list.time, unix(4));
        let states: Vec<_> = list
            .entries
            .iter()
            .map(|e| (e.license_hash, e.state, e.since))
            .collect();
        assert_eq!(
            states,
            [
                (other, LicenseState::Revoked, unix(4)),
                (license, LicenseState::Suspended, unix(3)),
            ]
        );
        bodies.push(SignedNote::parse(&cosigned.note)?.text().to_owned());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    // k of n: with one member down, two signatures, still enough for k = 2.
    n3.stop().await?;
    n1.notary
        .append(status(5, license, LicenseStatusChange::Revoked, "fraud"))
        .await?;
    let cosigned = n1.notary.status_list().await?;
    assert_eq!(cosigned.tree_size, 5);
    assert_eq!(cosigned.signers, ["node-1", "node-2"]);
    let list = open_status_list(&cosigned.note, &trusted)?
        .require_signers(2)?
        .list;
    assert_eq!(
        list.lookup(&license).map(|e| e.state),
        Some(LicenseState::Revoked)
    );
    n1.stop().await?;
    n2.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_caught_up_by_snapshot_knows_the_licenses() -> TestResult {
    let small = |c: &mut NotaryConfig| {
        c.snapshot_every = 5;
        c.log_kept_after_snapshot = 1;
    };
    let mut n1 = Node::start_with(1, true, small).await?;
    let licenses: Vec<[u8; 32]> = (0..20u8).map(|i| [i + 1; 32]).collect();
    let holder = [0x22; 32];
    // 20 Raft entries, each with access records and license records: several snapshots.
    for (batch, license) in licenses.iter().enumerate() {
        let batch = batch as u64;
        let mut records: Vec<Record> = (batch * 10..batch * 10 + 7).map(record).collect();
        records.push(issued(batch * 10 + 7, *license, holder));
        if let Some(previous) = batch.checked_sub(1) {
            let change = if previous % 2 == 0 {
                LicenseStatusChange::Suspended
            } else {
                LicenseStatusChange::Revoked
            };
            records.push(status(
                batch * 10 + 8,
                licenses[previous as usize],
                change,
                "audit",
            ));
        }
        n1.notary.append_batch(records).await?;
    }
    wait_for_status(&n1, "a purged log", |s| s.purged_raft_index.is_some()).await;
    let size = n1.notary.tree_size();

    let mut n2 = Node::start_with(2, false, small).await?;
    n1.notary.add_learner(2, n2.addr.clone()).await?;
    n2.notary.wait_for_tree_size(size, STEP).await?;
    wait_for_status(&n2, "an installed snapshot", |s| {
        s.snapshot_raft_index.is_some()
    })
    .await;
    for license in &licenses {
        let want = n1.notary.license(license).await?;
        assert!(want.is_some());
        assert_eq!(n2.notary.license(license).await?, want);
    }
    let records = n1.notary.holder_records(&holder).await?;
    assert_eq!(records.len(), 20 + 19);
    assert_eq!(n2.notary.holder_records(&holder).await?, records);
    assert_eq!(
        n2.notary.status_list_at(size).await?.signers,
        ["node-2", "node-1"]
    );
    n1.stop().await?;
    n2.stop().await?;
    Ok(())
}

#[tokio::test]
async fn initialize_refuses_a_second_time() -> TestResult {
    let mut n = Node::start(1, true).await?;
    let again = n
        .notary
        .initialize(BTreeMap::from([(1, n.addr.clone())]))
        .await;
    assert!(
        matches!(again, Err(NotaryError::Membership(_))),
        "{again:?}"
    );
    n.stop().await?;
    Ok(())
}

/// The chunked InstallSnapshot path end to end: our encoding, the gRPC service, openraft's
/// reassembly and the state machine's install, on a node that has never seen the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streams_in_chunks_over_grpc() -> TestResult {
    use openraft::raft::InstallSnapshotRequest;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use openraft::{
        BasicNode, EntryPayload, Membership, RaftNetwork, RaftNetworkFactory, RaftSnapshotBuilder,
        Vote,
    };
    use qianlian_raft_store::db::Db;
    use qianlian_raft_store::network::NetworkFactory;
    use qianlian_raft_store::state_machine::{StateMachineConfig, StateMachineStore};
    use qianlian_raft_store::types::{Entry, Request};
    use tokio::io::AsyncReadExt;

    // A leader-side state machine with 3000 records (about 1.3 MB of snapshot).
    let leader_dir = tempfile::tempdir()?;
    let mut leader = StateMachineStore::new(
        Db::open(&leader_dir.path().join("db"))?,
        StateMachineConfig::new(leader_dir.path().join("snapshots")),
    )
    .await?;
    let membership = Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([
            (1, BasicNode::new("http://127.0.0.1:1")),
            (2, BasicNode::new("http://127.0.0.1:2")),
        ]),
    );
    leader
        .apply([
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Normal(Request::Append {
                    records: (0..3000).map(record).collect(),
                }),
            },
        ])
        .await?;
    let mut snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let mut data = Vec::new();
    snapshot.snapshot.read_to_end(&mut data).await?;

    let mut receiver = Node::start(2, false).await?;
    let mut client = NetworkFactory::new(1, None)
        .new_client(2, &BasicNode::new(receiver.addr.clone()))
        .await;
    let chunk = data.len() / 3 + 1;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let rpc = InstallSnapshotRequest {
            vote: Vote::new_committed(1, 1),
            meta: snapshot.meta.clone(),
            offset: offset as u64,
            data: data[offset..end].to_vec(),
            done: end == data.len(),
        };
        client
            .install_snapshot(rpc, openraft::network::RPCOption::new(STEP))
            .await?;
        offset = end;
    }
    receiver.notary.wait_for_tree_size(3000, STEP).await?;
    for i in [0, 1499, 2999] {
        let (bytes, _) = receiver.notary.entry(i).await?.ok_or("missing")?;
        assert_eq!(Record::decode(&bytes)?, record(i));
    }
    assert_eq!(
        receiver.notary.root_at(3000).await?,
        leader.reader().root_at(3000).await?
    );
    assert_eq!(
        receiver
            .notary
            .status()
            .learners
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [2]
    );
    receiver.stop().await?;
    Ok(())
}

/// `record(i)` (market-regulation's side) sealed as market-regulation's gateway with `key`.
fn sealed(i: u64, key: &NoteSigner) -> Record {
    use qianlian_verifier::record::{Originator, SealedRecord, SignerRole};
    let originator = Originator {
        role: SignerRole::Gateway,
        department: "market-regulation".into(),
        key_id: key.name().to_owned(),
        public_key: [0; 32],
    };
    Record::Sealed(Box::new(SealedRecord::seal(
        record(i),
        originator,
        key.signing_key(),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_without_its_departments_seal_is_refused_on_every_node() -> TestResult {
    let (n1, n2, n3) = three_nodes(|_| {}).await?;
    wait_for_status(&n1, "a leader", |s| s.leader.is_some()).await;
    // The directory publishes node 1's key as market-regulation's gateway key.
    n1.notary.append(directory_with_gateway_keys(&[1])?).await?;
    for node in [&n1, &n2, &n3] {
        node.notary.wait_for_tree_size(1, STEP).await?;
    }
    // From a follower and from the leader: unsealed, sealed by another node's key.
    for (node, forged, reason) in [
        (&n2, record(100), "is not signed"),
        (
            &n3,
            sealed(101, &key(3)),
            "of market-regulation is not among the gateway keys",
        ),
        (
            &n1,
            sealed(102, &key(2)),
            "of market-regulation is not among the gateway keys",
        ),
    ] {
        match node.notary.append(forged).await {
            Err(e @ NotaryError::Refused { .. }) => {
                assert!(e.to_string().contains(reason), "{e}");
            }
            other => panic!("node {} accepted a forged record: {other:?}", node.id),
        }
    }
    // The sealed record goes in from any node; every node holds the same two records.
    let receipt = n3.notary.append(sealed(103, &key(1))).await?;
    assert_eq!(receipt.log_index, 1);
    let mut roots = BTreeSet::new();
    for node in [&n1, &n2, &n3] {
        node.notary.wait_for_tree_size(2, STEP).await?;
        assert_eq!(node.notary.tree_size(), 2);
        roots.insert(node.notary.root_at(2).await?);
    }
    assert_eq!(roots.len(), 1);
    Ok(())
}

/// The directory record that publishes the keys of nodes `ids` as market-regulation's gateway
/// keys.
fn directory_with_gateway_keys(ids: &[u64]) -> Result<Record, Box<dyn std::error::Error>> {
    use qianlian_raft_store::record::{Caller, ConfigChange, ConfigRecord};
    use qianlian_verifier::license::DepartmentKey;
    let mut node_keys = Vec::new();
    for &id in ids {
        let entry = DepartmentKey::new(key(id).name(), &key(id).signing_key().verifying_key());
        let public = serde_json::to_value(entry)?["public_key"]
            .as_str()
            .ok_or("base64")?
            .to_owned();
        node_keys.push(format!(
            "{{ key_id = \"{}\", public_key = \"{public}\" }}",
            key(id).name()
        ));
    }
    let toml = format!(
        "[[department]]\nid = \"market-regulation\"\nname = \"M\"\nnode_keys = [{}]\n",
        node_keys.join(", ")
    );
    Ok(Record::Config(ConfigRecord {
        request_id: "directory".into(),
        time_unix_ms: 1_764_000_000_000,
        caller: Caller {
            department: "ops".into(),
            role: "operator".into(),
            cert_fingerprint: "01".repeat(32),
        },
        change: ConfigChange::Directory { toml },
    }))
}

/// A node's seal as market-regulation's gateway, before the notary signs it.
fn gateway_of(id: u64) -> qianlian_verifier::record::Originator {
    qianlian_verifier::record::Originator {
        role: qianlian_verifier::record::SignerRole::Gateway,
        department: "market-regulation".into(),
        key_id: key(id).name().to_owned(),
        public_key: key(id).signing_key().verifying_key().to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_a_node_seals_share_one_signature_per_batch_and_apply_on_every_node() -> TestResult
{
    let (n1, n2, n3) = three_nodes(|_| {}).await?;
    wait_for_status(&n1, "a leader", |s| s.leader.is_some()).await;
    n1.notary
        .append(directory_with_gateway_keys(&[1, 2])?)
        .await?;
    // Forty records at once from a follower (sealed there, forwarded) and forty from the
    // leader (sealed where they are written).
    let mut calls = Vec::new();
    for (node, id, from) in [(&n2, 2, 200), (&n1, 1, 300)] {
        for i in from..from + 40 {
            let notary = node.notary.clone();
            calls.push(tokio::spawn(async move {
                notary.append_sealed(record(i), gateway_of(id)).await
            }));
        }
    }
    let mut written = BTreeSet::new();
    for call in calls {
        written.insert(call.await??.log_index);
    }
    // Each batch's signature record follows its records.
    let size = written.last().copied().ok_or("no receipt")? + 2;
    for node in [&n1, &n2, &n3] {
        node.notary.wait_for_tree_size(size, STEP).await?;
    }
    let mut leaves = Vec::new();
    let mut covered = BTreeSet::new();
    let mut signatures = 0;
    for index in 0..size {
        let (bytes, _) = n3.notary.entry(index).await?.ok_or("entry")?;
        if let Record::BatchSignature(s) = Record::decode(&bytes)? {
            let start = index as usize - s.count as usize;
            s.verify(&leaves[start..index as usize])?;
            covered.extend(start as u64..index);
            signatures += 1;
        }
        leaves.push(qianlian_verifier::leaf_hash(&bytes));
    }
    assert!(
        written.is_subset(&covered),
        "every record is covered by a signature: {written:?} {covered:?}"
    );
    assert!(
        signatures < 40,
        "80 records sealed under {signatures} signatures: one per batch"
    );
    let mut roots = BTreeSet::new();
    for node in [&n1, &n2, &n3] {
        roots.insert(node.notary.root_at(size).await?);
        assert_eq!(node.notary.records_refused(), 0);
    }
    assert_eq!(roots.len(), 1);
    Ok(())
}
