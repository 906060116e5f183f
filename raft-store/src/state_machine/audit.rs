//! The audit index in RocksDB: staged in the apply's write batch (and in an install's), built
//! for records applied before the index existed, checked against the records by the integrity
//! check, and read by audit queries. The fields and the query semantics are in
//! [`crate::audit`]; the key layout in [`crate::db`].

use qianlian_verifier::leaf_hash;
use rocksdb::{
    ColumnFamily, DB, DBRawIteratorWithThreadMode, Direction, IteratorMode, ReadOptions, WriteBatch,
};
use sha2::{Digest, Sha256};

use super::integrity::IntegrityError;
use super::{ConfigPointer, KEY_AUDIT_INDEXED, RangeError, ReadError};
use crate::audit::{
    self, AuditCursor, AuditHit, AuditOrder, AuditPage, AuditQuery, DIGEST_LEN, MAX_PAGE,
};
use crate::db::{
    self, AUDIT_KEY_LEN, CF_AUDIT, CF_RECORDS, CF_SM_META, StoreError, audit_key,
    audit_key_position, encode_value, generation_prefix, get_value, record_key, record_key_parts,
};
use crate::record::{ConfigKind, Record};

/// Records indexed per write when building the index of records applied before it existed.
const BUILD_BATCH_RECORDS: u64 = 20_000;

/// The audit index keys of `record` at `log_index` in `generation`, without repeats.
fn keys(generation: u32, log_index: u64, record: &Record) -> Vec<[u8; AUDIT_KEY_LEN]> {
    let time = record.time_unix_ms();
    audit::terms(record)
        .into_iter()
        .map(|(tag, digest)| audit_key(generation, tag, &digest, time, log_index))
        .collect()
}

/// Stages the audit index entries of appended records into a write batch.
pub(super) struct AuditStager<'a> {
    cf: &'a ColumnFamily,
    generation: u32,
}

impl<'a> AuditStager<'a> {
    pub(super) fn new(db: &'a DB, generation: u32) -> Result<AuditStager<'a>, StoreError> {
        Ok(AuditStager {
            cf: db::cf(db, CF_AUDIT)?,
            generation,
        })
    }

    /// Add the entries of `record`, appended at `log_index`, to `keys`, for [`Self::stage_sorted`].
    pub(super) fn collect(
        &self,
        keys_out: &mut Vec<[u8; AUDIT_KEY_LEN]>,
        log_index: u64,
        record: &Record,
    ) {
        keys_out.extend(keys(self.generation, log_index, record));
    }

    /// Stage `keys` in key order. A memtable insert starts from where the previous one ended,
    /// so entries that follow each other in key order (a batch's entries of one posting list)
    /// cost a few comparisons instead of a search from the top of the skip list each.
    pub(super) fn stage_sorted(&self, batch: &mut WriteBatch, keys: &mut [[u8; AUDIT_KEY_LEN]]) {
        keys.sort_unstable();
        for key in keys.iter() {
            batch.put_cf(self.cf, key, []);
        }
    }

    /// Stage the entries of `record`, appended at `log_index`.
    pub(super) fn stage(&self, batch: &mut WriteBatch, log_index: u64, record: &Record) {
        for key in keys(self.generation, log_index, record) {
            batch.put_cf(self.cf, key, []);
        }
    }
}

/// The tree size the audit index covers (`sm_meta/audit_indexed`); 0 on a database written
/// before the index existed.
fn indexed(db: &DB) -> Result<u64, StoreError> {
    Ok(get_value(db, CF_SM_META, KEY_AUDIT_INDEXED, "audit index size")?.unwrap_or(0))
}

/// Index the records of `generation` from `sm_meta/audit_indexed` up to `tree_size`, in
/// batches that each move the marker along, so an interrupted build resumes where it stopped.
/// Returns the number of records indexed.
pub(super) fn build_missing(db: &DB, generation: u32, tree_size: u64) -> Result<u64, StoreError> {
    let from = indexed(db)?;
    if from >= tree_size {
        return Ok(0);
    }
    tracing::info!(from, tree_size, "building the audit index");
    let stager = AuditStager::new(db, generation)?;
    let meta = db::cf(db, CF_SM_META)?;
    let iter = db.iterator_cf_opt(
        db::cf(db, CF_RECORDS)?,
        db::scan_options(),
        IteratorMode::From(&record_key(generation, from), Direction::Forward),
    );
    let mut batch = WriteBatch::default();
    let mut next = from;
    for item in iter {
        if next >= tree_size {
            break;
        }
        let (key, bytes) = item?;
        if record_key_parts(&key)? != (generation, next) {
            return Err(StoreError::corrupt(
                format!("record {next}"),
                "missing below the tree size",
            ));
        }
        let record =
            Record::decode(&bytes).map_err(|e| StoreError::corrupt(format!("record {next}"), e))?;
        stager.stage(&mut batch, next, &record);
        next += 1;
        if (next - from).is_multiple_of(BUILD_BATCH_RECORDS) || next == tree_size {
            batch.put_cf(
                meta,
                KEY_AUDIT_INDEXED,
                encode_value("audit index size", &next)?,
            );
            db.write_opt(std::mem::take(&mut batch), &db::unsynced())?;
        }
    }
    if next != tree_size {
        return Err(StoreError::corrupt(
            format!("record {next}"),
            "missing below the tree size",
        ));
    }
    tracing::info!(records = next - from, "audit index built");
    Ok(next - from)
}

/// Checks that the stored audit index is exactly what the records give, in one pass and O(1)
/// memory: an order-independent digest (a wrapping sum of the SHA-256 of every key) of the
/// keys the records give, compared with the same over the keys stored.
#[derive(Debug, Default)]
pub(super) struct AuditCheck {
    expected: KeySum,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct KeySum {
    sum: [u64; 4],
    count: u64,
}

impl KeySum {
    fn add(&mut self, key: &[u8]) {
        let hash = Sha256::digest(key);
        for (lane, chunk) in self.sum.iter_mut().zip(hash.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *lane = lane.wrapping_add(u64::from_be_bytes(b));
        }
        self.count += 1;
    }
}

impl AuditCheck {
    /// Account for the entries of `record`, stored at `log_index`.
    pub(super) fn record(&mut self, generation: u32, log_index: u64, record: &Record) {
        for key in keys(generation, log_index, record) {
            self.expected.add(&key);
        }
    }

