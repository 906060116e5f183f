//! A node whose RocksDB files were altered refuses to open, naming the first bad log index.
//!
//! Each test writes a log through the notary, closes it, alters the database directly with the
//! rocksdb crate (as an intruder or a failing disk would), and opens the notary again.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use qianlian_raft_store::checkpoint::{CheckpointSigner, DEFAULT_ORIGIN};
use qianlian_raft_store::db::{COLUMN_FAMILIES, Db};
use qianlian_raft_store::merkle::Edge;
use qianlian_raft_store::notary::{Notary, NotaryConfig, NotaryError};
use qianlian_raft_store::record::{LicenseStatusChange, Record};
use qianlian_raft_store::state_machine::{StateMachineConfig, StateMachineStore};
use qianlian_verifier::{NoteSigner, leaf_hash};
use support::{issued, record, status};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key() -> NoteSigner {
    match NoteSigner::from_seed("node-1", &[1; 32]) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

fn config(dir: &Path) -> NotaryConfig {
    let mut config = NotaryConfig::new(1, dir, "http://127.0.0.1:7400");
    config.bootstrap_single = true;
    config.signer = Some(key());
    config
}

/// A closed node in `dir` holding records `0..count`.
async fn written(dir: &Path, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let notary = Notary::open(config(dir)).await?;
    let records: Vec<Record> = (0..count).map(record).collect();
    notary.append_batch(records).await?;
    notary.shutdown().await?;
    Ok(())
}

/// The raw database of a closed node.
fn raw(dir: &Path) -> Result<rocksdb::DB, rocksdb::Error> {
    rocksdb::DB::open_cf(
        &rocksdb::Options::default(),
        dir.join("raft"),
        COLUMN_FAMILIES,
    )
}

/// Keys as `db` lays them out, generation 0 (a node that never installed a snapshot).
fn record_key(index: u64) -> Vec<u8> {
    let mut key = 0u32.to_be_bytes().to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut key = 0u32.to_be_bytes().to_vec();
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn cf<'a>(db: &'a rocksdb::DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, String> {
    db.cf_handle(name)
        .ok_or_else(|| format!("no column family {name}"))
}

async fn open_fails(dir: &Path) -> Result<(Option<u64>, String), Box<dyn std::error::Error>> {
    match Notary::open(config(dir)).await {
        Err(NotaryError::Integrity {
            first_bad_index,
            detail,
        }) => {
            eprintln!("refused: {detail}");
            Ok((first_bad_index, detail))
        }
        Err(e) => Err(format!("expected an integrity error, got {e}").into()),
        Ok(notary) => {
            notary.shutdown().await?;
            Err("the altered node opened".into())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_changed_byte_of_a_record_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    written(dir.path(), 50).await?;
    {
        let db = raw(dir.path())?;
        let records = cf(&db, "records")?;
        let mut bytes = db.get_cf(records, record_key(17))?.ok_or("no record 17")?;
        // A byte inside the request id: the record still decodes, only its hash changes.
        let at = bytes
            .windows(12)
            .position(|w| w == b"000000000017")
            .ok_or("request id not found")?;
        bytes[at] = b'9';
        assert!(Record::decode(&bytes).is_ok());
        db.put_cf(records, record_key(17), bytes)?;
    }
    let (first, detail) = open_fails(dir.path()).await?;
    assert_eq!(first, Some(17));
    assert!(
        detail.contains("log index 17: stored record does not match its leaf hash"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tree_node_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    written(dir.path(), 50).await?;
    {
        let db = raw(dir.path())?;
        // Level 2, index 3: the subtree over log indices 12..16.
        db.put_cf(cf(&db, "tree")?, node_key(2, 3), [0xabu8; 32])?;
    }
    let (first, detail) = open_fails(dir.path()).await?;
    assert_eq!(first, Some(12));
    assert!(
        detail.contains("level 2, index 3 (log indices 12..16)"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_checkpoint_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    written(dir.path(), 50).await?;
    {
        let db = raw(dir.path())?;
        let meta = cf(&db, "sm_meta")?;
        let stored = db.get_cf(meta, b"checkpoint")?.ok_or("no checkpoint")?;
        // `[1] ++ postcard(String)`: a length prefix, then the note text.
        let text = String::from_utf8_lossy(&stored[2..]).to_string();
        assert!(text.contains("\n50\n"), "{text}");
        let forged = text.replace("\n50\n", "\n40\n");
        let mut value = stored[..2].to_vec();
        value.extend_from_slice(forged.as_bytes());
        db.put_cf(meta, b"checkpoint", value)?;
    }
    let (first, detail) = open_fails(dir.path()).await?;
    assert_eq!(first, None);
    assert!(
        detail.contains("not validly signed by this node's key node-1"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_rewritten_with_a_recomputed_tree_contradicts_the_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    written(dir.path(), 50).await?;
    {
        // A careful intruder: replace record 17 and rewrite every tree node to match.
        let db = raw(dir.path())?;
        let records = cf(&db, "records")?;
        let tree = cf(&db, "tree")?;
        db.put_cf(records, record_key(17), record(999).encode())?;
        let mut edge = Edge::default();
        for i in 0..50 {
            let bytes = db.get_cf(records, record_key(i))?.ok_or("missing record")?;
            let mut writes = Vec::new();
            edge.append(leaf_hash(&bytes), |id, hash| writes.push((id, hash)))
                .ok_or("tree full")?;
            for (id, hash) in writes {
                db.put_cf(tree, node_key(id.level, id.index), hash)?;
            }
        }
    }
    let (first, detail) = open_fails(dir.path()).await?;
    assert_eq!(first, None);
    assert!(
        detail.contains("the root of the first 50 records") && detail.contains("checkpoint signed"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_checksum_damage_names_where_the_scan_stopped() -> TestResult {
    let dir = tempfile::tempdir()?;
    written(dir.path(), 600).await?;
    let sst = {
        let db = raw(dir.path())?;
        db.flush_cf(cf(&db, "records")?)?;
        let files = db.live_files()?;
        let file = files
            .iter()
            .filter(|f| f.column_family_name == "records")
            .max_by_key(|f| f.size)
            .ok_or("no records table file")?;
        dir.path()
            .join("raft")
            .join(file.name.trim_start_matches('/'))
    };
    // One flipped byte a third into the table: inside a data block, behind its checksum.
    let mut bytes = std::fs::read(&sst)?;
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    std::fs::write(&sst, bytes)?;
    let (first, detail) = open_fails(dir.path()).await?;
    let first = first.ok_or("no index named")?;
    assert!(first < 600, "{first}");
    assert!(
        detail.contains("RocksDB reported damage while reading records")
            && detail.contains(&format!("records {first}..600 were not checked")),
        "{detail}"
    );
    Ok(())
}

/// Key of a license-state entry in generation 0: hash, then log index.
fn hash_index_key(hash: [u8; 32], index: u64) -> Vec<u8> {
    let mut key = 0u32.to_be_bytes().to_vec();
    key.extend_from_slice(&hash);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_license_state_is_refused() -> TestResult {
    let (license, holder) = ([0x11; 32], [0x22; 32]);
    let dir = tempfile::tempdir()?;
    {
        let notary = Notary::open(config(dir.path())).await?;
        let mut records: Vec<Record> = (0..10).map(record).collect();
        records.push(issued(10, license, holder)); // log index 10
        records.push(status(11, license, LicenseStatusChange::Revoked, "fraud")); // 11
        records.extend((12..20).map(record));
        notary.append_batch(records).await?;
        notary.shutdown().await?;
    }
    // Make a revoked license look valid: every record and tree node stays intact.
    let revocation = {
        let db = raw(dir.path())?;
        let changes = cf(&db, "license_changes")?;
        let key = hash_index_key(license, 11);
        let value = db.get_cf(changes, &key)?.ok_or("no license change at 11")?;
        db.delete_cf(changes, &key)?;
        value
    };
    let (first, detail) = open_fails(dir.path()).await?;
    assert_eq!(first, Some(11));
    assert!(
        detail.contains("log index 11: the license status change is missing"),
        "{detail}"
    );

    // Put it back, and add a holder entry the records do not give.
    {
        let db = raw(dir.path())?;
        db.put_cf(
            cf(&db, "license_changes")?,
            hash_index_key(license, 11),
            revocation,
        )?;
        db.put_cf(cf(&db, "holders")?, hash_index_key([0x33; 32], 12), [])?;
    }
    let (first, detail) = open_fails(dir.path()).await?;
    assert_eq!(first, None);
    assert!(
        detail.contains("holders holds 3 entries but the records give 2"),
        "{detail}"
    );

    // Restored whole, it opens and answers as before.
    {
        let db = raw(dir.path())?;
        db.delete_cf(cf(&db, "holders")?, hash_index_key([0x33; 32], 12))?;
    }
    let notary = Notary::open(config(dir.path())).await?;
    let view = notary.license(&license).await?.ok_or("license unknown")?;
    assert!(matches!(
        view.status,
        qianlian_raft_store::LicenseCurrentStatus::Revoked { index: 11, .. }
    ));
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_node_reopens_and_keeps_its_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    written(dir.path(), 50).await?;
    let notary = Notary::open(config(dir.path())).await?;
    let checkpoint = notary.checkpoint().await?;
    assert_eq!(checkpoint.size, 50);
    assert_eq!(checkpoint.root, notary.root_at(50).await?);
    notary.shutdown().await?;
    Ok(())
}

/// `open()` time with the full integrity check, for the README: run with
/// `cargo test --release -p qianlian-raft-store --test integrity -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: 100k records take a while to write in a debug build"]
async fn open_time_with_100k_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    {
        let notary = Notary::open(config(dir.path())).await?;
        for chunk in 0..100u64 {
            let records = (chunk * 1000..(chunk + 1) * 1000).map(record).collect();
            notary.append_batch(records).await?;
        }
        notary.shutdown().await?;
    }
    eprintln!("wrote 100k records in {:?}", started.elapsed());
    for round in 0..3 {
        let started = Instant::now();
        let notary = Notary::open(config(dir.path())).await?;
        let elapsed = started.elapsed();
        eprintln!("open() #{round} with 100k records: {elapsed:?}");
        assert_eq!(notary.tree_size(), 100_000);
        notary.shutdown().await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The integrity check alone.
    let db = Db::open(&dir.path().join("raft"))?;
    let mut sm_config = StateMachineConfig::new(dir.path().join("snapshots"));
    sm_config.signer = CheckpointSigner::new(Some(key()), DEFAULT_ORIGIN)?;
    let sm = StateMachineStore::new(db.clone(), sm_config).await?;
    let report = sm.check_integrity().await?;
    eprintln!(
        "integrity check alone: {} records in {:?}",
        report.records, report.elapsed
    );
    db.close();
    Ok(())
}
