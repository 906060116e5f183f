//! The notary on one node: group commit, reads, restart, bad paths.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use qianlian_raft_store::notary::{Notary, NotaryConfig, NotaryError};
use qianlian_raft_store::record::Record;
use support::{STEP, open_single, record};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Append `count` records from `tasks` concurrent tasks; returns `(record number, receipt)`.
async fn append_concurrently(
    notary: &Notary,
    first: u64,
    count: u64,
    tasks: u64,
) -> Result<Vec<(u64, qianlian_raft_store::Receipt)>, NotaryError> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let notary = notary.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = first + t;
            while i < first + count {
                out.push((i, notary.append(record(i)).await?));
                i += tasks;
            }
            Ok::<_, NotaryError>(out)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let done = h.await.map_err(|e| NotaryError::Internal(e.to_string()))?;
        all.extend(done?);
    }
    Ok(all)
}

/// The receipts of records `0..count` are unique and dense, the tree holds exactly them, and
/// each names its own record.
async fn check_dense_and_true(
    notary: &Notary,
    receipts: &[(u64, qianlian_raft_store::Receipt)],
    count: u64,
) -> TestResult {
    let indices: BTreeSet<u64> = receipts.iter().map(|(_, r)| r.log_index).collect();
    assert_eq!(
        indices,
        (0..count).collect::<BTreeSet<_>>(),
        "unique and dense"
    );
    assert_eq!(notary.tree_size(), count);
    check_entries(notary, receipts).await
}