    /// The stored entries of `generation` must be exactly the ones accounted for.
    pub(super) fn finish(self, db: &DB, generation: u32) -> Result<(), IntegrityError> {
        let prefix = generation_prefix(generation);
        let iter = db.iterator_cf_opt(
            db::cf(db, CF_AUDIT)?,
            db::scan_options(),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut stored = KeySum::default();
        for item in iter {
            let (key, value) = item.map_err(|e| IntegrityError::Damaged {
                first_bad_index: None,
                detail: format!("RocksDB reported damage while reading the audit index ({e})"),
            })?;
            if !key.starts_with(&prefix) {
                break;
            }
            if !value.is_empty() {
                return Err(IntegrityError::AuditIndex {
                    expected_entries: self.expected.count,
                    stored_entries: stored.count + 1,
                });
            }
            stored.add(&key);
        }
        if stored != self.expected {
            return Err(IntegrityError::AuditIndex {
                expected_entries: self.expected.count,
                stored_entries: stored.count,
            });
        }
        Ok(())
    }
}

/// The `(time, log index)` position as one number in key order.
fn position(time_unix_ms: u64, log_index: u64) -> u128 {
    (u128::from(time_unix_ms) << 64) | u128::from(log_index)
}

fn position_parts(position: u128) -> (u64, u64) {
    ((position >> 64) as u64, position as u64)
}

/// One posting list, read within the query's `[lo, hi]` positions.
struct Posting<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    prefix: [u8; 4 + 1 + DIGEST_LEN],
}

impl<'a> Posting<'a> {
    fn open(
        db: &'a DB,
        generation: u32,
        (tag, digest): (u8, [u8; DIGEST_LEN]),
        lo: u128,
        hi: u128,
    ) -> Result<Posting<'a>, StoreError> {
        let mut prefix = [0u8; 4 + 1 + DIGEST_LEN];
        prefix[..4].copy_from_slice(&generation_prefix(generation));
        prefix[4] = tag;
        prefix[5..].copy_from_slice(&digest);
        let (lo_time, lo_index) = position_parts(lo);
        let (hi_time, hi_index) = position_parts(hi);
        let lower = audit_key(generation, tag, &digest, lo_time, lo_index).to_vec();
        // Exclusive: one byte longer than the largest key wanted, so that key is inside.
        let mut upper = audit_key(generation, tag, &digest, hi_time, hi_index).to_vec();
        upper.push(0);
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        opts.set_iterate_upper_bound(upper);
        Ok(Posting {
            iter: db.raw_iterator_cf_opt(db::cf(db, CF_AUDIT)?, opts),
            prefix,
        })
    }

