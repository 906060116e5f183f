//! The record store: each department's own records, in RocksDB on the owner's node.
//!
//! Records never enter the replicated log (only their digests do). Keys are
//! `owner 0x00 dataset 0x00 record-key`, so each department's records form one contiguous,
//! separately scannable range. RocksDB calls block, so they run on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DB, Options, WriteOptions};

/// The store failed. The node's disk or database is at fault; the caller may retry later.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record store: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("record store task failed: {0}")]
    Task(String),
}

/// Handle to the record store; cheap to clone.
#[derive(Clone)]
pub struct RecordStore {
    db: Arc<DB>,
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore").finish_non_exhaustive()
    }
}

fn db_key(owner: &str, dataset: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + dataset.len() + key.len() + 2);
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k.extend_from_slice(dataset.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl RecordStore {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<RecordStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        Ok(RecordStore { db: Arc::new(db) })
    }

    /// Read one record's payload.
    #[tracing::instrument(name = "store.get", level = "info", skip(self), fields(found))]
    pub async fn get(
        &self,
        owner: &str,
        dataset: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db.clone();
        let k = db_key(owner, dataset, key);
        let got = tokio::task::spawn_blocking(move || db.get(k))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(StoreError::from)?;
        tracing::Span::current().record("found", got.is_some());
        Ok(got)
    }

    /// Store one record's payload durably (fsync before returning).
    #[tracing::instrument(
        name = "store.put",
        level = "info",
        skip(self, payload),
        fields(bytes = payload.len())
    )]
    pub async fn put(
        &self,
        owner: &str,
        dataset: &str,
        key: &str,
        payload: Vec<u8>,
    ) -> Result<(), StoreError> {
        let db = self.db.clone();
        let k = db_key(owner, dataset, key);
        tokio::task::spawn_blocking(move || {
            let mut w = WriteOptions::default();
            w.set_sync(true);
            db.put_opt(k, payload, &w)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_separated_by_owner_and_dataset_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = RecordStore::open(dir.path()).expect("open");
            s.put("a", "d", "k", b"one".to_vec()).await.expect("put");
            s.put("a", "d2", "k", b"two".to_vec()).await.expect("put");
            assert_eq!(s.get("b", "d", "k").await.expect("get"), None);
            // `a\0d\0k` must not collide with owner `a\0d`, dataset `k`.
            assert_eq!(s.get("a", "d", "").await.expect("get"), None);
        }
        let s = RecordStore::open(dir.path()).expect("reopen");
        assert_eq!(
            s.get("a", "d", "k").await.expect("get"),
            Some(b"one".to_vec())
        );
        assert_eq!(
            s.get("a", "d2", "k").await.expect("get"),
            Some(b"two".to_vec())
        );
    }
}