async fn check_entries(
    notary: &Notary,
    receipts: &[(u64, qianlian_raft_store::Receipt)],
) -> TestResult {
    for (i, receipt) in receipts {
        let (bytes, hash) = notary
            .entry(receipt.log_index)
            .await?
            .ok_or_else(|| format!("no entry at {}", receipt.log_index))?;
        assert_eq!(Record::decode(&bytes)?, record(*i));
        assert_eq!(hash, receipt.record_hash);
        assert_eq!(hash, record(*i).hash());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_raft_entries_and_survive_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = open_single(dir.path()).await?;
    assert_eq!(notary.tree_size(), 0);
    let raft_before = notary.status().last_raft_index.unwrap_or(0);

    // (b) 200 records from 50 tasks.
    let started = Instant::now();
    let receipts = append_concurrently(&notary, 0, 200, 50).await?;
    let elapsed = started.elapsed();
    check_dense_and_true(&notary, &receipts, 200).await?;
    let status = notary.status();
    let raft_entries = status.last_raft_index.unwrap_or(0) - raft_before;
    eprintln!(
        "200 appends from 50 tasks: {elapsed:?} ({:.0} appends/s) in {raft_entries} raft entries",
        200.0 / elapsed.as_secs_f64()
    );
    assert!(
        raft_entries < 200,
        "group commit batched: {raft_entries} raft entries"
    );
    assert_eq!(status.leader, Some(1));

    // (d) the end of the log.
    assert_eq!(notary.entry(200).await?, None);
    assert_eq!(notary.entry(u64::MAX).await?, None);

    // (c) restart: same log, appending continues at the next index.
    notary.shutdown().await?;
    assert_eq!(notary.append(record(999)).await, Err(NotaryError::ShutDown));
    let started = Instant::now();
    let reopened = open_single(dir.path()).await?;
    eprintln!("restart: open() took {:?}", started.elapsed());
    assert_eq!(reopened.tree_size(), 200);
    check_entries(&reopened, &receipts).await?;
    let next = reopened.append(record(200)).await?;
    assert_eq!(next.log_index, 200);
    assert_eq!(next.record_hash, record(200).hash());
    assert_eq!(reopened.status().voters.len(), 1, "not initialised twice");
    reopened.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_machine_that_lost_its_writes_is_rebuilt_from_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = open_single(dir.path()).await?;
    let receipts = append_concurrently(&notary, 0, 50, 10).await?;
    notary.shutdown().await?;

    // The state machine writes without fsync; the worst a crash can do is lose all of them.
    {
        let cfs = qianlian_raft_store::db::COLUMN_FAMILIES;
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path().join("raft"), cfs)?;
        for cf in ["records", "tree", "leaf_index", "audit", "sm_meta"] {
            db.drop_cf(cf)?;
        }
    }

    let reopened = open_single(dir.path()).await?;
    reopened.wait_for_tree_size(50, STEP).await?;
    check_entries(&reopened, &receipts).await?;
    assert_eq!(reopened.append(record(50)).await?.log_index, 50);
    reopened.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_appends_are_answered_at_commit_and_read_back_at_once() -> TestResult {
    use qianlian_raft_store::audit_query::{AuditOrder, AuditQuery};
    use std::sync::atomic::Ordering::Relaxed;

    let dir = tempfile::tempdir()?;
    let notary = open_single(dir.path()).await?;
    // The leader's first (blank) entry may still be applying; once a record read back is
    // applied, so is everything before it.
    let warm_up = notary.append(record(0)).await?;
    notary.entry(warm_up.log_index).await?;
    let before = notary.batch_stats().answered_at_commit.load(Relaxed);
    let mut receipts = Vec::new();
    for i in 1..=200 {
        let receipt = notary.append(record(i)).await?;
        // What the caller was told is on the log, and every read sees it at once: the tree
        // size, the record, the access trail, a proof.
        assert!(notary.tree_size() > receipt.log_index);
        let (bytes, hash) = notary
            .entry(receipt.log_index)
            .await?
            .ok_or_else(|| format!("record {i} is not at {}", receipt.log_index))?;
        assert_eq!(Record::decode(&bytes)?, record(i));
        assert_eq!(hash, receipt.record_hash);
        let newest = notary
            .audit_query(AuditQuery {
                order: AuditOrder::NewestFirst,
                limit: 1,
                ..AuditQuery::default()
            })
            .await?;
        assert_eq!(
            newest.hits.first().map(|h| h.log_index),
            Some(receipt.log_index)
        );
        notary
            .inclusion_proof(receipt.log_index, receipt.log_index + 1)
            .await?;
        receipts.push((i, receipt));
    }
    check_entries(&notary, &receipts).await?;
    let indices: Vec<u64> = receipts.iter().map(|(_, r)| r.log_index).collect();
    let first = indices[0];
    assert_eq!(indices, (first..first + 200).collect::<Vec<_>>());
    // One call at a time, and each read above waited for the apply: every entry came right
    // after the applied state, so every call was answered at its commit.
    let early = notary.batch_stats().answered_at_commit.load(Relaxed) - before;
    assert_eq!(early, 200, "answered at commit");
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_load_forms_large_batches() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = Arc::new(open_single(dir.path()).await?);
    let raft_before = notary.status().last_raft_index.unwrap_or(0);
    let started = Instant::now();
    let receipts = append_concurrently(&notary, 0, 5000, 500).await?;
    let elapsed = started.elapsed();
    let raft_entries = notary.status().last_raft_index.unwrap_or(0) - raft_before;
    eprintln!(
        "5000 appends from 500 tasks: {elapsed:?} ({:.0} appends/s) in {raft_entries} raft entries",
        5000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(receipts.len(), 5000);
    assert_eq!(notary.tree_size(), 5000);
    notary.shutdown().await?;
    Ok(())
}

/// With more than one write in flight each batch is written by a task of its own (with one, the
/// batcher writes it): receipts stay unique, dense and true to their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_writes_in_flight_keep_receipts_dense_and_true() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = NotaryConfig::new(1, dir.path(), "http://127.0.0.1:7400");
    config.bootstrap_single = true;
    config.max_in_flight = 3;
    let notary = Notary::open(config).await?;
    let receipts = append_concurrently(&notary, 0, 600, 60).await?;
    check_dense_and_true(&notary, &receipts, 600).await?;
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_node_that_is_not_initialised_refuses_appends_in_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = NotaryConfig::new(7, dir.path(), "http://127.0.0.1:7407");
    config.commit_timeout = std::time::Duration::from_millis(500);
    let notary = Notary::open(config).await?;
    let res = tokio::time::timeout(STEP, notary.append(record(1))).await?;
    assert!(matches!(res, Err(NotaryError::Unavailable(_))), "{res:?}");
    assert_eq!(notary.entry(0).await?, None);
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_key() {
    let dir = std::env::temp_dir();
    let mut config = NotaryConfig::new(1, &dir, "127.0.0.1:7400");
    let res = Notary::open(config.clone()).await;
    assert!(
        matches!(&res, Err(NotaryError::Config(m)) if m.contains("advertise_addr")),
        "{res:?}"
    );
    config.advertise_addr = "http://127.0.0.1:7400".into();
    config.max_batch = 0;
    let res = Notary::open(config).await;
    assert!(
        matches!(&res, Err(NotaryError::Config(m)) if m.contains("max_batch")),
        "{res:?}"
    );
}

#[tokio::test]
async fn a_directory_in_use_is_a_storage_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let first = open_single(dir.path()).await?;
    let second = open_single(dir.path()).await;
    assert!(matches!(second, Err(NotaryError::Storage(_))), "{second:?}");
    first.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_after_snapshots_and_purges_keeps_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = NotaryConfig::new(1, dir.path(), "http://127.0.0.1:7400");
    config.bootstrap_single = true;
    config.signer = Some(qianlian_verifier::NoteSigner::from_seed(
        "node-1", &[1; 32],
    )?);
    config.snapshot_every = 5;
    config.log_kept_after_snapshot = 1;
    let notary = Notary::open(config.clone()).await?;
    for batch in 0..20u64 {
        let records = (batch * 100..(batch + 1) * 100).map(record).collect();
        notary.append_batch(records).await?;
    }
    let deadline = Instant::now() + STEP;
    while notary.status().purged_raft_index.is_none() {
        assert!(Instant::now() < deadline, "no purge: {:?}", notary.status());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let root = notary.root_at(2000).await?;
    let proof = notary.inclusion_proof(1234, 2000).await?;
    let status = notary.status();
    notary.shutdown().await?;

    let reopened = Notary::open(config).await?;
    assert_eq!(reopened.tree_size(), 2000);
    assert!(reopened.status().snapshot_raft_index >= status.snapshot_raft_index);
    assert_eq!(reopened.root_at(2000).await?, root);
    assert_eq!(reopened.inclusion_proof(1234, 2000).await?, proof);
    let (bytes, _) = reopened.entry(1999).await?.ok_or("missing")?;
    assert_eq!(Record::decode(&bytes)?, record(1999));
    assert_eq!(reopened.checkpoint().await?.size, 2000);
    assert_eq!(reopened.append(record(2000)).await?.log_index, 2000);
    reopened.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn range_errors_name_the_valid_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = open_single(dir.path()).await?;
    append_concurrently(&notary, 0, 10, 2).await?;
    let beyond = notary.root_at(11).await;
    assert!(
        matches!(&beyond, Err(NotaryError::Range(_)))
            && beyond
                .as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("valid tree sizes are 0..=10")),
        "{beyond:?}"
    );
    let index = notary.inclusion_proof(10, 10).await;
    assert!(
        index
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("valid log indices are 0..10")),
        "{index:?}"
    );
    assert!(matches!(
        notary.consistency_proof(4, 3).await,
        Err(NotaryError::Range(_))
    ));
    assert_eq!(notary.index_of(&record(4).hash()).await?, Some(4));
    assert_eq!(notary.index_of(&[0; 32]).await?, None);
    // No key configured: no checkpoint.
    assert!(matches!(
        notary.checkpoint().await,
        Err(NotaryError::NoCheckpoint(_))
    ));
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspectors_query_the_access_trail_and_the_log_streams_out() -> TestResult {
    use qianlian_raft_store::audit_query::{AuditCursor, AuditFilter, AuditOrder, AuditQuery};
    use qianlian_raft_store::record::{ConfigKind, Decision};

    let dir = tempfile::tempdir()?;
    let notary = open_single(dir.path()).await?;
    let records: Vec<Record> = (0..60).map(record).collect();
    let receipts = notary.append_batch(records.clone()).await?;
    let first = receipts.first().ok_or("no receipt")?.log_index;

    // Every seventh record is a denial: newest first, two pages of five.
    let mut query = AuditQuery {
        filters: vec![AuditFilter::Decision(Decision::Deny)],
        order: AuditOrder::NewestFirst,
        limit: 5,
        ..AuditQuery::default()
    };
    let page = notary.audit_query(query.clone()).await?;
    let want: Vec<u64> = (0..60u64)
        .rev()
        .filter(|i| i.is_multiple_of(7))
        .map(|i| first + i)
        .collect();
    let got: Vec<u64> = page.hits.iter().map(|h| h.log_index).collect();
    assert_eq!(got, want[..5]);
    let token = page.next.ok_or("no next page")?.to_token();
    query.after = Some(AuditCursor::from_token(&token)?);
    let rest = notary.audit_query(query).await?;
    let got: Vec<u64> = rest.hits.iter().map(|h| h.log_index).collect();
    assert_eq!(got, want[5..]);
    assert_eq!(rest.next, None);

    // The records stream out in order; the history of the policy comes from the index.
    let bytes = notary.entries(first, 1000).await?;
    let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    assert_eq!(bytes, encoded);
    let history = notary.config_history(ConfigKind::Policy).await?;
    let in_force = notary.config(ConfigKind::Policy).await?.map(|(p, _)| p);
    assert_eq!(history.last().copied(), in_force);
    notary.shutdown().await?;
    Ok(())
}
