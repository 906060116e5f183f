use std::collections::BTreeSet;

use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::{BasicNode, Membership, RaftSnapshotBuilder};

use super::meta::KEY_LEAF_LAYOUT;
use super::*;
use crate::checkpoint::{self, CheckpointSigner, CosignRefusal};
use crate::db::{CF_LEAF_INDEX, hash_index_key, hash_index_key_parts, leaf_key};
use crate::record::{AccessRecord, Action, Caller, Decision};

type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn record(i: u64) -> Record {
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

pub(crate) fn append(index: u64, records: impl IntoIterator<Item = u64>) -> Entry {
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

pub(crate) async fn open(dir: &std::path::Path) -> Result<(Db, StateMachineStore), StoreError> {
    open_with(dir, None).await
}

fn key(seed: u8) -> qianlian_verifier::NoteSigner {
    match qianlian_verifier::NoteSigner::from_seed(format!("node-{seed}"), &[seed; 32]) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

async fn open_with(
    dir: &std::path::Path,
    signer: Option<qianlian_verifier::NoteSigner>,
) -> Result<(Db, StateMachineStore), StoreError> {
    let db = Db::open(&dir.join("db"))?;
    let mut config = StateMachineConfig::new(dir.join("snapshots"));
    config.signer = CheckpointSigner::new(signer, checkpoint::DEFAULT_ORIGIN)
        .map_err(|e| StoreError::Task(e.to_string()))?;
    let sm = StateMachineStore::new(db.clone(), config).await?;
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
            hashes: vec![],
            refused: vec![],
        }
    );
    assert_eq!(
        responses[1],
        Response {
            first_index: 0,
            hashes: vec![],
            refused: vec![],
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
async fn a_snapshot_carries_the_first_index_of_repeated_records() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    let (_f, mut follower) = open(follower_dir.path()).await?;
    // Record 2 at log indices 2, 5 and 7.
    leader
        .apply([
            voters(&[1, 2]),
            append(3, [0, 1, 2, 3, 4, 2]),
            append(4, [6, 2]),
        ])
        .await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    let reader = follower.reader();
    assert_eq!(reader.tree_size(), 8);
    assert_eq!(reader.index_of(record(2).hash()).await?, Some(2));
    assert_eq!(reader.index_of(record(6).hash()).await?, Some(6));
    assert_eq!(reader.index_of(record(5).hash()).await?, None);
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

/// The bytes of `snapshot`'s file.
async fn file_bytes(snapshot: Snapshot<TypeConfig>) -> Result<Vec<u8>, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = snapshot.snapshot;
    file.rewind().await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// A snapshot file with these bytes, as openraft would hand it over.
async fn file_with(
    dir: &std::path::Path,
    bytes: &[u8],
) -> Result<Box<tokio::fs::File>, std::io::Error> {
    let path = dir.join(format!("forged-{}", bytes.len()));
    tokio::fs::write(&path, bytes).await?;
    Ok(Box::new(tokio::fs::File::open(&path).await?))
}

/// Re-seal `bytes` (a snapshot file) with a correct digest after tampering.
fn reseal(bytes: &mut [u8]) {
    use sha2::{Digest, Sha256};
    let body = bytes.len() - 33;
    let digest: [u8; 32] = Sha256::digest(&bytes[..body]).into();
    bytes[body + 1..].copy_from_slice(&digest);
}

#[tokio::test]
async fn a_snapshot_that_is_not_a_log_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    sm.apply([append(1, 0..2)]).await?;
    let leader_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    leader.apply([append(1, 0..5)]).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let meta = snapshot.meta.clone();
    let good = file_bytes(snapshot).await?;
    let scratch = tempfile::tempdir()?;

    let mut flipped = good.clone();
    flipped[40] ^= 1;
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    // A record changed and the digest recomputed: only the tree check can tell.
    let mut rewritten = good.clone();
    let at = good
        .windows(b"req-3".len())
        .position(|w| w == b"req-3")
        .ok_or("record 3 not found")?;
    rewritten[at + 4] = b'9';
    reseal(&mut rewritten);
    for (name, bytes) in [
        ("garbage", vec![1u8, 2, 3]),
        ("flipped", flipped),
        ("truncated", truncated),
        ("rewritten", rewritten),
    ] {
        let res = sm
            .install_snapshot(&meta, file_with(scratch.path(), &bytes).await?)
            .await;
        assert!(res.is_err(), "{name} installed");
        // The state is untouched.
        assert_eq!(sm.reader().tree_size(), 2, "{name}");
        assert_eq!(
            sm.reader().record(1).await?,
            Some(record(1).encode()),
            "{name}"
        );
    }
    // The genuine one installs after all those failures.
    sm.install_snapshot(&meta, file_with(scratch.path(), &good).await?)
        .await?;
    assert_eq!(sm.reader().tree_size(), 5);
    Ok(())
}

#[tokio::test]
async fn damaged_storage_gives_typed_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, mut sm) = open(dir.path()).await?;
    sm.apply([append(1, 0..3)]).await?;
    let reader = sm.reader();

    db.with(|db| Ok(db.put_cf(db::cf(db, CF_RECORDS)?, record_key(0, 1), [1u8, 0xff])?))?;
    assert!(matches!(
        reader.record(1).await,
        Err(StoreError::Corrupt { .. })
    ));
    db.with(|db| Ok(db.delete_cf(db::cf(db, CF_RECORDS)?, record_key(0, 1))?))?;
    assert!(matches!(
        reader.record(1).await,
        Err(StoreError::Corrupt { .. })
    ));

    // A record missing at the end contradicts the stored tree size.
    db.with(|db| Ok(db.delete_cf(db::cf(db, CF_RECORDS)?, record_key(0, 2))?))?;
    db.close();
    let reopened = open(dir.path()).await;
    assert!(
        matches!(reopened, Err(StoreError::Corrupt { .. })),
        "{reopened:?}"
    );

    // A tree size written by a newer layout.
    let db = Db::open(&dir.path().join("db"))?;
    db.with(|db| Ok(db.put_cf(db::cf(db, CF_SM_META)?, KEY_TREE_SIZE, [2u8, 3])?))?;
    db.close();
    let reopened = open(dir.path()).await;
    assert!(
        matches!(reopened, Err(StoreError::UnknownFormat { version: 2, .. })),
        "{reopened:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_leaf_index_keeps_the_first_of_repeated_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, mut sm) = open(dir.path()).await?;
    // Record 2 twice in one entry, record 5 twice in one apply: index 2 and index 5 stay.
    sm.apply([voters(&[1]), append(3, [0, 1, 2, 2, 3]), append(4, [5, 5])])
        .await?;
    let reader = sm.reader();
    assert_eq!(reader.index_of(record(2).hash()).await?, Some(2));
    assert_eq!(reader.index_of(record(5).hash()).await?, Some(5));
    // Written to a table file and compacted there, then repeated once more in the memtable.
    db.with(|db| {
        let cf = db::cf(db, CF_LEAF_INDEX)?;
        db.flush_cf(cf)?;
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    })?;
    sm.apply([append(5, [2, 5, 0])]).await?;
    assert_eq!(reader.index_of(record(2).hash()).await?, Some(2));
    assert_eq!(reader.index_of(record(5).hash()).await?, Some(5));
    assert_eq!(reader.index_of(record(0).hash()).await?, Some(0));
    assert_eq!(reader.index_of(record(3).hash()).await?, Some(4));

    // A damaged entry is reported, not read as some index.
    let damaged = hash_index_key(0, &record(1).hash(), 1);
    db.with(|db| Ok(db.put_cf(db::cf(db, CF_LEAF_INDEX)?, damaged, [1u8, 2, 3])?))?;
    let err = reader.index_of(record(1).hash()).await;
    assert!(matches!(&err, Err(StoreError::Corrupt { .. })), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_leaf_index_of_the_older_layout_is_rebuilt_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, mut sm) = open(dir.path()).await?;
    sm.apply([voters(&[1]), append(3, [0, 1, 2, 2, 3]), append(4, 5..40)])
        .await?;
    drop(sm);
    // As the version before left it: hash → first log index, no layout marker.
    db.with(|db| {
        let cf = db::cf(db, CF_LEAF_INDEX)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, &[][..], &END_KEY[..]);
        for (i, index) in [(0, 0), (1, 1), (2, 2), (3, 4)]
            .into_iter()
            .chain((5..40).map(|i| (i, i)))
        {
            batch.put_cf(cf, leaf_key(0, &record(i).hash()), index.to_be_bytes());
        }
        batch.delete_cf(db::cf(db, CF_SM_META)?, KEY_LEAF_LAYOUT);
        db.write(batch)?;
        Ok(())
    })?;
    db.close();
    let (db, sm) = open(dir.path()).await?;
    let reader = sm.reader();
    assert_eq!(reader.index_of(record(2).hash()).await?, Some(2));
    assert_eq!(reader.index_of(record(3).hash()).await?, Some(4));
    assert_eq!(reader.index_of(record(39).hash()).await?, Some(39));
    assert_eq!(reader.index_of(record(4).hash()).await?, None);
    // One entry per record, each the hash and the log index, no value.
    let entries = db.with(|db| {
        let mut out = Vec::new();
        for item in db.iterator_cf(db::cf(db, CF_LEAF_INDEX)?, IteratorMode::Start) {
            let (key, value) = item?;
            out.push((hash_index_key_parts("leaf", &key)?.2, value.is_empty()));
        }
        Ok(out)
    })?;
    assert_eq!(entries.len(), 40);
    assert!(entries.iter().all(|(_, empty)| *empty));
    Ok(())
}

#[tokio::test]
async fn the_stored_tree_answers_for_every_past_size() -> TestResult {
    use qianlian_verifier::{MemoryTree, open_checkpoint, verify_consistency, verify_inclusion};
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open_with(dir.path(), Some(key(1))).await?;
    sm.apply([voters(&[1]), append(3, 0..7)]).await?;
    // Record 3 again at log index 20: the leaf index keeps the first.
    sm.apply([append(4, 7..20), append(5, [3])]).await?;
    let reader = sm.reader();
    let leaves = (0..20).chain([3]).map(|i| record(i).hash()).collect();
    let reference = MemoryTree::from_leaf_hashes(leaves);
    for size in 0..=21 {
        let root = reader.root_at(size).await?;
        assert_eq!(Ok(root), reference.root_at(size), "root at {size}");
        for index in [0, size / 2, size.saturating_sub(1)] {
            if index < size {
                let proof = reader.inclusion_proof(index, size).await?;
                assert_eq!(Ok(proof.clone()), reference.inclusion_proof(index, size));
                let leaf = reference.leaf_hashes()[index as usize];
                assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
            }
            let proof = reader.consistency_proof(index, size).await?;
            assert_eq!(Ok(proof.clone()), reference.consistency_proof(index, size));
            let old_root = reader.root_at(index).await?;
            assert!(verify_consistency(index, size, &old_root, &root, &proof).is_ok());
        }
    }
    assert_eq!(reader.index_of(record(3).hash()).await?, Some(3));
    assert_eq!(reader.index_of(record(19).hash()).await?, Some(19));
    assert_eq!(reader.index_of(record(999).hash()).await?, None);

    let beyond = reader.root_at(22).await;
    assert_eq!(
        beyond,
        Err(ReadError::Range(RangeError::TreeSize {
            size: 22,
            applied: 21
        }))
    );
    assert!(
        beyond
            .err()
            .is_some_and(|e| e.to_string().contains("valid tree sizes are 0..=21")),
    );
    assert!(matches!(
        reader.inclusion_proof(21, 21).await,
        Err(ReadError::Range(RangeError::LogIndex {
            index: 21,
            size: 21
        }))
    ));
    assert!(matches!(
        reader.consistency_proof(5, 3).await,
        Err(ReadError::Range(RangeError::SizesOutOfOrder { .. }))
    ));

    let checkpoint = reader.checkpoint().ok_or("no checkpoint")?;
    assert_eq!((checkpoint.size, checkpoint.root), (21, reference.root()));
    let opened = open_checkpoint(&checkpoint.note, &[key(1).verifier()])?;
    assert_eq!(opened.checkpoint.size, 21);
    let cosignature = reader.cosign(21).await?;
    assert!(cosignature.signature_line.starts_with("— node-1 "));
    assert_eq!(
        reader.cosign(22).await,
        Err(CosignRefusal::NotYet { applied: 21 })
    );
    Ok(())
}

#[tokio::test]
async fn a_snapshot_carries_the_tree_and_survives_reopening() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    leader.apply([voters(&[1, 2]), append(3, 0..300)]).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let (follower_db, mut follower) = open_with(follower_dir.path(), Some(key(2))).await?;
    follower.apply([append(1, 0..10)]).await?;
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    let reader = follower.reader();
    let want = leader.reader();
    assert_eq!(reader.root_at(300).await?, want.root_at(300).await?);
    assert_eq!(
        reader.inclusion_proof(17, 255).await?,
        want.inclusion_proof(17, 255).await?
    );
    assert_eq!(reader.index_of(record(250).hash()).await?, Some(250));
    // The follower signed the installed head with its own key.
    let checkpoint = reader.checkpoint().ok_or("no checkpoint")?;
    assert_eq!(checkpoint.size, 300);
    qianlian_verifier::open_checkpoint(&checkpoint.note, &[key(2).verifier()])?;
    // Appending continues on the installed tree.
    follower.apply([append(4, 300..301)]).await?;
    let before = reader.root_at(301).await?;

    follower_db.close();
    let (_db, sm) = open_with(follower_dir.path(), Some(key(2))).await?;
    sm.check_integrity().await?;
    assert_eq!(sm.reader().tree_size(), 301);
    assert_eq!(sm.reader().root_at(301).await?, before);
    let files: Vec<_> = std::fs::read_dir(follower_dir.path().join("snapshots"))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "only the current snapshot is kept: {files:?}"
    );
    Ok(())
}

