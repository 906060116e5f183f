//! The RocksDB database under `data_dir/raft`: its column families, key and value encodings, and
//! the one place that opens, shares and closes it.
//!
//! Layout (column family → key → value):
//! - `log`: Raft index (u64 big-endian, so byte order is numeric order) → `[1] ++ postcard(Entry)`
//! - `log_meta`: `vote` | `committed` | `last_purged` → `[1] ++ postcard(..)`
//! - `records`: generation (u32 BE) ++ log index (u64 BE) → the record's canonical bytes
//!   (self-versioned)
//! - `tree`: generation ++ level (u8) ++ index at that level (u64 BE) → the 32-byte RFC 6962 hash
//!   of that complete perfect subtree (see `merkle`)
//! - `leaf_index`: generation ++ leaf hash (32 bytes) ++ log index (u64 BE) → empty, for every
//!   record: the entries of one hash are adjacent and the first is the smallest log index, so
//!   the apply writes without reading whether the hash is known
//! - `licenses`: generation ++ license hash (32 bytes) → log index (u64 BE) of the license's
//!   first issuance record
//! - `license_changes`: generation ++ license hash ++ log index (u64 BE) → `[1] ++
//!   postcard(StoredChange)` (change, time, reason) for every status record of an issued
//!   license, whether or not it changed the status
//! - `holders`: generation ++ holder hash (32 bytes) ++ log index (u64 BE) → empty, for every
//!   issuance record naming that holder and every status record of a license issued to it
//! - `audit`: generation ++ field tag (u8) ++ value digest (16 bytes) ++ time bucket (Unix ms /
//!   [`AUDIT_BUCKET_MS`], u64 BE) ++ log index (u64 BE) → `[1] ++ positions`: the posting lists of
//!   the audit index (see [`crate::audit_query`] for the fields and their values; the digest is the
//!   first 16 bytes of SHA-256(field tag ++ value)), cut into buckets of record time and written in
//!   chunks. A position is a record's time (Unix ms, u64 BE) ++ its log index (u64 BE); one apply
//!   writes one chunk per posting list and bucket it touches, holding the sorted positions of its
//!   records there and keyed by the smallest log index among them. A bucket's positions are those
//!   of all its chunks: one per access record with that field value in that time bucket, and one
//!   per config record
//! - `sm_meta`: `layout` | `generation` | `last_applied` | `last_membership` | `tree_size` |
//!   `checkpoint` | `config` | `audit_indexed` | `audit_layout` | `leaf_layout` → `[1] ++
//!   postcard(..)`
//! - `snapshot`: `current` → `[1] ++ postcard(..)`: the current snapshot's metadata and file name
//!
//! The state machine's data (`records`, `tree`, `leaf_index`, the license state and the audit
//! index) lives under a
//! **generation**
//! prefix; `sm_meta/generation` names the live one. Installing a snapshot writes the next
//! generation beside the live one and switches `generation` in its last, synced write, so a
//! crash mid-install leaves the old state whole; other generations are garbage, deleted on open.
//!
//! Invariants: every value but a record's canonical bytes, the fixed-width values of `tree`
//! (32 bytes), `licenses` (8 bytes) and the empty values of `leaf_index` and `holders` starts
//! with [`VALUE_FORMAT_V1`], so a value written by a newer layout is refused with
//! [`StoreError::UnknownFormat`] rather than misread; fixed-width values are checked by length.
//! Log and state machine share one database and therefore one write-ahead log: a synced write
//! makes every earlier write durable too, which `state_machine` relies on.
//!
//! RocksDB calls block; `Db::run` carries them to tokio's blocking pool. After [`Db::close`]
//! every call fails with [`StoreError::Closed`] and the directory lock is released, so the same
//! directory can be reopened in the same process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use qianlian_verifier::Hash;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, Options, ReadOptions, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{NodeId, RaftStorageError};

