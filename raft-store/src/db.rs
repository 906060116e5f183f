//! The RocksDB database under `data_dir/raft`: its column families, key and value encodings, and
//! the one place that opens, shares and closes it.
//!
//! Layout (column family → key → value):
//! - `log`: Raft index (u64 big-endian, so byte order is numeric order) → `[1] ++ postcard(Entry)`
//! - `log_meta`: `vote` | `committed` | `last_purged` → `[1] ++ postcard(..)`
//! - `records`: log index (u64 big-endian) → the record's canonical bytes (self-versioned)
//! - `sm_meta`: `last_applied` | `last_membership` | `tree_size` → `[1] ++ postcard(..)`
//! - `snapshot`: `current` → `[1] ++ postcard(StoredSnapshot)`
//!
//! Invariants: every value but a record's canonical bytes starts with [`VALUE_FORMAT_V1`], so a
//! value written by a newer layout is refused with [`StoreError::UnknownFormat`] rather than
//! misread. Log and state machine share one database and therefore one write-ahead log: a synced
//! write makes every earlier write durable too, which `state_machine` relies on.
//!
//! RocksDB calls block; `Db::run` carries them to tokio's blocking pool. After [`Db::close`]
//! every call fails with [`StoreError::Closed`] and the directory lock is released, so the same
//! directory can be reopened in the same process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{NodeId, RaftStorageError};

/// First byte of every stored value except records: the storage layout version.
pub const VALUE_FORMAT_V1: u8 = 1;

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_LOG_META: &str = "log_meta";
pub(crate) const CF_RECORDS: &str = "records";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
const COLUMN_FAMILIES: [&str; 5] = [CF_LOG, CF_LOG_META, CF_RECORDS, CF_SM_META, CF_SNAPSHOT];

/// Why the notary's storage failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused (disk full, I/O error, directory locked by another process). The operator
    /// must fix the machine; a retry helps only once the cause is gone.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
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
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
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