fn license_record(
    i: u64,
    license: Hash,
    change: Option<crate::record::LicenseStatusChange>,
) -> Record {
    use crate::record::{LicenseIssuedRecord, LicenseStatusRecord};
    let caller = Caller {
        department: "market-regulation".into(),
        role: "department".into(),
        cert_fingerprint: "cd".repeat(32),
    };
    match change {
        None => Record::LicenseIssued(LicenseIssuedRecord {
            request_id: format!("issue-{i}"),
            time_unix_ms: 1_764_000_000_000 + i * 1000,
            caller,
            license_hash: license,
            license_type: "business-license".into(),
            number: format!("GZ-{i}"),
            department: "market-regulation".into(),
            holder_hash: [0x22; 32],
            valid_from: 0,
            valid_until: None,
        }),
        Some(change) => Record::LicenseStatus(LicenseStatusRecord {
            request_id: format!("status-{i}"),
            time_unix_ms: 1_764_000_000_000 + i * 1000,
            caller,
            license_hash: license,
            change,
            reason: "fraud".into(),
        }),
    }
}

#[tokio::test]
async fn a_snapshot_carries_the_license_state_and_a_forged_one_is_refused() -> TestResult {
    use crate::license::LicenseCurrentStatus;
    use crate::record::LicenseStatusChange::Revoked;
    let leader_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    let records = vec![
        record(0),
        license_record(1, [0x11; 32], None),
        license_record(2, [0x11; 32], Some(Revoked)),
    ];
    leader
        .apply([
            voters(&[1, 2]),
            Entry {
                log_id: log_id(1, 1, 3),
                payload: EntryPayload::Normal(Request::Append {
                    records: records.into(),
                }),
            },
        ])
        .await?;
    let want = leader.reader().license([0x11; 32]).await?;
    assert!(matches!(
        want.as_ref().map(|v| &v.status),
        Some(LicenseCurrentStatus::Revoked { index: 2, .. })
    ));
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let meta = snapshot.meta.clone();
    let good = file_bytes(snapshot).await?;
    let scratch = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;

    // The revocation frame: tag 5, the license hash, log index 2, the value's length, then
    // `[1] ++ postcard(change, ..)`, whose first byte is the change: made a suspension.
    let mut frame = vec![5u8];
    frame.extend_from_slice(&[0x11; 32]);
    frame.extend_from_slice(&2u64.to_be_bytes());
    let at = good
        .windows(frame.len())
        .position(|w| w == frame.as_slice())
        .ok_or("no license change frame")?;
    let mut forged = good.clone();
    let change_at = at + frame.len() + 4 + 1;
    assert_eq!(forged[change_at], 2, "revoked is the third variant");
    forged[change_at] = 0;
    reseal(&mut forged);
    let res = sm
        .install_snapshot(&meta, file_with(scratch.path(), &forged).await?)
        .await;
    assert!(res.is_err(), "a forged license state installed");
    assert_eq!(sm.reader().license([0x11; 32]).await?, None);

    sm.install_snapshot(&meta, file_with(scratch.path(), &good).await?)
        .await?;
    assert_eq!(sm.reader().license([0x11; 32]).await?, want);
    assert_eq!(sm.reader().holder_records([0x22; 32]).await?, [1, 2]);
    Ok(())
}

