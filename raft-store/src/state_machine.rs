//! The notarization log as a Raft state machine in RocksDB: openraft's `RaftStateMachine`, the
//! stored Merkle tree, signed checkpoints, and read access (records, roots, proofs) for the
//! notary.
//!
//! Applying `Request::Append` gives each record the next log index (the current tree size) and,
//! in the same `WriteBatch`, stores its canonical bytes, every tree node the record completes
//! (`merkle`: the leaf, and a parent each time a left sibling waits; amortised two writes per
//! record, at most `log2 n + 1`), its leaf hash in the leaf index if the hash is new, the new tree
//! size and applied log id, and, at most every [`SIGN_EVERY`], this node's signature over the
//! new tree head (not one per record, nor one per apply: at one request at a time every apply
//! would pay an Ed25519 signature). A reader that needs a checkpoint of the latest head
//! ([`StateReader::checkpoint`]) gets one signed on demand and kept until the tree grows.
//! License records also update the license state (`licenses`: the license index, its status
//! changes and its holder's index; rules in [`crate::license`]) in that batch, so the state is
//! always that of exactly the records applied. Access and config records also get their audit
//! index entries (`audit_index`; see [`crate::audit_query`]) in that batch.
//!
//! Invariants:
//! - records, leaf nodes, leaf index entries, license state and audit index entries exist
//!   exactly for `0..tree_size` in the live generation (a database written before the audit
//!   index existed gets it built on open, before anything reads it); a tree node is stored once
//!   complete and never changes, so every past tree size can be proven. The stored checkpoint is
//!   never ahead of the stored tree: it is written in the same batch as the tree it signs, and is
//!   at most [`SIGN_EVERY`] of applies behind it;
//! - applies are written without fsync. They share the write-ahead log with the Raft log, whose
//!   every append is synced after them, and what a crash loses is re-applied from that durable
//!   log (deterministically: the same records get the same indices). Snapshots and installs,
//!   after which the log may be purged, are synced;
//! - readers see one generation throughout a read: they hold the generation lock (shared) for
//!   its length, and an install holds it (exclusive) only while it switches generations.
//!
//! Layout: this file opens the store, applies entries and answers reads; below it, `meta` is the
//! applied state as `sm_meta` stores it, `tree` the stored Merkle tree and leaf index, `shared`
//! what the store, its readers and its snapshot builder share, and `error` the errors of reads
//! and of the integrity check. [`integrity`] checks the whole stored state on open; the
//! `snapshot` module builds and installs snapshots (files, streamed; see there for the format);
//! `licenses` and `audit_index` keep the state derived from the records. Every file here imports
//! only files below it, and none imports this one.

pub(crate) mod audit_index;
pub(crate) mod error;
pub mod governance;
pub mod integrity;
mod licenses;
pub(crate) mod meta;
pub mod origin;
mod shared;
mod snapshot;
pub(crate) mod tree;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, Snapshot, SnapshotMeta};
use qianlian_verifier::Hash;
use qianlian_verifier::license::StatusList;
use rocksdb::{DB, IteratorMode, WriteBatch};
use tokio::sync::watch;

pub use self::error::{RangeError, ReadError};
use self::meta::{Applied, Changed, LAYOUT, put_applied};
pub use self::meta::{ConfigPointer, ConfigPointers};
use self::meta::{
    KEY_CHECKPOINT, KEY_GENERATION, KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP, KEY_LAYOUT,
    KEY_TREE_SIZE,
};
pub use self::shared::StateMachineConfig;
use self::shared::{Files, Shared};
pub use self::snapshot::SnapshotBuilder;
use self::tree::{Appender, first_leaf_entry, load_edge, read_node, upgrade_leaf_index};
use crate::audit_query::{AuditPage, AuditQuery};
use crate::checkpoint::{self, CheckpointSigner, CosignRefusal, Cosignature, SignedCheckpoint};
use crate::db::{
    self, CF_RECORDS, CF_SM_META, CF_TREE, Db, END_KEY, GENERATION_CFS, StoreError, encode_value,
    generation_prefix, get_value, node_key, node_key_parts, record_key, record_key_parts,
};
use crate::license::LicenseView;
use crate::merkle::{self, Subtree};
use crate::record::{ConfigKind, Record};
use crate::types::{
    DEFAULT_MAX_BATCH, Entry, LogId, NodeId, RaftStorageError, Refused, Request, Response,
    StoredMembership, TypeConfig,
};

