use std::collections::BTreeSet;

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::{BasicNode, Membership};

use super::*;
use crate::record::{AccessRecord, Action, Caller, Decision};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn record(i: u64) -> Record {
    Record::Access(AccessRecord {
        request_id: format!("req-{i}"),
        time_unix_ms: 1_764_000_000_000 + i,
        caller: Caller {
            department: "housing".into(),
            role: "department".into(),
            cert_fingerprint: "ab".repeat(32),
        },
        owner: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: "91520100MA6DKJ8X3T".into(),
        action: Action::Read,
        purpose: "permit-review".into(),
        decision: Decision::Allow,
        policy_version: "1".into(),
        rule: "p".into(),
        request_digest: [7; 32],
        response_digest: None,
    })
}

fn append(index: u64, records: impl IntoIterator<Item = u64>) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Request::Append {
            records: records.into_iter().map(record).collect(),
        }),
    }
}

fn voters(ids: &[u64]) -> Entry {
    let m = Membership::<NodeId, BasicNode>::new(
        vec![ids.iter().copied().collect::<BTreeSet<_>>()],
        None,
    );
    Entry::new_membership(log_id(1, 1, 2), m)
}

async fn open(dir: &std::path::Path) -> Result<(Db, StateMachineStore), StoreError> {
    let db = Db::open(dir)?;
    let sm = StateMachineStore::new(db.clone()).await?;
    Ok((db, sm))
}

#[tokio::test]
async fn applying_assigns_dense_log_indices_and_answers_hashes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    let reader = sm.reader();
    let responses = sm
        .apply([
            Entry::new_blank(log_id(1, 1, 1)),
            voters(&[1]),
            append(3, 0..3),
        ])
        .await?;
    assert_eq!(
        responses[0],
        Response {
            first_index: 0,
            hashes: vec![]
        }
    );
    assert_eq!(
        responses[1],
        Response {
            first_index: 0,
            hashes: vec![]
        }
    );
    assert_eq!(responses[2].first_index, 0);
    assert_eq!(
        responses[2].hashes,
        (0..3).map(|i| record(i).hash()).collect::<Vec<_>>()
    );

    let responses = sm.apply([append(4, 3..5), append(5, 5..6)]).await?;
    assert_eq!(responses[0].first_index, 3);
    assert_eq!(responses[1].first_index, 5);
    assert_eq!(reader.tree_size(), 6);
    for i in 0..6 {
        assert_eq!(reader.record(i).await?, Some(record(i).encode()));
    }
    assert_eq!(reader.record(6).await?, None);
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(1, 1, 5)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 2)));
    assert_eq!(
        reader
            .wait_for_tree_size(6, Duration::from_millis(10))
            .await,
        Ok(6)
    );
    assert_eq!(
        reader
            .wait_for_tree_size(7, Duration::from_millis(10))
            .await,
        Err(6)
    );
    Ok(())
}

#[tokio::test]
async fn applied_state_survives_reopening() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (db, mut sm) = open(dir.path()).await?;
        sm.apply([voters(&[1]), append(3, 0..4)]).await?;
        db.close();
    }
    let (_db, mut sm) = open(dir.path()).await?;
    assert_eq!(sm.reader().tree_size(), 4);
    assert_eq!(sm.applied_state().await?.0, Some(log_id(1, 1, 3)));
    let responses = sm.apply([append(4, 4..5)]).await?;
    assert_eq!(responses[0].first_index, 4);
    Ok(())
}

#[tokio::test]
async fn installing_a_snapshot_replaces_the_state() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    let (follower_db, mut follower) = open(follower_dir.path()).await?;
    leader.apply([voters(&[1, 2]), append(3, 0..5)]).await?;
    // The follower holds a longer, different history that the snapshot must erase.
    follower.apply([append(1, 100..108)]).await?;

    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let current = leader.get_current_snapshot().await?.map(|s| s.meta);
    assert_eq!(current.as_ref(), Some(&snapshot.meta));
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;

    let reader = follower.reader();
    assert_eq!(reader.tree_size(), 5);
    for i in 0..5 {
        assert_eq!(reader.record(i).await?, Some(record(i).encode()));
    }
    assert_eq!(reader.record(6).await?, None);
    assert_eq!(follower.applied_state().await?.0, Some(log_id(1, 1, 3)));
    let installed = follower.get_current_snapshot().await?.map(|s| s.meta);
    assert_eq!(installed.as_ref(), Some(&snapshot.meta));

    // Nothing of the old history is left on disk: reopening passes the consistency check.
    follower_db.close();
    let (_db, sm) = open(follower_dir.path()).await?;
    assert_eq!(sm.reader().tree_size(), 5);
    Ok(())
}

#[tokio::test]
async fn a_snapshot_that_is_not_a_log_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    sm.apply([append(1, 0..2)]).await?;
    let mut meta = sm.get_snapshot_builder().await.build_snapshot().await?.meta;
    meta.last_log_id = Some(log_id(2, 1, 9));
    let forged = encode_value(
        "snapshot",
        &SnapshotPayload {
            tree_size: 1,
            records: vec![vec![1, 0xff, 0xff]],
        },
    )?;
    let res = sm
        .install_snapshot(&meta, Box::new(Cursor::new(forged)))
        .await;
    assert!(res.is_err());
    let garbage = sm
        .install_snapshot(&meta, Box::new(Cursor::new(vec![1, 2, 3])))
        .await;
    assert!(garbage.is_err());
    // The state is untouched.
    assert_eq!(sm.reader().tree_size(), 2);
    assert_eq!(sm.reader().record(1).await?, Some(record(1).encode()));
    Ok(())
}

#[tokio::test]
async fn damaged_storage_gives_typed_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, mut sm) = open(dir.path()).await?;
    sm.apply([append(1, 0..3)]).await?;
    let reader = sm.reader();

    db.with(|db| Ok(db.put_cf(db::cf(db, CF_RECORDS)?, index_key(1), [1u8, 0xff])?))?;
    assert!(matches!(
        reader.record(1).await,
        Err(StoreError::Corrupt { .. })
    ));
    db.with(|db| Ok(db.delete_cf(db::cf(db, CF_RECORDS)?, index_key(1))?))?;
    assert!(matches!(
        reader.record(1).await,
        Err(StoreError::Corrupt { .. })
    ));

    // A record missing at the end contradicts the stored tree size.
    db.with(|db| Ok(db.delete_cf(db::cf(db, CF_RECORDS)?, index_key(2))?))?;
    db.close();
    let reopened = open(dir.path()).await;
    assert!(
        matches!(reopened, Err(StoreError::Corrupt { .. })),
        "{reopened:?}"
    );

    // A tree size written by a newer layout.
    let db = Db::open(dir.path())?;
    db.with(|db| Ok(db.put_cf(db::cf(db, CF_SM_META)?, KEY_TREE_SIZE, [2u8, 3])?))?;
    db.close();
    let reopened = open(dir.path()).await;
    assert!(
        matches!(reopened, Err(StoreError::UnknownFormat { version: 2, .. })),
        "{reopened:?}"
    );
    Ok(())
}
