//! The notarization log as a Raft state machine in RocksDB: openraft's `RaftStateMachine`, its
//! snapshots, and read access for the notary.
//!
//! Applying `Request::Append` gives each record the next log index (the current tree size),
//! stores its canonical bytes under that index, and answers the indices and leaf hashes.
//!
//! Invariants:
//! - records `0..tree_size` are present and immutable; nothing is stored at or beyond
//!   `tree_size`. One apply call is one `WriteBatch` (records, tree size, last applied, last
//!   membership together), so a crash never leaves a half-applied batch;
//! - applies are written without fsync. They share the write-ahead log with the Raft log, whose
//!   every append is synced after them, and what a crash loses is re-applied from that durable
//!   log (deterministically: the same records get the same indices). Snapshots and installs,
//!   after which the log may be purged, are synced;
//! - a snapshot is the whole state (tree size and every record) for now; installing one
//!   replaces the state entirely. Building runs beside applies: it reads the immutable records
//!   below the tree size it captured, and a lock keeps an install from changing them meanwhile.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta,
};
use qianlian_verifier::leaf_hash;
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::db::{
    self, CF_RECORDS, CF_SM_META, CF_SNAPSHOT, Db, END_KEY, StoreError, decode_value, encode_value,
    get_value, index_key, key_index,
};
use crate::record::Record;
use crate::types::{
    Entry, LogId, NodeId, RaftStorageError, Request, Response, StoredMembership, TypeConfig,
};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
const KEY_TREE_SIZE: &[u8] = b"tree_size";
const KEY_CURRENT: &[u8] = b"current";

/// What the state machine has applied so far. Kept in memory, mirrored in `sm_meta`.
#[derive(Debug, Clone, Default)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    tree_size: u64,
}

#[derive(Debug)]
struct Shared {
    // Updated only after the write that it mirrors returned.
    applied: Mutex<Applied>,
    // The tree size, for those who wait for the log to grow.
    tree_size: watch::Sender<u64>,
    // Held while a snapshot is built or installed.
    snapshot: Mutex<()>,
}

impl Shared {
    fn applied(&self) -> MutexGuard<'_, Applied> {
        // Poisoned only by a panic between two plain assignments: the value is still whole.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, applied: Applied) {
        let size = applied.tree_size;
        *self.applied() = applied;
        self.tree_size.send_replace(size);
    }
}

/// The state machine of one node.
#[derive(Debug)]
pub struct StateMachineStore {
    db: Db,
    shared: Arc<Shared>,
}

/// Read access to the applied notarization log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateReader {
    db: Db,
    shared: Arc<Shared>,
}

/// The payload of a snapshot: the whole notarization log.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPayload {
    tree_size: u64,
    records: Vec<Vec<u8>>,
}

/// The current snapshot as kept in the `snapshot` column family.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

fn load_applied(db: &DB) -> Result<Applied, StoreError> {
    let last_applied: Option<Option<LogId>> =
        get_value(db, CF_SM_META, KEY_LAST_APPLIED, "last applied log id")?;
    let last_membership: Option<StoredMembership> =
        get_value(db, CF_SM_META, KEY_LAST_MEMBERSHIP, "last membership")?;
    let tree_size: Option<u64> = get_value(db, CF_SM_META, KEY_TREE_SIZE, "tree size")?;
    let tree_size = tree_size.unwrap_or(0);
    // Cheap consistency check of the invariant "exactly 0..tree_size is present".
    let records = db::cf(db, CF_RECORDS)?;
    let last = db
        .iterator_cf(records, IteratorMode::End)
        .next()
        .transpose()?;
    let found = match last {
        Some((key, _)) => key_index("record key", &key)?.checked_add(1),
        None => Some(0),
    };
    if found != Some(tree_size) {
        return Err(StoreError::corrupt(
            "records",
            format!("tree size is {tree_size} but the last record is at {found:?} - 1"),
        ));
    }
    Ok(Applied {
        last_applied: last_applied.flatten(),
        last_membership: last_membership.unwrap_or_default(),
        tree_size,
    })
}

