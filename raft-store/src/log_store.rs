//! The Raft log and vote in RocksDB: openraft's `RaftLogStorage` and `RaftLogReader`.
//!
//! Invariants:
//! - every append is one `WriteBatch` written with `sync = true`, and openraft's `LogFlushed`
//!   callback fires only after that write returned: an entry acknowledged to the leader survives a
//!   power cut. The same holds for the vote, truncation and purge;
//! - entries are stored under their Raft index and checked against it when read, so a value
//!   moved or altered on disk is reported, not replayed;
//! - writes are serialised: each method awaits its blocking write before returning, and openraft
//!   calls them one at a time through `&mut self`;
//! - synced writes (append, vote, truncate, purge) block the calling worker for their fsync
//!   ([`Db::run_synced`]): the write starts at once, without waking another thread, and what
//!   the Raft core wakes afterwards runs on the same thread. Reading a few entries back for
//!   apply and replication runs on the calling thread: it touches the memtable for
//!   microseconds;
//! - the committed log id is not stored: the state machine stores what it applied with every
//!   apply, so a restarted node starts from there, and one WAL write per commit is saved.
//!   openraft still reports each commit here, before it applies the entries: the store passes
//!   it on to [`EarlyReceipts`], with the log id of each durable append and each removal.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::commit_receipts::EarlyReceipts;
use crate::db::{
    self, CF_LOG, CF_LOG_META, Db, END_KEY, StoreError, decode_value, encode_value, get_value,
    index_key, key_index,
};
use crate::types::{Entry, LogId, NodeId, RaftStorageError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";

/// Reads of at most this many entries (what one apply or one replication message of a busy node
/// usually asks for) run on the calling thread; longer ones, as in a follower's catch-up, on the
/// blocking pool.
const INLINE_READ_ENTRIES: u64 = 4;
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log of one node. Cheap to clone: clones share the database (and serve as the log
/// reader handed to replication tasks).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
    early: Option<Arc<EarlyReceipts>>,
}

impl LogStore {
    /// A log store on `db`.
    pub fn new(db: Db) -> LogStore {
        LogStore { db, early: None }
    }

    /// A log store on `db` that tells `early` about appends, removals and commits.
    pub fn with_early_receipts(db: Db, early: Arc<EarlyReceipts>) -> LogStore {
        LogStore {
            db,
            early: Some(early),
        }
    }

    fn removed(&self, from: u64, to: Option<u64>) {
        if let Some(early) = &self.early {
            early.removed(from, to);
        }
    }
}

fn read_err(e: StoreError) -> RaftStorageError {
    e.into_raft(ErrorSubject::Logs, ErrorVerb::Read)
}

fn write_err(e: StoreError) -> RaftStorageError {
    e.into_raft(ErrorSubject::Logs, ErrorVerb::Write)
}

/// Entries with `start <= index < end` (`end == None`: to the last), checked against their keys.
fn read_entries(db: &rocksdb::DB, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StoreError> {
    let cf = db::cf(db, CF_LOG)?;
    let from = index_key(start);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)) {
        let (key, value) = item?;
        let index = key_index("log key", &key)?;
        if end.is_some_and(|end| index >= end) {
            break;
        }
        out.push(decode_entry(index, &value)?);
    }
    Ok(out)
}

fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, StoreError> {
    let entry: Entry = decode_value("log entry", value)?;
    if entry.log_id.index != index {
        return Err(StoreError::corrupt(
            "log entry",
            format!("stored under index {index} but says {}", entry.log_id.index),
        ));
    }
    Ok(entry)
}