/// An apply signs the new tree head if the stored signature is at least this old. The stored
/// checkpoint anchors the integrity check on open; fresher heads are signed when asked for.
pub const SIGN_EVERY: Duration = Duration::from_millis(200);

/// Applies of at most this many records (one full group-commit entry at the default
/// `max_batch`) run on the calling worker, blocking it for a few milliseconds at most; larger
/// ones, as in a follower catching up, on the blocking pool. A hand-off costs two thread
/// wake-ups per apply: side by side on two cores, applying entries of up to 1 024 records in
/// place instead of above 8 raised throughput at 64 clients by 6–11 %.
const INLINE_APPLY_RECORDS: usize = DEFAULT_MAX_BATCH;

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

/// The last key of `cf` within `generation`, if any.
fn last_in_generation(
    db: &DB,
    cf_name: &str,
    generation: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    let cf = db::cf(db, cf_name)?;
    let mut iter = db.raw_iterator_cf(cf);
    match generation.checked_add(1) {
        Some(next) => iter.seek_for_prev(generation_prefix(next)),
        None => iter.seek_to_last(),
    }
    iter.status()?;
    Ok(iter
        .key()
        .filter(|k| k.starts_with(&generation_prefix(generation)))
        .map(<[u8]>::to_vec))
}

/// Delete every generation of state machine data but `live` (left by an interrupted install or
/// by one that finished before its cleanup ran).
fn delete_other_generations(db: &DB, live: u32) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    let mut any = false;
    for name in GENERATION_CFS {
        let cf = db::cf(db, name)?;
        let first = db.iterator_cf(cf, IteratorMode::Start).next().transpose()?;
        let last = db.iterator_cf(cf, IteratorMode::End).next().transpose()?;
        let live_prefix = generation_prefix(live);
        let outside = |key: &[u8]| !key.starts_with(&live_prefix);
        if first.as_ref().is_some_and(|(k, _)| outside(k))
            || last.as_ref().is_some_and(|(k, _)| outside(k))
        {
            any = true;
            batch.delete_range_cf(cf, generation_prefix(0).to_vec(), live_prefix.to_vec());
            let above = match live.checked_add(1) {
                Some(next) => generation_prefix(next).to_vec(),
                None => END_KEY.to_vec(),
            };
            batch.delete_range_cf(cf, above, END_KEY.to_vec());
        }
    }
    if any {
        db.write_opt(batch, &db::synced())?;
    }
    Ok(())
}

fn load_applied(db: &DB) -> Result<Applied, StoreError> {
    let layout: Option<u32> = get_value(db, CF_SM_META, KEY_LAYOUT, "state machine layout")?;
    let tree_size: Option<u64> = get_value(db, CF_SM_META, KEY_TREE_SIZE, "tree size")?;
    if layout.is_none() && tree_size.is_some() {
        return Err(StoreError::UnknownFormat {
            what: "state machine layout (written before the Merkle tree was stored; move this \
                   node's data directory away and let it catch up from its peers)"
                .into(),
            version: 1,
        });
    }
    if let Some(layout) = layout.filter(|l| *l != LAYOUT) {
        return Err(StoreError::UnknownFormat {
            what: "state machine layout".into(),
            version: u8::try_from(layout).unwrap_or(u8::MAX),
        });
    }
    let generation: u32 = get_value(db, CF_SM_META, KEY_GENERATION, "generation")?.unwrap_or(0);
    let last_applied: Option<Option<LogId>> =
        get_value(db, CF_SM_META, KEY_LAST_APPLIED, "last applied log id")?;
    let last_membership: Option<StoredMembership> =
        get_value(db, CF_SM_META, KEY_LAST_MEMBERSHIP, "last membership")?;
    let tree_size = tree_size.unwrap_or(0);
    delete_other_generations(db, generation)?;

    // Cheap consistency checks of "exactly 0..tree_size is present"; `integrity` checks all.
    let last_record = last_in_generation(db, CF_RECORDS, generation)?
        .map(|key| record_key_parts(&key).map(|(_, index)| index))
        .transpose()?;
    // Leaves are level 0 and sort first within a generation: the last key at or before the
    // largest possible leaf key is the last leaf.
    let last_leaf = {
        let mut iter = db.raw_iterator_cf(db::cf(db, CF_TREE)?);
        iter.seek_for_prev(node_key(generation, 0, u64::MAX));
        iter.status()?;
        match iter.key() {
            Some(k) if k.starts_with(&generation_prefix(generation)) => {
                let (_, level, index) = node_key_parts(k)?;
                (level == 0).then_some(index)
            }
            _ => None,
        }
    };
    let expected = tree_size.checked_sub(1);
    if last_record != expected || last_leaf != expected {
        return Err(StoreError::corrupt(
            "records",
            format!(
                "tree size is {tree_size} but the last record is at {last_record:?} and the \
                 last leaf at {last_leaf:?}"
            ),
        ));
    }
    let edge = load_edge(db, generation, tree_size)?;
    let note: Option<String> = get_value(db, CF_SM_META, KEY_CHECKPOINT, "checkpoint")?;
    let checkpoint = note
        .map(|note| checkpoint::parse_stored(&note))
        .transpose()
        .map_err(|e| StoreError::corrupt("checkpoint", e))?;
    let config = meta::load_config(db)?;
    let origin = origin::load(db, generation, &config)?;
    let governance = Arc::new(governance::load(db)?);
    Ok(Applied {
        last_applied: last_applied.flatten(),
        last_membership: last_membership.unwrap_or_default(),
        tree_size,
        generation,
        edge,
        checkpoint,
        signed_at: None,
        config,
        origin,
        governance,
    })
}