/// First byte of every stored value except records: the storage layout version.
pub const VALUE_FORMAT_V1: u8 = 1;

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_LOG_META: &str = "log_meta";
pub(crate) const CF_RECORDS: &str = "records";
pub(crate) const CF_TREE: &str = "tree";
pub(crate) const CF_LEAF_INDEX: &str = "leaf_index";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
pub(crate) const CF_LICENSES: &str = "licenses";
pub(crate) const CF_LICENSE_CHANGES: &str = "license_changes";
pub(crate) const CF_HOLDERS: &str = "holders";
pub(crate) const CF_AUDIT: &str = "audit";
/// Every column family, in the order they are opened.
pub const COLUMN_FAMILIES: [&str; 11] = [
    CF_LOG,
    CF_LOG_META,
    CF_RECORDS,
    CF_TREE,
    CF_LEAF_INDEX,
    CF_SM_META,
    CF_SNAPSHOT,
    CF_LICENSES,
    CF_LICENSE_CHANGES,
    CF_HOLDERS,
    CF_AUDIT,
];
/// The column families that hold state machine data under a generation prefix.
pub(crate) const GENERATION_CFS: [&str; 7] = [
    CF_RECORDS,
    CF_TREE,
    CF_LEAF_INDEX,
    CF_LICENSES,
    CF_LICENSE_CHANGES,
    CF_HOLDERS,
    CF_AUDIT,
];

/// Why the notary's storage failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused (disk full, I/O error, directory locked by another process). The operator
    /// must fix the machine; a retry helps only once the cause is gone.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Reading or writing a snapshot file failed (disk full, permissions, directory removed).
    /// The operator must fix the machine; a retry helps once the cause is gone.
    #[error("snapshot file: {0}")]
    Io(String),
    /// A stored value does not decode: the files were altered or damaged. Nobody's request is at
    /// fault and no retry helps; restore the node from its peers.
    #[error("corrupt {what} in storage: {detail}")]
    Corrupt { what: String, detail: String },
    /// A stored value was written by a newer storage layout. Upgrade this node; no retry helps.
    #[error("{what} in storage has unknown format version {version}")]
    UnknownFormat { what: String, version: u8 },
    /// The database was closed by a shutdown; reopen the notary to use it again.
    #[error("storage is closed")]
    Closed,
    /// A blocking storage task panicked or was cancelled: a bug in this crate.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The Raft node stopped on a storage failure, as it must to protect the log. The operator
    /// must inspect the disk (see the node's log) and restart; no retry helps.
    #[error("raft stopped on a storage failure: {0}")]
    Halted(String),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// openraft's view of this error. Any storage error stops the Raft node, as it must: a node
    /// that cannot trust its own log must not vote or replicate.
    pub(crate) fn into_raft(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> RaftStorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// The options of column family `name`.
pub(crate) fn cf_options(name: &str) -> Options {
    let mut cf_opts = Options::default();
    if name == CF_LEAF_INDEX || name == CF_LICENSES {
        // Most hashes asked for (a new license at every issuance, a record's hash sent by a
        // client) are not there: a Bloom filter answers that without reading blocks.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        cf_opts.set_block_based_table_factory(&table);
    }
    cf_opts
}

/// The shared, closable handle to the database.
#[derive(Clone)]
pub struct Db {
    // `None` once closed. Readers hold the read lock for the length of one blocking call, so
    // `close` waits for them and nothing touches a dropped database.
    inner: Arc<RwLock<Option<DB>>>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Open or create the database at `path` with all column families. Blocking.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The write-ahead log is the durability mechanism; keep a bounded number of info logs.
        opts.set_keep_log_file_num(10);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Db {
            inner: Arc::new(RwLock::new(Some(db))),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the database on the calling thread. Blocking: call it from blocking contexts.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&DB) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // A panic inside `f` poisons the lock but cannot leave RocksDB inconsistent: go on.
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }

    /// Run `f` on the database on tokio's blocking pool.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&DB) -> Result<R, StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.with(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Run `f`, which waits for the disk (a synced write), on the calling thread when that is a
    /// worker of a multi-threaded runtime, blocking it for the write; elsewhere (a
    /// current-thread runtime, as in unit tests, whose only thread must not stall) on the
    /// blocking pool.
    ///
    /// Every Raft append comes here, on the way of every request. A hand-off to the blocking
    /// pool costs two thread wake-ups; `block_in_place` costs one (a thread to take over the
    /// worker) and leaves the Raft core running without a worker afterwards, so each task it
    /// wakes then (the state machine, the caller) is a wake-up of another thread. Blocking the
    /// worker costs none: the other workers steal its queued tasks meanwhile, and what the core
    /// wakes after the write runs on the same thread. Measured side by side on two cores, the
    /// one-client p50 fell by 14 % and throughput at 64 clients rose by 14 %.
    pub(crate) async fn run_synced<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&DB) -> Result<R, StoreError> + Send + 'static,
    {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
            self.with(f)
        } else {
            self.run(f).await
        }
    }

    /// Close the database: wait for running calls, flush, release the directory lock. Blocking.
    /// Later calls fail with [`StoreError::Closed`].
    pub fn close(&self) {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = guard.take() {
            // Best effort: the write-ahead log already holds every acknowledged write.
            if let Err(e) = db.flush_wal(true) {
                tracing::warn!(error = %e, path = %self.path.display(), "flushing WAL on close");
            }
            drop(db);
        }
    }
}

