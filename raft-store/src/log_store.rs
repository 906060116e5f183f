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
//!   it on to [`EarlyReceipts`], with the log id of each durable append and each removal;
//! - the last entries appended are also kept in memory ([`RecentEntries`]), once durable, and
//!   reads of a range they hold are served from there: the leader reads each new entry back
//!   once for its apply and once per follower to replicate it, and a follower once for its apply.
//!   Truncation and purge remove entries from memory before they are removed from disk, so a
//!   read never sees an entry the log no longer holds that it would not also have read from disk.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::commit_receipts::EarlyReceipts;
use crate::db::{
    self, CF_LOG, CF_LOG_META, Db, END_KEY, StoreError, decode_value, encode_value, get_value,
    index_key, key_index,
};
use crate::types::{Entry, LogId, NodeId, RaftStorageError, Request, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";

/// Reads of at most this many entries (what one apply or one replication message of a busy node
/// usually asks for) run on the calling thread; longer ones, as in a follower's catch-up, on the
/// blocking pool.
const INLINE_READ_ENTRIES: u64 = 4;
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// How many of the last appended entries, and of the records in them, are kept in memory: with
/// up to a few hundred records per entry under load, a few hundred entries cover what replication
/// and the apply read back within moments of the append (a few MiB); older ones are read from
/// disk.
const RECENT_ENTRIES: usize = 256;
const RECENT_RECORDS: usize = 16_384;

/// The last durable entries of the log, contiguous and in index order (a clone of an entry
/// shares its records).
#[derive(Debug, Default)]
struct RecentEntries {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    entries: VecDeque<Entry>,
    records: usize,
}

fn records_in(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(Request::Append { records }) => records.len(),
        _ => 0,
    }
}

impl Held {
    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.records -= records_in(&e);
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.records -= records_in(&e);
        }
    }
}

impl RecentEntries {
    fn held(&self) -> MutexGuard<'_, Held> {
        // Poisoned only by a panic between plain assignments: the queue is still whole.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `entries` are durable: keep them, after dropping any held entry they replace (same
    /// index or later) and everything before a gap.
    fn appended(&self, entries: &[Entry]) {
        let mut held = self.held();
        for entry in entries {
            let index = entry.log_id.index;
            while held.entries.back().is_some_and(|b| b.log_id.index >= index) {
                held.pop_back();
            }
            if held
                .entries
                .back()
                .is_some_and(|b| b.log_id.index + 1 != index)
            {
                *held = Held::default();
            }
            held.records += records_in(entry);
            held.entries.push_back(entry.clone());
        }
        while held.entries.len() > RECENT_ENTRIES
            || (held.records > RECENT_RECORDS && held.entries.len() > 1)
        {
            held.pop_front();
        }
    }

    /// Forget the entries from index `from` on (a truncation).
    fn truncated(&self, from: u64) {
        let mut held = self.held();
        while held.entries.back().is_some_and(|b| b.log_id.index >= from) {
            held.pop_back();
        }
    }

    /// Forget the entries up to and including index `upto` (a purge).
    fn purged(&self, upto: u64) {
        let mut held = self.held();
        while held.entries.front().is_some_and(|f| f.log_id.index <= upto) {
            held.pop_front();
        }
    }

    /// Entries `start <= index < end`, if every one of them is held.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let held = self.held();
        let first = held.entries.front()?.log_id.index;
        let last = held.entries.back()?.log_id.index;
        if start < first || end > last.checked_add(1)? {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        Some(held.entries.range(from..to).cloned().collect())
    }
}

/// The Raft log of one node. Cheap to clone: clones share the database (and serve as the log
/// reader handed to replication tasks).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
    early: Option<Arc<EarlyReceipts>>,
    recent: Arc<RecentEntries>,
}

impl LogStore {
    /// A log store on `db`.
    pub fn new(db: Db) -> LogStore {
        LogStore {
            db,
            early: None,
            recent: Arc::default(),
        }
    }