impl StateMachineStore {
    /// The state machine on `db`, with its applied state loaded and cheaply checked (run
    /// [`StateMachineStore::check_integrity`] for the full check).
    pub async fn new(db: Db, config: StateMachineConfig) -> Result<StateMachineStore, StoreError> {
        let dir = config.snapshot_dir.clone();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StoreError::Io(format!("snapshot directory {}: {e}", dir.display())))?;
        let applied = db.run(load_applied).await?;
        let (generation, size) = (applied.generation, applied.tree_size);
        db.run(move |db| {
            upgrade_leaf_index(db, generation, size)?;
            audit_index::upgrade_layout(db)?;
            audit_index::build_missing(db, generation, size)
        })
        .await?;
        snapshot::clean_directory(&db, &dir).await?;
        let (tree_size, _) = watch::channel(applied.tree_size);
        let (config_pointers, _) = watch::channel(applied.config);
        Ok(StateMachineStore {
            db,
            shared: Arc::new(Shared {
                applied: Mutex::new(applied),
                tree_size,
                config_pointers,
                promised: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                generation_lock: RwLock::new(()),
                on_demand: Mutex::new(None),
                snapshots_refused: AtomicU64::new(0),
                verified_batches: origin::VerifiedBatches::default(),
                config,
                files: Files::default(),
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

    /// Recompute every stored record's leaf hash and every stored tree node, and check the
    /// stored checkpoint against the tree and this node's key. See [`integrity`].
    pub async fn check_integrity(&self) -> Result<integrity::Report, integrity::IntegrityError> {
        let shared = self.shared.clone();
        self.db
            .run(move |db| Ok(integrity::check(db, &shared)))
            .await
            .map_err(integrity::IntegrityError::Store)?
    }
}

impl StateReader {
    /// Snapshots refused since the node started because they did not extend a tree this node
    /// signed.
    pub fn snapshots_refused(&self) -> u64 {
        self.shared.snapshots_refused.load(Ordering::Relaxed)
    }

    /// Number of records applied: the next record gets this log index.
    pub fn tree_size(&self) -> u64 {
        *self.shared.tree_size.borrow()
    }

    /// The Raft index of the next entry to apply, the tree size it will start from and the
    /// directory keys it will be checked against, read together.
    pub(crate) fn next_to_apply(
        &self,
    ) -> (u64, u64, Option<Arc<qianlian_verifier::record::OriginKeys>>) {
        let applied = self.shared.applied();
        let next = applied.last_applied.map_or(0, |id| id.index + 1);
        (next, applied.tree_size, applied.origin.clone())
    }

    /// Callers have been told that the first `tree_size` records are committed; reads wait
    /// until they are applied here ([`StateReader::settle`]).
    pub(crate) fn promise(&self, tree_size: u64) {
        self.shared.promised.fetch_max(tree_size, Ordering::SeqCst);
    }

    /// The larger of the applied tree size and the size promised to callers: every record
    /// below it is committed, and the reads of the notary wait until it is applied.
    pub fn known_size(&self) -> u64 {
        self.tree_size()
            .max(self.shared.promised.load(Ordering::SeqCst))
    }

    /// Wait (at most `timeout`) until every record a caller was told is committed is applied
    /// here too, so that a caller reads its own writes. Returns at once when nothing is owed,
    /// which is always the case on a node that did not answer early. `Err(size)` with the tree
    /// size reached when the time ran out.
    pub async fn settle(&self, timeout: Duration) -> Result<(), u64> {
        let promised = self.shared.promised.load(Ordering::SeqCst);
        if self.tree_size() >= promised {
            return Ok(());
        }
        self.wait_for_tree_size(promised, timeout).await.map(|_| ())
    }

    /// Run `f` on the live generation and tree size, on the blocking pool.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&DB, u32, u64) -> Result<R, ReadError> + Send + 'static,
    ) -> Result<R, ReadError> {
        let shared = self.shared.clone();
        self.db
            .run(move |db| {
                let _live = shared.read_generation();
                let (generation, size) = {
                    let applied = shared.applied();
                    (applied.generation, applied.tree_size)
                };
                Ok(f(db, generation, size))
            })
            .await?
    }

    /// [`StateReader::read`] for reads that cannot be out of range.
    async fn read_store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&DB, u32, u64) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        match self
            .read(move |db, generation, size| Ok(f(db, generation, size)?))
            .await
        {
            Ok(found) => Ok(found),
            Err(ReadError::Store(e)) => Err(e),
            Err(ReadError::Range(e)) => Err(StoreError::Task(e.to_string())),
        }
    }

    /// Remember `key` as a verified batch signature: this node made it.
    pub(crate) fn trust_batch(&self, key: qianlian_verifier::record::BatchKey) {
        self.shared.verified_batches.remember(key);
    }

    /// Whether every seal of `records` verifies (batch signatures through this node's cache of
    /// verified ones, a batch signature record over the records before it in `records`);
    /// unsealed records pass.
    pub(crate) fn seals_verify(&self, records: &[Record]) -> bool {
        let mut leaves: Option<Vec<Hash>> = None;
        records.iter().enumerate().all(|(p, r)| match r {
            Record::Sealed(s) => s.verify_signature().is_ok(),
            Record::BatchSealed(s) => self.shared.verified_batches.verify(s).is_ok(),
            Record::BatchSignature(s) => {
                let leaves = leaves.get_or_insert_with(|| {
                    records
                        .iter()
                        .map(|r| qianlian_verifier::leaf_hash(&r.encode()))
                        .collect()
                });
                s.covered(p).is_some_and(|range| {
                    self.shared
                        .verified_batches
                        .verify_covering(s, &leaves[p], &leaves[range])
                        .is_ok()
                })
            }
            _ => true,
        })
    }

    /// Records the origin check refused since this process started, on this node.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Run the origin check on `record` as if it were appended now, against the applied state:
    /// what every node will decide unless the directory in force changes first.
    pub async fn check_origin(&self, record: &Record) -> Result<(), origin::Refusal> {
        let (keys, config, governance) = {
            let applied = self.shared.applied();
            (
                applied.origin.clone(),
                applied.config,
                applied.governance.clone(),
            )
        };
        let issuer = match record.content() {
            Record::LicenseStatus(r) => self
                .license(r.license_hash)
                .await
                .ok()
                .flatten()
                .map(|v| v.issued.department),
            _ => None,
        };
        origin::judge(
            keys.as_deref(),
            &config,
            &governance,
            record,
            issuer.as_deref(),
            &self.shared.verified_batches,
        )
        .map(|_| ())
    }

    /// Whether operators sign membership changes, and the last change they signed, as of the
    /// applied state.
    pub fn membership_authority(&self) -> Result<origin::MembershipAuthority, StoreError> {
        let _live = self.shared.read_generation();
        let (generation, keys, config) = {
            let applied = self.shared.applied();
            (applied.generation, applied.origin.clone(), applied.config)
        };
        self.db
            .with(|db| origin::membership_authority(db, generation, keys.as_deref(), &config))
    }

    /// The governance in force as of the applied state (catalog versions and where each
    /// entry is).
    pub fn governance(&self) -> Arc<governance::Governance> {
        self.shared.applied().governance.clone()
    }

    /// The catalog entries in force, by dataset: each with the log index of its record, its
    /// leaf hash and the record (sealed under its department's batch signature).
    pub async fn catalog(
        &self,
    ) -> Result<Vec<(u64, Hash, qianlian_verifier::record::GovernanceRecord)>, StoreError> {
        let pointers: Vec<u64> = self
            .governance()
            .catalog
            .values()
            .map(|p| p.log_index)
            .collect();
        let mut out = Vec::with_capacity(pointers.len());
        for log_index in pointers {
            let what = || format!("record {log_index} (a catalog entry in force)");
            let bytes = self
                .record(log_index)
                .await?
                .ok_or_else(|| StoreError::corrupt(what(), "beyond the tree size"))?;
            match Record::decode(&bytes).map(Record::into_content) {
                Ok(Record::Governance(g)) => {
                    out.push((log_index, qianlian_verifier::leaf_hash(&bytes), g));
                }
                _ => return Err(StoreError::corrupt(what(), "not a governance record")),
            }
        }
        Ok(out)
    }

    /// The configuration in force as of the applied state.
    pub fn config_pointers(&self) -> ConfigPointers {
        *self.shared.config_pointers.borrow()
    }

    /// Follow changes of the configuration in force.
    pub fn watch_config(&self) -> watch::Receiver<ConfigPointers> {
        self.shared.config_pointers.subscribe()
    }

    /// Canonical bytes of the record at `log_index`, or `None` at or beyond the tree size.
    /// Bytes that do not decode as a record are reported as [`StoreError::Corrupt`].
    pub async fn record(&self, log_index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self
            .read(move |db, generation, size| {
                if log_index >= size {
                    return Ok(None);
                }
                let key = record_key(generation, log_index);
                let Some(bytes) = db.get_cf(db::cf(db, CF_RECORDS)?, key)? else {
                    return Err(StoreError::corrupt(
                        format!("record {log_index}"),
                        "missing below the tree size",
                    )
                    .into());
                };
                Record::decode(&bytes)
                    .map_err(|e| StoreError::corrupt(format!("record {log_index}"), e))?;
                Ok(Some(bytes))
            })
            .await;
        match read {
            Ok(bytes) => Ok(bytes),
            Err(ReadError::Store(e)) => Err(e),
            Err(ReadError::Range(e)) => Err(StoreError::Task(e.to_string())),
        }
    }

    /// `MTH(D[0:tree_size])` from the stored tree. [`RangeError::TreeSize`] beyond the applied
    /// tree.
    pub async fn root_at(&self, tree_size: u64) -> Result<Hash, ReadError> {
        self.read(move |db, generation, size| {
            if tree_size > size {
                return Err(RangeError::TreeSize {
                    size: tree_size,
                    applied: size,
                }
                .into());
            }
            Ok(merkle::root(tree_size, &mut |id| {
                read_node(db, generation, id)
            })?)
        })
        .await
    }

    /// `PATH(log_index, D[0:tree_size])`, bottom-up.
    pub async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: u64,
    ) -> Result<Vec<Hash>, ReadError> {
        self.read(move |db, generation, size| {
            if tree_size > size {
                return Err(RangeError::TreeSize {
                    size: tree_size,
                    applied: size,
                }
                .into());
            }
            if log_index >= tree_size {
                return Err(RangeError::LogIndex {
                    index: log_index,
                    size: tree_size,
                }
                .into());
            }
            Ok(merkle::inclusion_proof(log_index, tree_size, &mut |id| {
                read_node(db, generation, id)
            })?)
        })
        .await
    }