/// The column family `name`; missing only if the directory was tampered with.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::corrupt("column family", format!("{name} is missing")))
}

/// Write options that fsync the write-ahead log before returning.
pub(crate) fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// Write options that leave the write in the OS page cache until the next synced write.
pub(crate) fn unsynced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(false);
    w
}

/// Key of a Raft or log index: big-endian so RocksDB's byte order is numeric order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Inverse of [`index_key`].
pub(crate) fn key_index(what: &str, key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StoreError::corrupt(what, format!("key of {} bytes, expected 8", key.len()))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Upper bound (exclusive) above every [`index_key`], for range deletes.
pub(crate) const END_KEY: [u8; 9] = [0xff; 9];

/// The key prefix of state machine generation `generation`.
pub fn generation_prefix(generation: u32) -> [u8; 4] {
    generation.to_be_bytes()
}

/// Key of record `log_index` in generation `generation` (generation 0 until the node installs
/// its first snapshot; `sm_meta/generation` names the live one).
pub fn record_key(generation: u32, log_index: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&generation.to_be_bytes());
    key[4..].copy_from_slice(&log_index.to_be_bytes());
    key
}

/// Inverse of [`record_key`]: `(generation, log index)`.
pub(crate) fn record_key_parts(key: &[u8]) -> Result<(u32, u64), StoreError> {
    let bytes: [u8; 12] = key.try_into().map_err(|_| {
        StoreError::corrupt("record key", format!("{} bytes, expected 12", key.len()))
    })?;
    Ok((
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u64::from_be_bytes([
            bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9], bytes[10], bytes[11],
        ]),
    ))
}

/// Key of tree node `(level, index)` in generation `generation`.
pub fn node_key(generation: u32, level: u8, index: u64) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..4].copy_from_slice(&generation.to_be_bytes());
    key[4] = level;
    key[5..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Inverse of [`node_key`]: `(generation, level, index)`.
pub(crate) fn node_key_parts(key: &[u8]) -> Result<(u32, u8, u64), StoreError> {
    let bytes: [u8; 13] = key.try_into().map_err(|_| {
        StoreError::corrupt("tree key", format!("{} bytes, expected 13", key.len()))
    })?;
    Ok((
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        bytes[4],
        u64::from_be_bytes([
            bytes[5], bytes[6], bytes[7], bytes[8], bytes[9], bytes[10], bytes[11], bytes[12],
        ]),
    ))
}

/// Generation `generation` ++ `hash`: the key of a license in `licenses`, the prefix of a hash's
/// entries in `leaf_index`, `license_changes` and `holders`.
pub fn leaf_key(generation: u32, hash: &Hash) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..4].copy_from_slice(&generation.to_be_bytes());
    key[4..].copy_from_slice(hash);
    key
}

/// Key of license `license_hash` in the `licenses` index of generation `generation`.
pub fn license_key(generation: u32, license_hash: &Hash) -> [u8; 36] {
    leaf_key(generation, license_hash)
}

/// Key of a hash-then-log-index entry (`license_changes`, `holders`): all entries of one hash
/// are adjacent and sorted by log index.
pub fn hash_index_key(generation: u32, hash: &Hash, log_index: u64) -> [u8; 44] {
    let mut key = [0u8; 44];
    key[..4].copy_from_slice(&generation.to_be_bytes());
    key[4..36].copy_from_slice(hash);
    key[36..].copy_from_slice(&log_index.to_be_bytes());
    key
}