fn last_entry(db: &rocksdb::DB) -> Result<Option<Entry>, StoreError> {
    let cf = db::cf(db, CF_LOG)?;
    match db.iterator_cf(cf, IteratorMode::End).next() {
        Some(item) => {
            let (key, value) = item?;
            decode_entry(key_index("log key", &key)?, &value).map(Some)
        }
        None => Ok(None),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // `None` means no upper bound (an inclusive `u64::MAX` cannot be made exclusive).
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        if end.is_some_and(|end| end - start <= INLINE_READ_ENTRIES) {
            return self
                .db
                .with(|db| read_entries(db, start, end))
                .map_err(read_err);
        }
        self.db
            .run(move |db| read_entries(db, start, end))
            .await
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let (last_purged, last) = self
            .db
            .run(|db| {
                let purged: Option<LogId> =
                    get_value(db, CF_LOG_META, KEY_LAST_PURGED, "last purged log id")?;
                Ok((purged, last_entry(db)?.map(|e| e.log_id)))
            })
            .await
            .map_err(read_err)?;
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        // Readers read; only this store reports appends and commits.
        LogStore::new(self.db.clone())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        if let (Some(early), Some(committed)) = (&self.early, committed) {
            early.committed(&committed);
        }
        Ok(())
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        let value = encode_value("vote", vote)
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.db
            .run_synced(move |db| {
                Ok(db.put_cf_opt(db::cf(db, CF_LOG_META)?, KEY_VOTE, value, &db::synced())?)
            })
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        self.db
            .run(|db| get_value(db, CF_LOG_META, KEY_VOTE, "vote"))
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let early = self.early.clone();
        let written = self
            .db
            .run_synced(move |db| {
                let cf = db::cf(db, CF_LOG)?;
                let mut batch = WriteBatch::default();
                for entry in &entries {
                    batch.put_cf(
                        cf,
                        index_key(entry.log_id.index),
                        encode_value("log entry", entry)?,
                    );
                }
                // One batch, one fsync: the whole append is durable or none of it is.
                db.write_opt(batch, &db::synced())?;
                if let Some(early) = early {
                    early.appended(&entries);
                }
                Ok(())
            })
            .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.removed(log_id.index, None);
        self.db
            .run_synced(move |db| {
                let mut batch = WriteBatch::default();
                batch.delete_range_cf(
                    db::cf(db, CF_LOG)?,
                    index_key(log_id.index).to_vec(),
                    END_KEY.to_vec(),
                );
                Ok(db.write_opt(batch, &db::synced())?)
            })
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let marker = encode_value("last purged log id", &log_id).map_err(write_err)?;
        self.removed(0, Some(log_id.index));
        self.db
            .run_synced(move |db| {
                let end = match log_id.index.checked_add(1) {
                    Some(next) => index_key(next).to_vec(),
                    None => END_KEY.to_vec(),
                };
                // The marker and the deletion land together, so the log state never shows a hole.
                let mut batch = WriteBatch::default();
                batch.put_cf(db::cf(db, CF_LOG_META)?, KEY_LAST_PURGED, marker);
                batch.delete_range_cf(db::cf(db, CF_LOG)?, index_key(0).to_vec(), end);
                Ok(db.write_opt(batch, &db::synced())?)
            })
            .await
            .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;

    use super::*;

    #[tokio::test]
    async fn a_damaged_entry_is_a_storage_error_not_a_panic()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let mut store = LogStore::new(db.clone());
        let blank = Entry::new_blank(log_id(1, 1, 3));
        let value = encode_value("log entry", &blank)?;
        db.with(|db| {
            let cf = db::cf(db, CF_LOG)?;
            db.put_cf(cf, index_key(3), &value)?;
            // Right bytes under the wrong index: moved on disk.
            db.put_cf(cf, index_key(4), &value)?;
            db.put_cf(cf, index_key(5), [9u8, 1, 2])?;
            Ok(())
        })?;
        assert_eq!(store.try_get_log_entries(3..4).await?.len(), 1);
        assert!(store.try_get_log_entries(3..5).await.is_err());
        let err = store
            .try_get_log_entries(5..6)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("unknown format version 9")),
            "typed"
        );
        Ok(())
    }
}