    /// `PROOF(old_size, D[0:new_size])`, bottom-up; empty when `old_size` is 0 or `new_size`.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, ReadError> {
        self.read(move |db, generation, size| {
            if new_size > size {
                return Err(RangeError::TreeSize {
                    size: new_size,
                    applied: size,
                }
                .into());
            }
            if old_size > new_size {
                return Err(RangeError::SizesOutOfOrder { old_size, new_size }.into());
            }
            Ok(merkle::consistency_proof(old_size, new_size, &mut |id| {
                read_node(db, generation, id)
            })?)
        })
        .await
    }

    /// The log index of the first record whose leaf hash is `hash`, if any. The index entry is
    /// checked against the stored leaf, so a damaged entry is an error, not a wrong answer.
    pub async fn index_of(&self, hash: Hash) -> Result<Option<u64>, StoreError> {
        let read = self
            .read(move |db, generation, size| {
                let Some(index) = first_leaf_entry(db, generation, &hash)? else {
                    return Ok(None);
                };
                let what = || format!("leaf index entry of {}", hex::encode(hash));
                if index >= size || read_node(db, generation, Subtree::new(0, index))? != hash {
                    return Err(StoreError::corrupt(
                        what(),
                        format!("points at log index {index}, which holds another record"),
                    )
                    .into());
                }
                Ok(Some(index))
            })
            .await;
        match read {
            Ok(found) => Ok(found),
            Err(ReadError::Store(e)) => Err(e),
            Err(ReadError::Range(e)) => Err(StoreError::Task(e.to_string())),
        }
    }

    /// The license `license_hash` as of the applied state, with its issuance, status and
    /// changes; `None` if no record applied so far issues it.
    pub async fn license(&self, license_hash: Hash) -> Result<Option<LicenseView>, StoreError> {
        // A point read of two small column families, on the calling thread: cheaper than the
        // hand-off to the blocking pool, and online verification asks it on every call.
        let _live = self.shared.read_generation();
        let (generation, size) = {
            let applied = self.shared.applied();
            (applied.generation, applied.tree_size)
        };
        self.db
            .with(|db| licenses::view(db, generation, size, &license_hash))
    }

    /// Log indices, ascending, of every issuance record naming holder `holder_hash` and every
    /// status record of a license issued to it (first issuance), as of the applied state.
    pub async fn holder_records(&self, holder_hash: Hash) -> Result<Vec<u64>, StoreError> {
        self.read_store(move |db, generation, size| {
            licenses::holder_records(db, generation, size, &holder_hash)
        })
        .await
    }

    /// One page of the access records matching `query`, as of the applied state (or of the tree
    /// size of `query.after`); see [`crate::audit_query`]. [`RangeError::TreeSize`] for a cursor
    /// beyond the applied tree.
    pub async fn audit_query(&self, query: AuditQuery) -> Result<AuditPage, ReadError> {
        self.read(move |db, generation, size| audit_index::query(db, generation, size, &query))
            .await
    }

    /// Every config record of `kind` applied so far, in log order, with its version.
    pub async fn config_history(&self, kind: ConfigKind) -> Result<Vec<ConfigPointer>, StoreError> {
        self.read_store(move |db, generation, size| {
            audit_index::config_history(db, generation, size, kind)
        })
        .await
    }

    /// Canonical bytes of records `start..min(start + max, tree_size)`, in order; empty from the
    /// tree size on.
    pub async fn entries(&self, start: u64, max: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read_store(move |db, generation, size| {
            audit_index::entries(db, generation, size, start, max)
        })
        .await
    }

    /// The status list as of the first `tree_size` records: this node's origin, that tree
    /// head, the time of record `tree_size - 1` in whole seconds (0 for the empty tree), and
    /// every license suspended or revoked by the records below `tree_size`. Every node that
    /// applied `tree_size` records computes the same list. [`RangeError::TreeSize`] beyond the
    /// applied tree.
    pub async fn status_list(&self, tree_size: u64) -> Result<StatusList, ReadError> {
        let origin = self.shared.config.signer.origin().to_owned();
        self.read(move |db, generation, size| {
            if tree_size > size {
                return Err(RangeError::TreeSize {
                    size: tree_size,
                    applied: size,
                }
                .into());
            }
            let root = merkle::root(tree_size, &mut |id| read_node(db, generation, id))?;
            // The time of the last record below the size: written by the gateway into the
            // replicated record, so every node signs the same time for the same size.
            let time = match tree_size.checked_sub(1) {
                None => 0,
                Some(last) => {
                    let bytes = db
                        .get_pinned_cf(db::cf(db, CF_RECORDS)?, record_key(generation, last))?
                        .ok_or_else(|| {
                            StoreError::corrupt(
                                format!("record {last}"),
                                "missing below the tree size",
                            )
                        })?;
                    let record = Record::decode(&bytes)
                        .map_err(|e| StoreError::corrupt(format!("record {last}"), e))?;
                    crate::license::unix_seconds(record.time_unix_ms())
                }
            };
            let entries = licenses::status_entries(db, generation, tree_size)?;
            Ok(StatusList::new(origin, tree_size, root, time, entries))
        })
        .await
    }

    /// Cosign the status list of `tree_size` records as this node computes it, if it has
    /// applied them.
    pub async fn cosign_status(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        let list = match self.status_list(tree_size).await {
            Ok(list) => list,
            Err(ReadError::Range(RangeError::TreeSize { applied, .. })) => {
                return Err(CosignRefusal::NotYet { applied });
            }
            Err(e) => {
                return Err(CosignRefusal::Failed {
                    reason: e.to_string(),
                });
            }
        };
        self.shared.config.signer.cosign_status_list(&list)
    }

    /// This node's signature over the head of the tree it applied (size and root); `None`
    /// without a signing key. The stored checkpoint if it covers the applied tree, else the head
    /// signed now (kept, so one signature serves every reader until the tree grows).
    pub fn checkpoint(&self) -> Option<SignedCheckpoint> {
        let (size, root) = {
            let applied = self.shared.applied();
            if let Some(cp) = applied
                .checkpoint
                .as_ref()
                .filter(|cp| cp.size == applied.tree_size)
            {
                return Some(cp.clone());
            }
            (applied.tree_size, applied.edge.root())
        };
        // Poisoned only by a panic between two plain assignments: the value is still whole.
        let mut on_demand = self
            .shared
            .on_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(cp) = on_demand.as_ref().filter(|cp| cp.size == size) {
            return Some(cp.clone());
        }
        match self.shared.config.signer.sign(size, root) {
            Ok(Some(signed)) => {
                *on_demand = Some(signed.clone());
                Some(signed)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, size, "signing the tree head");
                None
            }
        }
    }

    /// Store (synced) a checkpoint of the applied head if the stored one lags behind it, so that
    /// a stopped node's files carry this node's signature over every record they hold. Call it
    /// once nothing applies any more (the Raft node has stopped): an apply would store its own.
    pub async fn seal(&self) -> Result<(), StoreError> {
        let stored = {
            let applied = self.shared.applied();
            applied
                .checkpoint
                .as_ref()
                .is_some_and(|cp| cp.size == applied.tree_size)
        };
        if stored {
            return Ok(());
        }
        let Some(cp) = self.checkpoint() else {
            return Ok(());
        };
        let note = encode_value("checkpoint", &cp.note)?;
        self.db
            .run(move |db| {
                Ok(db.put_cf_opt(db::cf(db, CF_SM_META)?, KEY_CHECKPOINT, note, &db::synced())?)
            })
            .await?;
        self.shared.applied().checkpoint = Some(cp);
        Ok(())
    }

    /// This node's key and origin.
    pub fn signer(&self) -> &CheckpointSigner {
        &self.shared.config.signer
    }

    /// Cosign the tree head at `tree_size` from this node's own tree, if it has applied it.
    pub async fn cosign(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        let root = match self.root_at(tree_size).await {
            Ok(root) => root,
            Err(ReadError::Range(RangeError::TreeSize { applied, .. })) => {
                return Err(CosignRefusal::NotYet { applied });
            }
            Err(e) => {
                return Err(CosignRefusal::Failed {
                    reason: e.to_string(),
                });
            }
        };
        self.shared.config.signer.cosign(tree_size, root)
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

/// Sign the tree head of `applied` unless its checkpoint already covers that size or was signed
/// less than [`SIGN_EVERY`] ago. Returns whether it signed.
fn sign_if_due(signer: &CheckpointSigner, applied: &mut Applied) -> Result<bool, StoreError> {
    let covered = applied
        .checkpoint
        .as_ref()
        .is_some_and(|cp| cp.size == applied.tree_size);
    let recent = applied
        .signed_at
        .is_some_and(|at| at.elapsed() < SIGN_EVERY);
    if covered || (recent && applied.checkpoint.is_some()) {
        return Ok(false);
    }
    let Some(signed) = signer
        .sign(applied.tree_size, applied.edge.root())
        .map_err(|e| StoreError::Task(e.to_string()))?
    else {
        return Ok(false);
    };
    applied.checkpoint = Some(signed);
    applied.signed_at = Some(Instant::now());
    Ok(true)
}

fn apply_entries(
    db: &DB,
    shared: &Shared,
    mut applied: Applied,
    entries: Vec<Entry>,
) -> Result<(Applied, Vec<Response>), StoreError> {
    let mut batch = WriteBatch::default();
    let mut appender = Appender::new(db, applied.generation, applied.edge.clone());
    let mut licenses = licenses::LicenseStager::new(db, applied.generation);
    let mut audit = audit_index::AuditStager::new(db)?;
    let mut responses = Vec::with_capacity(entries.len());
    // Nothing applied yet: nothing of the applied state is stored yet either.
    let mut changed = if applied.last_applied.is_none() {
        Changed::EVERYTHING
    } else {
        Changed::default()
    };
    let (size_before, config_before) = (applied.tree_size, applied.config);
    for entry in entries {
        applied.last_applied = Some(entry.log_id);
        let first_index = appender.edge.size();
        match entry.payload {
            EntryPayload::Blank => responses.push(Response {
                first_index,
                ..Response::default()
            }),
            EntryPayload::Normal(Request::Append { records }) => {
                let mut hashes = Vec::with_capacity(records.len());
                let mut refused = Vec::new();
                // With batch signatures, each record's bytes and leaf are needed before any
                // applies (a signature holds for its whole group or not at all).
                let signed = records
                    .iter()
                    .any(|r| matches!(r, Record::BatchSignature(_)));
                let (mut encoded, verdicts) = if signed {
                    let encoded: Vec<Option<Vec<u8>>> =
                        records.iter().map(|r| Some(r.encode())).collect();
                    let leaves: Vec<Hash> = encoded
                        .iter()
                        .map(|b| qianlian_verifier::leaf_hash(b.as_deref().unwrap_or_default()))
                        .collect();
                    let verdicts = origin::batch_signatures(
                        applied.origin.as_deref(),
                        &applied.governance,
                        &records,
                        &leaves,
                        &shared.verified_batches,
                        |r| licenses.issuer_for(r),
                    )?;
                    (Some((encoded, leaves)), verdicts)
                } else {
                    (None, Vec::new())
                };
                for (position, record) in records.iter().enumerate() {
                    let verdict = match verdicts.get(position).cloned().flatten() {
                        // A record of a signed group, or its signature: decided above.
                        Some(Ok(())) => Ok(None),
                        Some(Err(refusal)) => Err(refusal),
                        None => origin::judge(
                            applied.origin.as_deref(),
                            &applied.config,
                            &applied.governance,
                            record,
                            licenses.issuer_for(record)?.as_deref(),
                            &shared.verified_batches,
                        ),
                    };
                    let keys = match verdict {
                        Ok(keys) => keys,
                        Err(refusal) => {
                            shared.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                raft_index = entry.log_id.index,
                                position,
                                reason = %refusal,
                                "record refused by the origin check: not appended"
                            );
                            refused.push(Refused {
                                position: u32::try_from(position).unwrap_or(u32::MAX),
                                reason: refusal.to_string(),
                            });
                            continue;
                        }
                    };
                    let index = appender.edge.size();
                    let hash = match &mut encoded {
                        Some((bytes, leaves)) => appender.append_hashed(
                            &mut batch,
                            bytes[position].take().unwrap_or_default(),
                            leaves[position],
                        )?,
                        None => appender.append(&mut batch, record.encode())?,
                    };
                    hashes.push(hash);
                    licenses.stage(&mut batch, index, record)?;
                    audit.collect(index, record);
                    applied.config.observe(index, record);
                    if matches!(record.content(), Record::Governance(_)) {
                        changed.governance |=
                            Arc::make_mut(&mut applied.governance).observe(index, record);
                    }
                    if let Some(keys) = keys {
                        applied.origin = Some(Arc::new(keys));
                    }
                }
                responses.push(Response {
                    first_index,
                    hashes,
                    refused,
                });
            }
            EntryPayload::Membership(membership) => {
                applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                changed.membership = true;
                responses.push(Response {
                    first_index,
                    ..Response::default()
                });
            }
        }
    }
    audit.stage(&mut batch, applied.generation);
    appender.stage_nodes(&mut batch)?;
    applied.tree_size = appender.edge.size();
    applied.edge = appender.edge;
    // In the same batch as the tree it signs, when one is due.
    changed.checkpoint |= sign_if_due(&shared.config.signer, &mut applied)?;
    changed.tree |= applied.tree_size != size_before;
    changed.config |= applied.config != config_before;
    put_applied(db, &mut batch, &applied, changed)?;
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
        if self.shared.promised.load(Ordering::SeqCst) > *self.shared.tree_size.borrow() {
            // Callers of these entries were answered at commit (`crate::commit_receipts`), and the
            // task taking them their receipts was woken just before this one: let it go first on
            // this thread, and apply behind it (or on another worker that steals this task), rather
            // than make the answer wait for another thread to wake up.
            tokio::task::yield_now().await;
        }
        let current = self.shared.applied().clone();
        let shared = self.shared.clone();
        let records: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(Request::Append { records }) => records.len(),
                _ => 0,
            })
            .sum();
        let applied = if records <= INLINE_APPLY_RECORDS {
            // One entry's records stage and write (unsynced) in tens of microseconds to a few
            // milliseconds; a hand-off to the blocking pool would add two thread wake-ups to
            // every apply, and every caller waits for them.
            self.db
                .with(|db| apply_entries(db, &shared, current, entries))
        } else {
            self.db
                .run(move |db| apply_entries(db, &shared, current, entries))
                .await
        };
        let (applied, responses) =
            applied.map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        self.shared.set(applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder::new(self.db.clone(), self.shared.clone())
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<snapshot::SnapshotFile>, RaftStorageError> {
        snapshot::begin_receiving(&self.shared).await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        data: Box<snapshot::SnapshotFile>,
    ) -> Result<(), RaftStorageError> {
        snapshot::install(&self.db, &self.shared, meta.clone(), data).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        snapshot::current(&self.db, &self.shared).await
    }
}

#[cfg(test)]
pub(crate) mod tests;