/// Inverse of [`hash_index_key`]: `(generation, hash, log index)`.
pub(crate) fn hash_index_key_parts(what: &str, key: &[u8]) -> Result<(u32, Hash, u64), StoreError> {
    let bytes: [u8; 44] = key.try_into().map_err(|_| {
        StoreError::corrupt(what, format!("key of {} bytes, expected 44", key.len()))
    })?;
    let mut generation = [0u8; 4];
    generation.copy_from_slice(&bytes[..4]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[4..36]);
    let mut index = [0u8; 8];
    index.copy_from_slice(&bytes[36..]);
    Ok((
        u32::from_be_bytes(generation),
        hash,
        u64::from_be_bytes(index),
    ))
}

/// Width of one bucket of an audit posting list, in milliseconds of record time (about a
/// tenth of a second). A busy list gets one key per bucket and apply instead of one per record;
/// a query that hops through a busy list reads the chunks of one bucket per hop.
pub const AUDIT_BUCKET_MS: u64 = 128;

/// Length of an [`audit_key`].
pub const AUDIT_KEY_LEN: usize = 37;

/// Length of one position in an audit chunk: time (u64 BE) ++ log index (u64 BE).
pub const AUDIT_POSITION_LEN: usize = 16;

/// The bucket of the audit index that holds positions at `time_unix_ms`.
pub fn audit_bucket(time_unix_ms: u64) -> u64 {
    time_unix_ms / AUDIT_BUCKET_MS
}

/// Key of the chunk of bucket `bucket` of the posting list `(tag, digest)` of generation
/// `generation` whose smallest log index is `log_index`: a list's chunks are adjacent and
/// sorted by bucket.
pub fn audit_key(
    generation: u32,
    tag: u8,
    digest: &[u8; 16],
    bucket: u64,
    log_index: u64,
) -> [u8; AUDIT_KEY_LEN] {
    let mut key = [0u8; AUDIT_KEY_LEN];
    key[..4].copy_from_slice(&generation.to_be_bytes());
    key[4] = tag;
    key[5..21].copy_from_slice(digest);
    key[21..29].copy_from_slice(&bucket.to_be_bytes());
    key[29..].copy_from_slice(&log_index.to_be_bytes());
    key
}

/// The `(bucket, log index)` of an [`audit_key`].
pub(crate) fn audit_key_parts(key: &[u8]) -> Result<(u64, u64), StoreError> {
    let bytes: [u8; AUDIT_KEY_LEN] = key.try_into().map_err(|_| {
        StoreError::corrupt(
            "audit index key",
            format!("{} bytes, expected {AUDIT_KEY_LEN}", key.len()),
        )
    })?;
    let mut bucket = [0u8; 8];
    bucket.copy_from_slice(&bytes[21..29]);
    let mut index = [0u8; 8];
    index.copy_from_slice(&bytes[29..]);
    Ok((u64::from_be_bytes(bucket), u64::from_be_bytes(index)))
}

/// The value of an audit chunk holding `positions`, each the
/// `(time, log index)` of a record as one number (time in the high 64 bits).
pub fn encode_audit_positions(positions: impl IntoIterator<Item = u128>) -> Vec<u8> {
    let mut value = vec![VALUE_FORMAT_V1];
    for position in positions {
        value.extend_from_slice(&position.to_be_bytes());
    }
    value
}

/// The positions of an audit chunk's value, as stored (`None` unless it is the format byte
/// and whole positions).
pub(crate) fn audit_positions(value: &[u8]) -> Option<&[u8]> {
    match value.split_first() {
        Some((&VALUE_FORMAT_V1, rest)) if rest.len() % AUDIT_POSITION_LEN == 0 => Some(rest),
        _ => None,
    }
}

/// Position `i` of the positions `raw` (see [`audit_positions`]).
pub(crate) fn audit_position(raw: &[u8], i: usize) -> u128 {
    let mut bytes = [0u8; AUDIT_POSITION_LEN];
    bytes.copy_from_slice(&raw[i * AUDIT_POSITION_LEN..(i + 1) * AUDIT_POSITION_LEN]);
    u128::from_be_bytes(bytes)
}