#[tokio::test]
async fn a_version_1_snapshot_still_installs() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    leader.apply([voters(&[1, 2]), append(3, 0..5)]).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let meta = snapshot.meta.clone();
    // Without license records a version 2 file has no license frames: its version 1 twin
    // differs in the magic alone.
    let mut v1 = file_bytes(snapshot).await?;
    assert_eq!(&v1[..8], b"QLSNAP\x00\x02");
    v1[7] = 1;
    reseal(&mut v1);
    let scratch = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    sm.install_snapshot(&meta, file_with(scratch.path(), &v1).await?)
        .await?;
    assert_eq!(sm.reader().tree_size(), 5);
    Ok(())
}

fn config_record(change: crate::record::ConfigChange) -> Record {
    Record::Config(crate::record::ConfigRecord {
        request_id: "cfg".into(),
        time_unix_ms: 1_770_000_000_000,
        caller: Caller {
            department: "ops".into(),
            role: "operator".into(),
            cert_fingerprint: "01".repeat(32),
        },
        change,
    })
}

#[tokio::test]
async fn config_in_force_follows_applies_snapshots_and_reopening() -> TestResult {
    use crate::record::ConfigChange;
    let policy = |rules: &str| {
        config_record(ConfigChange::Policy {
            model: "m".into(),
            rules: rules.into(),
        })
    };
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open(leader_dir.path()).await?;
    let mut watch = leader.reader().watch_config();
    assert_eq!(leader.reader().config_pointers(), ConfigPointers::default());
    let entry = |index: u64, records: Vec<Record>| Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Request::Append {
            records: records.into(),
        }),
    };
    leader
        .apply([
            voters(&[1, 2]),
            entry(3, vec![record(0), policy("a"), record(1)]),
            entry(
                4,
                vec![
                    config_record(ConfigChange::Directory { toml: "d".into() }),
                    policy("b"),
                ],
            ),
        ])
        .await?;
    assert!(
        watch.has_changed()?,
        "a config record notifies its followers"
    );
    let expected = ConfigPointers {
        policy: Some(ConfigPointer {
            log_index: 4,
            version: 2,
        }),
        directory: Some(ConfigPointer {
            log_index: 3,
            version: 1,
        }),
        membership: None,
    };
    assert_eq!(*watch.borrow_and_update(), expected);
    assert_eq!(leader.reader().config_pointers(), expected);
    // Access records do not notify.
    leader.apply([entry(5, vec![record(2)])]).await?;
    assert!(!watch.has_changed()?);

    // A follower that catches up by snapshot has the same configuration in force.
    let (follower_db, mut follower) = open(follower_dir.path()).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    assert_eq!(follower.reader().config_pointers(), expected);
    follower_db.close();
    let (_db, reopened) = open(follower_dir.path()).await?;
    assert_eq!(reopened.reader().config_pointers(), expected);
    Ok(())
}