    /// A log store on `db` that tells `early` about appends, removals and commits.
    pub fn with_early_receipts(db: Db, early: Arc<EarlyReceipts>) -> LogStore {
        LogStore {
            db,
            early: Some(early),
            recent: Arc::default(),
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
        if let Some(held) = end.and_then(|end| self.recent.get(start, end)) {
            return Ok(held);
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
        // Readers read (sharing the recent entries); only this store reports appends and commits.
        LogStore {
            db: self.db.clone(),
            early: None,
            recent: self.recent.clone(),
        }
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
        let recent = self.recent.clone();
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
                recent.appended(&entries);
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
        self.recent.truncated(log_id.index);
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
        self.recent.purged(log_id.index);
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

    fn entries(term: u64, indices: std::ops::Range<u64>) -> Vec<Entry> {
        indices
            .map(|i| Entry::new_blank(log_id(term, 1, i)))
            .collect()
    }

    fn ids(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|e| {
            e.iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect()
        })
    }

    #[test]
    fn recent_entries_hold_only_what_the_log_holds() {
        let recent = RecentEntries::default();
        assert_eq!(recent.get(1, 2).map(|e| e.len()), None, "nothing held yet");
        recent.appended(&entries(1, 1..6));
        assert_eq!(ids(recent.get(2, 4)), Some(vec![(1, 2), (1, 3)]));
        assert_eq!(
            recent.get(4, 7).map(|e| e.len()),
            None,
            "past the last entry"
        );
        assert_eq!(
            recent.get(0, 2).map(|e| e.len()),
            None,
            "before the first entry"
        );
        // A new leader's entries replace those from index 4 on.
        recent.appended(&entries(2, 4..5));
        assert_eq!(ids(recent.get(3, 5)), Some(vec![(1, 3), (2, 4)]));
        assert_eq!(
            recent.get(5, 6).map(|e| e.len()),
            None,
            "replaced, not kept"
        );
        recent.truncated(3);
        assert_eq!(recent.get(3, 4).map(|e| e.len()), None, "truncated");
        assert_eq!(ids(recent.get(1, 3)), Some(vec![(1, 1), (1, 2)]));
        recent.purged(1);
        assert_eq!(recent.get(1, 2).map(|e| e.len()), None, "purged");
        assert_eq!(ids(recent.get(2, 3)), Some(vec![(1, 2)]));
        // After a gap only the new entries are held, so a range never skips an index.
        recent.appended(&entries(3, 9..11));
        assert_eq!(recent.get(2, 3).map(|e| e.len()), None);
        assert_eq!(ids(recent.get(9, 11)), Some(vec![(3, 9), (3, 10)]));
        // Bounded: the oldest go first.
        let many = u64::try_from(RECENT_ENTRIES).unwrap_or(u64::MAX) + 20;
        recent.appended(&entries(3, 11..11 + many));
        assert_eq!(recent.get(9, 11).map(|e| e.len()), None);
        assert_eq!(recent.held().entries.len(), RECENT_ENTRIES);
        assert_eq!(
            recent.get(11 + many - 2, 11 + many).map(|e| e.len()),
            Some(2)
        );
    }

    #[tokio::test]
    async fn a_truncated_entry_is_not_read_back_from_memory()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let mut store = LogStore::new(db.clone());
        let mut reader = store.get_log_reader().await;
        let appended = |store: &LogStore, entries: Vec<Entry>| {
            // What `append` keeps once the write is durable.
            let (db, recent) = (store.db.clone(), store.recent.clone());
            db.with(|db| {
                let cf = db::cf(db, CF_LOG)?;
                for e in &entries {
                    db.put_cf(cf, index_key(e.log_id.index), encode_value("log entry", e)?)?;
                }
                recent.appended(&entries);
                Ok(())
            })
        };
        appended(&store, entries(1, 1..6))?;
        let read = reader.try_get_log_entries(1..6).await?;
        assert_eq!(read.len(), 5);
        store.truncate(log_id(1, 1, 3)).await?;
        assert!(reader.try_get_log_entries(3..4).await?.is_empty());
        appended(&store, entries(2, 3..4))?;
        let read = reader.try_get_log_entries(2..4).await?;
        assert_eq!(
            read.iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect::<Vec<_>>(),
            vec![(1, 2), (2, 3)]
        );
        Ok(())
    }
}