/// A stored tree node: exactly 32 bytes.
pub(crate) fn decode_hash(what: impl Fn() -> String, bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(what(), format!("{} bytes, expected 32", bytes.len())))
}

/// Read options for long scans: checksums verified, and the block cache left to point reads.
pub(crate) fn scan_options() -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.set_verify_checksums(true);
    opts.fill_cache(false);
    opts
}

/// `[VALUE_FORMAT_V1] ++ postcard(value)`.
pub(crate) fn encode_value<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![VALUE_FORMAT_V1];
    postcard::to_io(value, &mut out)
        .map_err(|e| StoreError::Task(format!("encoding {what}: {e}")))?;
    Ok(out)
}

/// Inverse of [`encode_value`]; refuses other versions and trailing bytes.
pub(crate) fn decode_value<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| StoreError::corrupt(what, "empty value"))?;
    if version != VALUE_FORMAT_V1 {
        return Err(StoreError::UnknownFormat {
            what: what.to_string(),
            version,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| StoreError::corrupt(what, e))?;
    if !rest.is_empty() {
        return Err(StoreError::corrupt(
            what,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// Read and decode one `[1] ++ postcard` value; `None` if absent.
pub(crate) fn get_value<T: DeserializeOwned>(
    db: &DB,
    cf_name: &str,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, StoreError> {
    match db.get_pinned_cf(cf(db, cf_name)?, key)? {
        Some(bytes) => decode_value(what, &bytes).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_refuse_damage() {
        let bytes = encode_value("n", &42u64).unwrap_or_default();
        assert_eq!(decode_value::<u64>("n", &bytes).ok(), Some(42));
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(matches!(
            decode_value::<u64>("n", &newer),
            Err(StoreError::UnknownFormat { version: 2, .. })
        ));
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(
            decode_value::<u64>("n", &longer),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_value::<u64>("n", &[]),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn index_keys_sort_numerically() {
        assert!(index_key(255) < index_key(256));
        assert!(index_key(u64::MAX).as_slice() < END_KEY.as_slice());
        assert_eq!(key_index("k", &index_key(7)).ok(), Some(7));
        assert!(key_index("k", &[1, 2]).is_err());
    }

    #[test]
    fn generation_keys_sort_by_generation_then_position() {
        assert!(record_key(0, 255) < record_key(0, 256));
        assert!(record_key(0, u64::MAX) < record_key(1, 0));
        assert!(generation_prefix(1).as_slice() < record_key(1, 0).as_slice());
        assert!(node_key(0, 0, u64::MAX) < node_key(0, 1, 0));
        assert!(node_key(0, 63, u64::MAX) < node_key(1, 0, 0));
        assert_eq!(record_key_parts(&record_key(3, 9)).ok(), Some((3, 9)));
        assert_eq!(node_key_parts(&node_key(3, 2, 9)).ok(), Some((3, 2, 9)));
        assert!(record_key_parts(&[0; 8]).is_err());
        assert!(node_key_parts(&[0; 12]).is_err());
        assert!(decode_hash(|| "node".into(), &[0; 31]).is_err());
        assert!(hash_index_key(0, &[0xff; 32], u64::MAX) < hash_index_key(1, &[0; 32], 0));
        assert!(hash_index_key(0, &[1; 32], 255) < hash_index_key(0, &[1; 32], 256));
        assert_eq!(
            hash_index_key_parts("k", &hash_index_key(3, &[7; 32], 9)).ok(),
            Some((3, [7; 32], 9))
        );
        assert!(hash_index_key_parts("k", &[0; 36]).is_err());
    }

    #[test]
    fn closed_database_refuses_calls_and_can_be_reopened() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let db = Db::open(dir.path())?;
        db.with(|db| Ok(db.put_cf(cf(db, CF_SM_META)?, b"k", b"v")?))?;
        db.close();
        assert_eq!(db.with(|_| Ok(())), Err(StoreError::Closed));
        let again = Db::open(dir.path())?;
        let v = again.with(|db| Ok(db.get_cf(cf(db, CF_SM_META)?, b"k")?))?;
        assert_eq!(v.as_deref(), Some(&b"v"[..]));
        Ok(())
    }
}