    fn key_at(&self, position: u128) -> Vec<u8> {
        let mut key = self.prefix.to_vec();
        key.extend_from_slice(&position.to_be_bytes());
        key
    }

    fn current(&self) -> Result<Option<u128>, StoreError> {
        self.iter.status()?;
        self.iter.key().map(audit_key_position).transpose()
    }

    /// The first entry at or after `target`; `None` past the end.
    fn seek_ge(&mut self, target: u128, examined: &mut u64) -> Result<Option<u128>, StoreError> {
        if self.iter.valid() {
            if let Some(at) = self.current()?.filter(|at| *at >= target) {
                return Ok(Some(at));
            }
            // Usually the next entry: try it before seeking.
            self.iter.next();
            *examined += 1;
            match self.current()? {
                Some(at) if at >= target => return Ok(Some(at)),
                None => return Ok(None),
                Some(_) => {}
            }
        }
        self.iter.seek(self.key_at(target));
        *examined += 1;
        self.current()
    }

    /// The last entry at or before `target`; `None` past the start.
    fn seek_le(&mut self, target: u128, examined: &mut u64) -> Result<Option<u128>, StoreError> {
        if self.iter.valid() {
            if let Some(at) = self.current()?.filter(|at| *at <= target) {
                return Ok(Some(at));
            }
            self.iter.prev();
            *examined += 1;
            match self.current()? {
                Some(at) if at <= target => return Ok(Some(at)),
                None => return Ok(None),
                Some(_) => {}
            }
        }
        self.iter.seek_for_prev(self.key_at(target));
        *examined += 1;
        self.current()
    }
}

/// Leapfrog join: the first position from `target` on (in `ascending` order or against it) that
/// every posting list holds; `None` when one of them runs out.
fn join(
    postings: &mut [Posting<'_>],
    mut target: u128,
    ascending: bool,
    examined: &mut u64,
) -> Result<Option<u128>, StoreError> {
    let n = postings.len();
    let mut agreed = 0;
    let mut i = 0;
    while agreed < n {
        let posting = &mut postings[i];
        let found = if ascending {
            posting.seek_ge(target, examined)?
        } else {
            posting.seek_le(target, examined)?
        };
        let Some(at) = found else { return Ok(None) };
        if at == target {
            agreed += 1;
        } else {
            target = at;
            agreed = 1;
        }
        i = (i + 1) % n;
    }
    Ok(Some(target))
}

/// The record at `log_index`, which the index lists at time `time_unix_ms`.
fn candidate(
    db: &DB,
    records: &ColumnFamily,
    generation: u32,
    log_index: u64,
    time_unix_ms: u64,
) -> Result<(Vec<u8>, Record), StoreError> {
    let what = || format!("record {log_index}");
    let bytes = db
        .get_cf(records, record_key(generation, log_index))?
        .ok_or_else(|| StoreError::corrupt(what(), "in the audit index but not stored"))?;
    let record = Record::decode(&bytes).map_err(|e| StoreError::corrupt(what(), e))?;
    if record.time_unix_ms() != time_unix_ms {
        return Err(StoreError::corrupt(
            format!("audit index entry of record {log_index}"),
            format!(
                "lists time {time_unix_ms} but the record says {}",
                record.time_unix_ms()
            ),
        ));
    }
    Ok((bytes, record))
}

/// Answer `q` from the audit index of `generation`, whose applied tree size is `size`.
pub(super) fn query(
    db: &DB,
    generation: u32,
    size: u64,
    q: &AuditQuery,
) -> Result<AuditPage, ReadError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let bound = match q.after {
        Some(cursor) if cursor.tree_size > size => {
            return Err(RangeError::TreeSize {
                size: cursor.tree_size,
                applied: size,
            }
            .into());
        }
        Some(cursor) => cursor.tree_size,
        None => size,
    };
    let ascending = q.order == AuditOrder::OldestFirst;
    let empty = AuditPage {
        hits: Vec::new(),
        next: None,
        tree_size: bound,
        examined: 0,
    };
    // Inclusive positions.
    let mut lo = position(q.since_unix_ms.unwrap_or(0), 0);
    let mut hi = match q.until_unix_ms {
        Some(0) => return Ok(empty),
        Some(until) => position(until, 0) - 1,
        None => u128::MAX,
    };
    if let Some(c) = q.after {
        let at = position(c.time_unix_ms, c.log_index);
        if ascending {
            let Some(after) = at.checked_add(1) else {
                return Ok(empty);
            };
            lo = lo.max(after);
        } else {
            let Some(before) = at.checked_sub(1) else {
                return Ok(empty);
            };
            hi = hi.min(before);
        }
    }
    if lo > hi || bound == 0 {
        return Ok(empty);
    }

    let mut postings = Vec::with_capacity(q.filters.len().max(1));
    if q.filters.is_empty() {
        let all = (
            audit::field::ALL,
            audit::value_digest(audit::field::ALL, b""),
        );
        postings.push(Posting::open(db, generation, all, lo, hi)?);
    }
    for filter in &q.filters {
        postings.push(Posting::open(db, generation, filter.term(), lo, hi)?);
    }
    let records = db::cf(db, CF_RECORDS)?;
    let mut hits = Vec::new();
    let mut more = false;
    let mut examined = 0u64;
    let mut target = if ascending { lo } else { hi };
    while let Some(found) = join(&mut postings, target, ascending, &mut examined)? {
        let (time, log_index) = position_parts(found);
        // Entries at or beyond the bound are appended after the first page (or not yet
        // published): not answers of this paging.
        if log_index < bound {
            let (bytes, record) = candidate(db, records, generation, log_index, time)?;
            if q.matches(&record) {
                if hits.len() == limit {
                    more = true;
                    break;
                }
                hits.push(AuditHit {
                    log_index,
                    record_hash: leaf_hash(&bytes),
                    bytes,
                    record,
                });
            }
        }
        let step = if ascending {
            found.checked_add(1).filter(|t| *t <= hi)
        } else {
            found.checked_sub(1).filter(|t| *t >= lo)
        };
        match step {
            Some(t) => target = t,
            None => break,
        }
    }
    let next = match hits.last() {
        Some(last) if more => Some(AuditCursor {
            tree_size: bound,
            time_unix_ms: last.record.time_unix_ms(),
            log_index: last.log_index,
        }),
        _ => None,
    };
    Ok(AuditPage {
        hits,
        next,
        tree_size: bound,
        examined,
    })
}

/// Every config record of `kind` among the first `size` records of `generation`, in log
/// index order, with its version.
pub(super) fn config_history(
    db: &DB,
    generation: u32,
    size: u64,
    kind: ConfigKind,
) -> Result<Vec<ConfigPointer>, StoreError> {
    let (tag, digest) = audit::config_term(kind);
    let mut posting = Posting::open(db, generation, (tag, digest), 0, u128::MAX)?;
    let mut indices = Vec::new();
    let mut examined = 0;
    let mut at = posting.seek_ge(0, &mut examined)?;
    while let Some(found) = at {
        let (_, log_index) = position_parts(found);
        if log_index < size {
            indices.push((log_index, position_parts(found).0));
        }
        posting.iter.next();
        at = posting.current()?;
    }
    // Listed by time; versions count in log order.
    indices.sort_unstable();
    let records = db::cf(db, CF_RECORDS)?;
    let mut history = Vec::with_capacity(indices.len());
    for (log_index, time) in indices {
        let (_, record) = candidate(db, records, generation, log_index, time)?;
        match record {
            Record::Config(c) if c.change.kind() == kind => {}
            _ => {
                return Err(StoreError::corrupt(
                    format!("audit index entry of record {log_index}"),
                    format!("lists a {} record, but it is not one", kind.as_str()),
                ));
            }
        }
        history.push(ConfigPointer {
            log_index,
            version: history.len() as u64 + 1,
        });
    }
    Ok(history)
}

/// The canonical bytes of records `start..min(start + max, size)` of `generation`, with one
/// iterator.
pub(crate) fn entries(
    db: &DB,
    generation: u32,
    size: u64,
    start: u64,
    max: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let end = start.saturating_add(max as u64).min(size);
    if start >= end {
        return Ok(Vec::new());
    }
    let iter = db.iterator_cf_opt(
        db::cf(db, CF_RECORDS)?,
        db::scan_options(),
        IteratorMode::From(&record_key(generation, start), Direction::Forward),
    );
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut next = start;
    for item in iter {
        if next >= end {
            break;
        }
        let (key, bytes) = item?;
        if record_key_parts(&key)? != (generation, next) {
            break;
        }
        out.push(bytes.into_vec());
        next += 1;
    }
    if next != end {
        return Err(StoreError::corrupt(
            format!("record {next}"),
            "missing below the tree size",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
