//! The record store: each department's own records, in RocksDB on the owner's node.
//!
//! Records never enter the replicated log (only their digests do). Keys are
//! `owner 0x00 dataset 0x00 record-key`, so each department's records form one contiguous,
//! separately scannable range. Indexed fields get entries
//! `0x01 owner 0x00 dataset 0x00 field 0x00 value 0x00 record-key` (empty values), written in the
//! same batch as the record. A query re-reads every hit and checks it, so an index entry left
//! behind by two racing writes of one record can never return a record that does not match.
//! Writes (fsynced) and scans block, so they run on the blocking pool. A point read runs on the
//! calling thread: it finds its key in the memtable, the block cache or the page cache in a few
//! microseconds, less than the two thread wake-ups of a hand-off to the blocking pool, which a
//! profile of notarized reads showed as the largest single cost per request.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DB, Options, WriteBatch, WriteOptions};

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

const INDEX: u8 = 1;

fn index_prefix(owner: &str, dataset: &str, field: &str, value: &str) -> Vec<u8> {
    let mut k = vec![INDEX];
    for part in [owner, dataset, field, value] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k
}

/// The indexable value of `field` in a JSON object: strings as they are, numbers and booleans
/// as written; other values and values holding NUL are not indexed.
pub fn field_value(payload: &serde_json::Value, field: &str) -> Option<String> {
    let v = match payload.get(field)? {
        serde_json::Value::String(s) => s.clone(),
        n @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => n.to_string(),
        _ => return None,
    };
    (!v.contains('\0')).then_some(v)
}

fn index_keys(
    owner: &str,
    dataset: &str,
    key: &str,
    payload: &[u8],
    indexed: &[String],
) -> Vec<Vec<u8>> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    indexed
        .iter()
        .filter_map(|f| {
            let v = field_value(&json, f)?;
            let mut k = index_prefix(owner, dataset, f, &v);
            k.extend_from_slice(key.as_bytes());
            Some(k)
        })
        .collect()
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
        let got = self.db.get(db_key(owner, dataset, key))?;
        tracing::Span::current().record("found", got.is_some());
        Ok(got)
    }

    /// Store one record's payload durably (fsync before returning), with index entries for
    /// the `indexed` fields; the entries of the record's previous version go.
    #[tracing::instrument(
        name = "store.put",
        level = "info",
        skip(self, payload, indexed),
        fields(bytes = payload.len())
    )]
    pub async fn put(
        &self,
        owner: &str,
        dataset: &str,
        key: &str,
        payload: Vec<u8>,
        indexed: &[String],
    ) -> Result<(), StoreError> {
        let db = self.db.clone();
        let (owner, dataset, key) = (owner.to_owned(), dataset.to_owned(), key.to_owned());
        let indexed = indexed.to_vec();
        tokio::task::spawn_blocking(move || {
            let k = db_key(&owner, &dataset, &key);
            let mut batch = WriteBatch::default();
            if let Some(old) = db.get(&k)? {
                for stale in index_keys(&owner, &dataset, &key, &old, &indexed) {
                    batch.delete(stale);
                }
            }
            for entry in index_keys(&owner, &dataset, &key, &payload, &indexed) {
                batch.put(entry, []);
            }
            batch.put(k, payload);
            let mut w = WriteOptions::default();
            w.set_sync(true);
            db.write_opt(batch, &w)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(StoreError::from)
    }

    /// Records of `owner`/`dataset` whose fields equal every `(field, value)` of `matches`
    /// (the first must be indexed), in key order, at most `limit`.
    pub async fn query(
        &self,
        owner: &str,
        dataset: &str,
        matches: Vec<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.db.clone();
        let (owner, dataset) = (owner.to_owned(), dataset.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let Some((field, value)) = matches.first() else {
                return Ok(found);
            };
            let prefix = index_prefix(&owner, &dataset, field, value);
            for item in db.prefix_iterator(&prefix) {
                let (k, _) = item?;
                let Some(key) = k.strip_prefix(prefix.as_slice()) else {
                    break;
                };
                let key = String::from_utf8_lossy(key).into_owned();
                let Some(payload) = db.get(db_key(&owner, &dataset, &key))? else {
                    continue;
                };
                let Ok(json) = serde_json::from_slice::<serde_json::Value>(&payload) else {
                    continue;
                };
                if matches
                    .iter()
                    .all(|(f, v)| field_value(&json, f).as_deref() == Some(v.as_str()))
                {
                    found.push((key, payload));
                    if found.len() >= limit {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
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
            s.put("a", "d", "k", b"one".to_vec(), &[])
                .await
                .expect("put");
            s.put("a", "d2", "k", b"two".to_vec(), &[])
                .await
                .expect("put");
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

    #[tokio::test]
    async fn queries_use_the_index_and_follow_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RecordStore::open(dir.path()).expect("open");
        let idx = vec!["status".to_owned(), "city".to_owned()];
        let rec = |status: &str, city: &str| {
            serde_json::json!({"status": status, "city": city, "n": 1})
                .to_string()
                .into_bytes()
        };
        s.put("o", "d", "k1", rec("open", "gy"), &idx)
            .await
            .expect("put");
        s.put("o", "d", "k2", rec("open", "zy"), &idx)
            .await
            .expect("put");
        s.put("o", "d", "k3", rec("closed", "gy"), &idx)
            .await
            .expect("put");
        s.put("o", "d2", "k4", rec("open", "gy"), &idx)
            .await
            .expect("put");
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let q = |m: &[(&str, &str)]| {
            m.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(
                s.query("o", "d", q(&[("status", "open")]), 10)
                    .await
                    .expect("q")
            ),
            ["k1", "k2"]
        );
        assert_eq!(
            keys(
                s.query("o", "d", q(&[("status", "open"), ("city", "gy")]), 10)
                    .await
                    .expect("q")
            ),
            ["k1"]
        );
        assert_eq!(
            keys(
                s.query("o", "d", q(&[("status", "open")]), 1)
                    .await
                    .expect("q")
            ),
            ["k1"]
        );
        // An update moves the record out of its old index entry.
        s.put("o", "d", "k1", rec("closed", "gy"), &idx)
            .await
            .expect("put");
        assert_eq!(
            keys(
                s.query("o", "d", q(&[("status", "open")]), 10)
                    .await
                    .expect("q")
            ),
            ["k2"]
        );
        assert_eq!(
            keys(
                s.query("o", "d", q(&[("status", "closed")]), 10)
                    .await
                    .expect("q")
            ),
            ["k1", "k3"]
        );
        // A value that is a prefix of another does not match it.
        assert!(
            s.query("o", "d", q(&[("status", "clos")]), 10)
                .await
                .expect("q")
                .is_empty()
        );
    }
}