fn put_applied(db: &DB, batch: &mut WriteBatch, applied: &Applied) -> Result<(), StoreError> {
    let cf = db::cf(db, CF_SM_META)?;
    batch.put_cf(
        cf,
        KEY_LAST_APPLIED,
        encode_value("last applied log id", &applied.last_applied)?,
    );
    batch.put_cf(
        cf,
        KEY_LAST_MEMBERSHIP,
        encode_value("last membership", &applied.last_membership)?,
    );
    batch.put_cf(
        cf,
        KEY_TREE_SIZE,
        encode_value("tree size", &applied.tree_size)?,
    );
    Ok(())
}

/// Record `log_index`, checked to be a record; `None` if absent.
fn read_record(db: &DB, log_index: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(bytes) = db.get_cf(db::cf(db, CF_RECORDS)?, index_key(log_index))? else {
        return Ok(None);
    };
    Record::decode(&bytes).map_err(|e| StoreError::corrupt(format!("record {log_index}"), e))?;
    Ok(Some(bytes))
}

impl StateMachineStore {
    /// The state machine on `db`, with its applied state loaded and checked.
    pub async fn new(db: Db) -> Result<StateMachineStore, StoreError> {
        let applied = db.run(load_applied).await?;
        let (tree_size, _) = watch::channel(applied.tree_size);
        Ok(StateMachineStore {
            db,
            shared: Arc::new(Shared {
                applied: Mutex::new(applied),
                tree_size,
                snapshot: Mutex::new(()),
            }),
        })
    }

    /// A reader of the applied state, for the notary.
    pub fn reader(&self) -> StateReader {
        StateReader {
            db: self.db.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl StateReader {
    /// Number of records applied: the next record gets this log index.
    pub fn tree_size(&self) -> u64 {
        *self.shared.tree_size.borrow()
    }

    /// Canonical bytes of the record at `log_index`, or `None` at or beyond the tree size.
    /// Bytes that do not decode as a record are reported as [`StoreError::Corrupt`].
    pub async fn record(&self, log_index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if log_index >= self.tree_size() {
            return Ok(None);
        }
        let bytes = self.db.run(move |db| read_record(db, log_index)).await?;
        match bytes {
            Some(bytes) => Ok(Some(bytes)),
            // Below the tree size a record must exist.
            None => Err(StoreError::corrupt(
                format!("record {log_index}"),
                "missing below the tree size",
            )),
        }
    }

    /// Wait until the tree size is at least `at_least`; `Ok(size)` then, `Err(size)` with the
    /// size reached when `timeout` passed.
    pub async fn wait_for_tree_size(&self, at_least: u64, timeout: Duration) -> Result<u64, u64> {
        let mut rx = self.shared.tree_size.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|size| *size >= at_least)).await;
        match waited {
            Ok(Ok(size)) => Ok(*size),
            _ => Err(self.tree_size()),
        }
    }
}

fn apply_entries(
    db: &DB,
    mut applied: Applied,
    entries: Vec<Entry>,
) -> Result<(Applied, Vec<Response>), StoreError> {
    let records_cf = db::cf(db, CF_RECORDS)?;
    let mut batch = WriteBatch::default();
    let mut responses = Vec::with_capacity(entries.len());
    for entry in entries {
        applied.last_applied = Some(entry.log_id);
        let first_index = applied.tree_size;
        match entry.payload {
            EntryPayload::Blank => responses.push(Response {
                first_index,
                hashes: Vec::new(),
            }),
            EntryPayload::Normal(Request::Append { records }) => {
                let mut hashes = Vec::with_capacity(records.len());
                for record in &records {
                    let bytes = record.encode();
                    hashes.push(leaf_hash(&bytes));
                    batch.put_cf(records_cf, index_key(applied.tree_size), bytes);
                    applied.tree_size += 1;
                }
                responses.push(Response {
                    first_index,
                    hashes,
                });
            }
            EntryPayload::Membership(membership) => {
                applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                responses.push(Response {
                    first_index,
                    hashes: Vec::new(),
                });
            }
        }
    }
    put_applied(db, &mut batch, &applied)?;
    db.write_opt(batch, &db::unsynced())?;
    Ok((applied, responses))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let applied = self.shared.applied();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let current = self.shared.applied().clone();
        let (applied, responses) = self
            .db
            .run(move |db| apply_entries(db, current, entries))
            .await
            .map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        self.shared.set(applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let meta = meta.clone();
        let signature = meta.signature();
        let shared = self.shared.clone();
        let data = snapshot.into_inner();
        let applied = self
            .db
            .run(move |db| install(db, &shared, meta, data))
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(Some(signature)), ErrorVerb::Write))?;
        self.shared.set(applied);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let stored: Option<StoredSnapshot> = self
            .db
            .run(|db| get_value(db, CF_SNAPSHOT, KEY_CURRENT, "current snapshot"))
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Replace the whole state with a snapshot's. Blocking; holds the snapshot lock.
fn install(
    db: &DB,
    shared: &Shared,
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
) -> Result<Applied, StoreError> {
    let payload: SnapshotPayload = decode_value("snapshot", &data)?;
    if payload.records.len() as u64 != payload.tree_size {
        return Err(StoreError::corrupt(
            "snapshot",
            format!(
                "tree size {} but {} records",
                payload.tree_size,
                payload.records.len()
            ),
        ));
    }
    let _building = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
    let records_cf = db::cf(db, CF_RECORDS)?;
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(records_cf, index_key(0).to_vec(), END_KEY.to_vec());
    for (index, bytes) in (0u64..).zip(&payload.records) {
        // A record that does not decode would poison every proof built on it: refuse it now.
        Record::decode(bytes)
            .map_err(|e| StoreError::corrupt(format!("snapshot record {index}"), e))?;
        batch.put_cf(records_cf, index_key(index), bytes);
    }
    let applied = Applied {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
        tree_size: payload.tree_size,
    };
    put_applied(db, &mut batch, &applied)?;
    let stored = StoredSnapshot { meta, data };
    batch.put_cf(
        db::cf(db, CF_SNAPSHOT)?,
        KEY_CURRENT,
        encode_value("current snapshot", &stored)?,
    );
    // Synced: the Raft log may be purged up to this snapshot right after.
    db.write_opt(batch, &db::synced())?;
    Ok(applied)
}

/// Builds a snapshot of the state as it is when [`RaftSnapshotBuilder::build_snapshot`] runs.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Db,
    shared: Arc<Shared>,
}