/// What of the applied state a reopened node would load, in comparable form.
fn stored_view(applied: &Applied) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        applied.last_applied,
        applied.last_membership.clone(),
        applied.tree_size,
        applied.generation,
        applied.checkpoint.as_ref().map(|cp| cp.note.clone()),
        applied.config,
    )
}

#[tokio::test]
async fn the_stored_applied_state_follows_every_kind_of_apply() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, mut sm) = open_with(dir.path(), Some(key(1))).await?;
    let membership = |index: u64, ids: &[u64]| {
        let m = Membership::<NodeId, BasicNode>::new(
            vec![ids.iter().copied().collect::<BTreeSet<_>>()],
            None,
        );
        Entry::new_membership(log_id(1, 1, index), m)
    };
    let config = |index: u64| Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Request::Append {
            records: vec![config_record(crate::record::ConfigChange::Directory {
                toml: format!("d{index}"),
            })]
            .into(),
        }),
    };
    let blank = |index: u64| Entry::new_blank(log_id(1, 1, index));
    // Each apply changes a different part: the first write stores everything, later ones only
    // what changed; the state read back from disk must equal the one in memory every time.
    let applies: Vec<Vec<Entry>> = vec![
        vec![blank(1)],
        vec![membership(2, &[1])],
        vec![append(3, 0..4)],
        vec![blank(4)],
        vec![membership(5, &[1, 2])],
        vec![config(6)],
        vec![append(7, 4..6), membership(8, &[1, 2, 3]), append(9, 6..7)],
    ];
    for (step, entries) in applies.into_iter().enumerate() {
        sm.apply(entries).await?;
        let in_memory = stored_view(&sm.shared.applied());
        let on_disk = stored_view(&db.with(load_applied)?);
        assert_eq!(on_disk, in_memory, "after apply {step}");
    }
    // A checkpoint signed by a later apply replaces the stored one.
    sm.shared.applied().signed_at = None;
    sm.apply([append(10, 7..8)]).await?;
    let stored = db.with(load_applied)?;
    assert_eq!(stored.checkpoint.as_ref().map(|cp| cp.size), Some(9));
    assert_eq!(stored_view(&stored), stored_view(&sm.shared.applied()));
    db.close();
    let (_db, sm) = open_with(dir.path(), Some(key(1))).await?;
    assert_eq!(sm.reader().tree_size(), 9);
    assert_eq!(
        sm.reader().config_pointers().directory.map(|p| p.log_index),
        Some(4)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoever_sees_a_tree_size_sees_the_configuration_of_that_size() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    let reader = sm.reader();
    sm.apply([voters(&[1])]).await?;
    const APPLIES: u64 = 300;
    // A thread watching the tree size as closely as it can, the way an operator's config change
    // waits for its node: every size it sees must come with the configuration of that size.
    let watcher = std::thread::spawn(move || {
        let mut seen = 0;
        let mut behind = Vec::new();
        while seen < APPLIES {
            let size = reader.tree_size();
            if size > seen {
                // The record at `size - 1` or a later one (the next apply may be under way).
                let in_force = reader.config_pointers().directory.map(|p| p.log_index);
                if in_force.is_none_or(|index| index + 1 < size) {
                    behind.push((size, in_force));
                }
                seen = size;
            }
            std::hint::spin_loop();
        }
        behind
    });
    for i in 0..APPLIES {
        sm.apply([Entry {
            log_id: log_id(1, 1, i + 3),
            payload: EntryPayload::Normal(Request::Append {
                records: vec![config_record(crate::record::ConfigChange::Directory {
                    toml: format!("d{i}"),
                })]
                .into(),
            }),
        }])
        .await?;
    }
    let behind = watcher.join().map_err(|_| "the watcher panicked")?;
    assert!(
        behind.is_empty(),
        "tree sizes seen before their configuration: {behind:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_snapshot_must_extend_the_tree_this_node_signed() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let (_l, mut leader) = open_with(leader_dir.path(), Some(key(1))).await?;
    leader.apply([voters(&[1, 2, 3]), append(3, 0..5)]).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let meta = snapshot.meta.clone();
    let bytes = file_bytes(snapshot).await?;
    let scratch = tempfile::tempdir()?;

    // Node 2 signed another history of three records: the snapshot does not extend it.
    let other_dir = tempfile::tempdir()?;
    let (_o, mut other) = open_with(other_dir.path(), Some(key(2))).await?;
    other.apply([append(1, 100..103)]).await?;
    let signed = other.reader().checkpoint().map(|cp| (cp.size, cp.root));
    assert_eq!(signed.map(|s| s.0), Some(3));
    let refused = other
        .install_snapshot(&meta, file_with(scratch.path(), &bytes).await?)
        .await
        .expect_err("a snapshot of another history");
    let said = format!("{refused:?}");
    assert!(
        said.contains("does not extend the tree this node signed"),
        "{said}"
    );
    assert_eq!(other.reader().snapshots_refused(), 1);
    assert_eq!(other.reader().tree_size(), 3, "nothing installed");
    assert_eq!(
        other.reader().checkpoint().map(|cp| (cp.size, cp.root)),
        signed
    );

    // Node 3 signed a prefix of the leader's history: the snapshot extends it.
    let prefix_dir = tempfile::tempdir()?;
    let (_p, mut prefix) = open_with(prefix_dir.path(), Some(key(3))).await?;
    prefix.apply([append(1, 0..3)]).await?;
    assert!(prefix.reader().checkpoint().is_some());
    prefix
        .install_snapshot(&meta, file_with(scratch.path(), &bytes).await?)
        .await?;
    assert_eq!(prefix.reader().tree_size(), 5);
    assert_eq!(prefix.reader().snapshots_refused(), 0);
    Ok(())
}
