use std::collections::{BTreeMap, BTreeSet};

use openraft::entry::RaftEntry;
use openraft::error::{Fatal, SnapshotMismatch};
use openraft::testing::log_id;
use openraft::{
    AnyError, EntryPayload, Membership, SnapshotMeta, SnapshotSegmentId, StorageError,
    StorageIOError, Vote,
};

use super::*;
use crate::checkpoint::{CosignRefusal, Cosignature};
use crate::record::{AccessRecord, Action, Caller, Decision, Record};
use crate::types::{Entry, Request, StoredMembership};

fn record() -> Record {
    Record::Access(AccessRecord {
        request_id: "0b6f6c1e-5d1a-4c2e-9f0e-3a8d7c6b5a40".into(),
        time_unix_ms: 1_764_000_000_000,
        caller: Caller {
            department: "housing".into(),
            role: "department".into(),
            cert_fingerprint: "cd".repeat(32),
        },
        owner: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: "91520100MA6DKJ8X3T".into(),
        action: Action::Read,
        purpose: "permit-review".into(),
        decision: Decision::Deny,
        policy_version: "3".into(),
        rule: "no rule".into(),
        request_digest: [1; 32],
        response_digest: None,
    })
}

fn membership() -> Membership<NodeId, BasicNode> {
    Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (1, BasicNode::new("https://10.0.0.1:7400")),
            (2, BasicNode::new("https://10.0.0.2:7400")),
            (3, BasicNode::new("https://10.0.0.3:7400")),
            (4, BasicNode::new("https://10.0.0.4:7400")),
        ]),
    )
}

/// Encode, decode and encode again: equal bytes and equal `Debug` views mean nothing was lost.
fn round_trips<T: Serialize + DeserializeOwned + fmt::Debug>(value: &T) {
    let bytes = encode_message(value).unwrap_or_default();
    let back: T = match decode_message(&bytes) {
        Ok(back) => back,
        Err(e) => panic!("{value:?} does not decode: {e}"),
    };
    assert_eq!(format!("{back:?}"), format!("{value:?}"));
    assert_eq!(encode_message(&back).unwrap_or_default(), bytes);
}

#[test]
fn every_raft_message_round_trips() {
    let normal = Entry {
        log_id: log_id(3, 1, 11),
        payload: EntryPayload::Normal(Request::Append {
            records: vec![record(), record()].into(),
        }),
    };
    let entries = vec![
        Entry::new_blank(log_id(3, 1, 10)),
        normal,
        Entry::new_membership(log_id(3, 1, 12), membership()),
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(2, 2, 9)),
        leader_commit: Some(log_id(2, 2, 8)),
        entries,
    };
    // AppendEntriesRequest has no Debug; compare its parts.
    let bytes = encode_message(&append).unwrap_or_default();
    let back: AppendEntriesRequest<TypeConfig> =
        decode_message(&bytes).unwrap_or_else(|e| panic!("append entries: {e}"));
    assert_eq!(back.vote, append.vote);
    assert_eq!(back.prev_log_id, append.prev_log_id);
    assert_eq!(back.leader_commit, append.leader_commit);
    assert_eq!(
        format!("{:?}", back.entries),
        format!("{:?}", append.entries)
    );

    for response in [
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 11))),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(4, 2)),
    ] {
        round_trips(&Ok::<_, RaftError<NodeId>>(response));
    }
    let storage: StorageError<NodeId> =
        StorageIOError::write_logs(AnyError::error("disk full")).into();
    round_trips(&Err::<AppendEntriesResponse<NodeId>, _>(
        RaftError::<NodeId>::Fatal(Fatal::StorageError(storage)),
    ));
    round_trips(&Err::<VoteResponse<NodeId>, _>(RaftError::<NodeId>::Fatal(
        Fatal::Stopped,
    )));

    round_trips(&VoteRequest::new(Vote::new(5, 2), Some(log_id(4, 1, 20))));
    round_trips(&Ok::<_, RaftError<NodeId>>(VoteResponse {
        vote: Vote::new(5, 2),
        vote_granted: true,
        last_log_id: None,
    }));

    round_trips(&InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(5, 2),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(5, 2, 100)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), membership()),
            snapshot_id: "5-2-100-42".into(),
        },
        offset: 3 * 1024 * 1024,
        data: vec![0, 1, 2, 254, 255],
        done: true,
    });
    round_trips(&Ok::<_, RaftError<NodeId, InstallSnapshotError>>(
        InstallSnapshotResponse {
            vote: Vote::new(5, 2),
        },
    ));
    round_trips(&Err::<InstallSnapshotResponse<NodeId>, _>(RaftError::<
        NodeId,
        _,
    >::APIError(
        InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "a".into(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: "b".into(),
                offset: 7,
            },
        }),
    )));
}

#[test]
fn snapshot_chunks_stay_compact() {
    // A JSON array would spend up to four bytes per byte of a chunk.
    let chunk = vec![0xabu8; 4096];
    let bytes = encode_message(&chunk).unwrap_or_default();
    assert!(bytes.len() < 4096 + 8, "{} bytes", bytes.len());
}