fn build(db: &DB, shared: &Shared) -> Result<StoredSnapshot, StoreError> {
    let _installing = shared.snapshot.lock().unwrap_or_else(|e| e.into_inner());
    let applied = shared.applied().clone();
    let records_cf = db::cf(db, CF_RECORDS)?;
    let mut records = Vec::new();
    for item in db.iterator_cf(
        records_cf,
        IteratorMode::From(&index_key(0), Direction::Forward),
    ) {
        let (key, value) = item?;
        let index = key_index("record key", &key)?;
        if index >= applied.tree_size {
            break;
        }
        if index != records.len() as u64 {
            return Err(StoreError::corrupt(
                "records",
                format!("record {} is missing", records.len()),
            ));
        }
        records.push(value.into_vec());
    }
    if records.len() as u64 != applied.tree_size {
        return Err(StoreError::corrupt(
            "records",
            format!(
                "tree size {} but {} records",
                applied.tree_size,
                records.len()
            ),
        ));
    }
    let data = encode_value(
        "snapshot",
        &SnapshotPayload {
            tree_size: applied.tree_size,
            records,
        },
    )?;
    let snapshot_id = match &applied.last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id, id.index, applied.tree_size),
        None => format!("none-{}", applied.tree_size),
    };
    let stored = StoredSnapshot {
        meta: SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership,
            snapshot_id,
        },
        data,
    };
    // Synced: the Raft log may be purged up to this snapshot right after.
    db.put_cf_opt(
        db::cf(db, CF_SNAPSHOT)?,
        KEY_CURRENT,
        encode_value("current snapshot", &stored)?,
        &db::synced(),
    )?;
    Ok(stored)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let shared = self.shared.clone();
        let stored = self
            .db
            .run(move |db| build(db, &shared))
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

#[cfg(test)]
mod tests;
