//! Three notary nodes in one process, talking Raft over real gRPC on 127.0.0.1 (plain HTTP/2).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use qianlian_raft_store::notary::{
    LeaderHint, Notary, NotaryConfig, NotaryError, Unavailability, UnavailableReason,
};
use qianlian_raft_store::record::Record;
use support::{STEP, record};
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

impl Node {
    async fn start(id: u64, bootstrap: bool) -> Result<Node, Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let dir = tempfile::tempdir()?;
        let mut config = NotaryConfig::new(id, dir.path(), addr.clone());
        config.bootstrap_single = bootstrap;
        let notary = Notary::open(config).await?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = notary.raft_service();
        tokio::spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_leader() -> TestResult {
    let mut n1 = Node::start(1, true).await?;
    let mut n2 = Node::start(2, false).await?;
    let mut n3 = Node::start(3, false).await?;

    n1.notary.add_learner(2, n2.addr.clone()).await?;
    n1.notary.add_learner(3, n3.addr.clone()).await?;
    n1.notary
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await?;
    let status = n1.notary.status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(status.voters.get(&2), Some(&n2.addr));

    let mut receipts = Vec::new();
    let mut handles = Vec::new();
    for i in 0..20 {
        let notary = n1.notary.clone();
        handles.push(tokio::spawn(
            async move { (i, notary.append(record(i)).await) },
        ));
    }
    for h in handles {
        let (i, receipt) = h.await?;
        receipts.push((i, receipt?));
    }
    receipts.sort_by_key(|(_, r)| r.log_index);
    let indices: Vec<u64> = receipts.iter().map(|(_, r)| r.log_index).collect();
    assert_eq!(indices, (0..20).collect::<Vec<_>>());
    check_all_have(&[&n1, &n2, &n3], &receipts).await?;

    // A follower does not take writes; it names the leader.
    let refused = n2.notary.append(record(100)).await;
    assert_eq!(
        refused,
        Err(NotaryError::Unavailable(Unavailability {
            reason: UnavailableReason::NotLeader,
            leader: Some(LeaderHint {
                node_id: 1,
                addr: Some(n1.addr.clone()),
            }),
        }))
    );

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
    let receipt = leader.notary.append(record(20)).await?;
    assert_eq!(receipt.log_index, 20);
    receipts.push((20, receipt));
    check_all_have(&[&n2, &n3], &receipts).await?;
    assert_eq!(follower.notary.tree_size(), 21);

    n2.stop().await?;
    n3.stop().await?;
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
    use qianlian_raft_store::state_machine::StateMachineStore;
    use qianlian_raft_store::types::{Entry, Request};

    // A leader-side state machine with 3000 records (about 1 MB of snapshot).
    let leader_dir = tempfile::tempdir()?;
    let mut leader = StateMachineStore::new(Db::open(leader_dir.path())?).await?;
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
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let data = snapshot.snapshot.into_inner();

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