#[test]
fn foreign_or_damaged_messages_are_refused() {
    let mut bytes = encode_message(&VoteRequest::new(Vote::new(1, 1), None)).unwrap_or_default();
    assert!(decode_message::<VoteRequest<NodeId>>(&bytes).is_ok());
    bytes.push(0);
    assert!(matches!(
        decode_message::<VoteRequest<NodeId>>(&bytes),
        Err(WireError::Malformed(_))
    ));
    bytes[0] = 2;
    assert_eq!(
        decode_message::<VoteRequest<NodeId>>(&bytes).err(),
        Some(WireError::UnknownFormat(2))
    );
    assert!(matches!(
        decode_message::<VoteRequest<NodeId>>(&[]),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decode_message::<AppendEntriesRequest<TypeConfig>>(&[1, 0xff]),
        Err(WireError::Malformed(_))
    ));
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(2))
}

#[tokio::test]
async fn a_peer_that_is_down_is_unreachable() {
    // Bind then drop: a local port nobody listens on.
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("no local port: {e}"),
    };
    let mut factory = NetworkFactory::new(1, None);
    let mut client = factory
        .new_client(2, &BasicNode::new(format!("http://127.0.0.1:{port}")))
        .await;
    let res = client
        .vote(VoteRequest::new(Vote::new(1, 1), None), option())
        .await;
    assert!(matches!(res, Err(RPCError::Unreachable(_))), "{res:?}");
}

#[tokio::test]
async fn a_bad_peer_address_is_unreachable_not_a_panic() {
    let mut factory = NetworkFactory::new(1, None);
    let mut client = factory.new_client(2, &BasicNode::new("not a url")).await;
    let res = client
        .vote(VoteRequest::new(Vote::new(1, 1), None), option())
        .await;
    assert!(matches!(res, Err(RPCError::Unreachable(_))), "{res:?}");
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    // Accepts TCP but never speaks HTTP/2.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut factory = NetworkFactory::new(1, None);
    let mut client = factory
        .new_client(2, &BasicNode::new(format!("http://{addr}")))
        .await;
    let res = client
        .vote(
            VoteRequest::new(Vote::new(1, 1), None),
            RPCOption::new(Duration::from_millis(300)),
        )
        .await;
    assert!(matches!(res, Err(RPCError::Timeout(_))), "{res:?}");
}

#[test]
fn node_calls_round_trip() {
    let forward = ForwardRequest {
        records: vec![record(), record()],
    };
    let bytes = encode_message(&forward).unwrap_or_default();
    assert_eq!(decode_message::<ForwardRequest>(&bytes).ok(), Some(forward));
    for reply in [
        Ok(vec![ForwardedReceipt {
            log_index: 7,
            record_hash: [3; 32],
        }]),
        Err(ForwardRefusal::NotLeader { leader: Some(2) }),
        Err(ForwardRefusal::TimedOut { after_ms: 10_000 }),
        Err(ForwardRefusal::Failed {
            reason: "disk full".into(),
        }),
    ] {
        round_trips(&reply);
    }
    round_trips(&CosignRequest { tree_size: 42 });
    for reply in [
        Ok(Cosignature {
            verifier_key: "node-1+12345678+AQ==".into(),
            signature_line: "— node-1 AAAA\n".into(),
        }),
        Err(CosignRefusal::NotYet { applied: 41 }),
        Err(CosignRefusal::NoKey),
    ] {
        round_trips(&reply);
    }
}

#[tokio::test]
async fn a_peer_without_node_calls_refuses_them_undelivered()
-> Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;

    use openraft::{Config, Raft};
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;

    use crate::db::Db;
    use crate::log_store::LogStore;
    use crate::state_machine::{StateMachineConfig, StateMachineStore};

    let dir = tempfile::tempdir()?;
    let db = Db::open(&dir.path().join("db"))?;
    let sm =
        StateMachineStore::new(db.clone(), StateMachineConfig::new(dir.path().join("s"))).await?;
    let config = Arc::new(Config::default().validate()?);
    let raft: Raft<TypeConfig> = Raft::new(
        9,
        config,
        NetworkFactory::new(9, None),
        LogStore::new(db),
        sm,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    let service = RaftService::new(raft.clone()).into_server();
    let server = tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let peers = Peers::new(None);
    let ttl = Duration::from_secs(5);
    let forwarded = peers.forward(&addr, vec![record()], ttl).await;
    assert!(
        matches!(forwarded, Err(PeerCallError::NotDelivered(_))),
        "{forwarded:?}"
    );
    let cosigned = peers.cosign(&addr, 1, ttl).await;
    assert!(
        matches!(cosigned, Err(PeerCallError::NotDelivered(_))),
        "{cosigned:?}"
    );
    let cosigned = peers.cosign_status(&addr, 1, ttl).await;
    assert!(
        matches!(cosigned, Err(PeerCallError::NotDelivered(_))),
        "{cosigned:?}"
    );
    server.abort();
    raft.shutdown().await?;
    Ok(())
}
