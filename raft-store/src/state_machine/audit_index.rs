//! The audit index in RocksDB: staged in the apply's write batch (and in an install's), built
//! for records applied before the index existed, checked against the records by the integrity
//! check, and read by audit queries. The fields and the query semantics are in
//! [`crate::audit_query`]; the key layout in [`crate::db`].

use qianlian_verifier::leaf_hash;
use rocksdb::{
    ColumnFamily, DB, DBRawIteratorWithThreadMode, Direction, IteratorMode, ReadOptions, WriteBatch,
};
use sha2::{Digest, Sha256};

use super::error::{IntegrityError, RangeError, ReadError};
use super::meta::{ConfigPointer, KEY_AUDIT_INDEXED, KEY_AUDIT_LAYOUT, layout_is_current};
use crate::audit_query::{
    self, AuditCursor, AuditHit, AuditOrder, AuditPage, AuditQuery, DIGEST_LEN, MAX_PAGE,
};
use crate::db::{
    self, AUDIT_KEY_LEN, AUDIT_POSITION_LEN, CF_AUDIT, CF_RECORDS, CF_SM_META, END_KEY, StoreError,
    audit_bucket, audit_key, audit_key_parts, audit_position, audit_positions,
    encode_audit_positions, encode_value, generation_prefix, get_value, record_key,
    record_key_parts,
};
use crate::record::{ConfigKind, Record};

/// Records indexed per write when building the index of records applied before it existed.
const BUILD_BATCH_RECORDS: u64 = 20_000;

/// The audit index layout this version writes (`sm_meta/audit_layout`): posting lists cut into
/// time buckets, written in chunks. Layout 1 (one key per entry, no marker) is rebuilt on open.
const AUDIT_LAYOUT: u32 = 2;

/// One posting list.
type Term = (u8, [u8; DIGEST_LEN]);

/// The `(time, log index)` position as one number in key order.
fn position(time_unix_ms: u64, log_index: u64) -> u128 {
    (u128::from(time_unix_ms) << 64) | u128::from(log_index)
}

fn position_parts(position: u128) -> (u64, u64) {
    ((position >> 64) as u64, position as u64)
}

fn bucket_of(position: u128) -> u64 {
    audit_bucket(position_parts(position).0)
}

/// Collects the audit index entries of appended records and stages them into a write batch:
/// one chunk per posting list and time bucket, whatever the number of records in it.
pub(super) struct AuditStager<'a> {
    cf: &'a ColumnFamily,
    pending: Vec<(Term, u128)>,
}

impl<'a> AuditStager<'a> {
    pub(super) fn new(db: &'a DB) -> Result<AuditStager<'a>, StoreError> {
        Ok(AuditStager {
            cf: db::cf(db, CF_AUDIT)?,
            pending: Vec::new(),
        })
    }

    /// Add the entries of `record`, appended at `log_index`, for [`Self::stage`].
    pub(super) fn collect(&mut self, log_index: u64, record: &Record) {
        let at = position(record.time_unix_ms(), log_index);
        self.pending.extend(
            audit_query::terms(record)
                .into_iter()
                .map(|term| (term, at)),
        );
    }

    /// Stage the entries collected so far into `batch`, as chunks of `generation`.
    pub(super) fn stage(&mut self, batch: &mut WriteBatch, generation: u32) {
        self.pending.sort_unstable();
        let mut rest = &self.pending[..];
        while let Some(&((tag, digest), first)) = rest.first() {
            let bucket = bucket_of(first);
            let len = rest
                .iter()
                .take_while(|(term, at)| *term == (tag, digest) && bucket_of(*at) == bucket)
                .count();
            let (chunk, tail) = rest.split_at(len);
            // Log indices are never reused: no other chunk has this one's smallest.
            let smallest = chunk
                .iter()
                .map(|(_, at)| position_parts(*at).1)
                .min()
                .unwrap_or_default();
            batch.put_cf(
                self.cf,
                audit_key(generation, tag, &digest, bucket, smallest),
                encode_audit_positions(chunk.iter().map(|(_, at)| *at)),
            );
            rest = tail;
        }
        self.pending.clear();
    }
}

/// The tree size the audit index covers (`sm_meta/audit_indexed`); 0 on a database written
/// before the index existed.
fn indexed(db: &DB) -> Result<u64, StoreError> {
    Ok(get_value(db, CF_SM_META, KEY_AUDIT_INDEXED, "audit index size")?.unwrap_or(0))
}

/// Drop an index written in an older layout, so that [`build_missing`] builds it anew; mark
/// the database as holding the current layout.
pub(super) fn upgrade_layout(db: &DB) -> Result<(), StoreError> {
    if layout_is_current(db, KEY_AUDIT_LAYOUT, AUDIT_LAYOUT, "audit index layout")? {
        return Ok(());
    }
    if indexed(db)? > 0 {
        tracing::info!("the audit index is in an older layout: rebuilding it");
    }
    let meta = db::cf(db, CF_SM_META)?;
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(db::cf(db, CF_AUDIT)?, &[][..], &END_KEY[..]);
    batch.put_cf(
        meta,
        KEY_AUDIT_INDEXED,
        encode_value("audit index size", &0u64)?,
    );
    batch.put_cf(
        meta,
        KEY_AUDIT_LAYOUT,
        encode_value("audit index layout", &AUDIT_LAYOUT)?,
    );
    db.write_opt(batch, &db::synced())?;
    Ok(())
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
    let mut stager = AuditStager::new(db)?;
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
        stager.collect(next, &record);
        next += 1;
        if (next - from).is_multiple_of(BUILD_BATCH_RECORDS) || next == tree_size {
            stager.stage(&mut batch, generation);
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
/// memory: an order-independent digest (a wrapping sum of the SHA-256 of every entry: posting
/// list and position) of the entries the records give, compared with the same over the
/// entries stored. Every stored position must also lie in its key's bucket, in order.
#[derive(Debug, Default)]
pub(super) struct AuditCheck {
    expected: EntrySum,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct EntrySum {
    sum: [u64; 4],
    count: u64,
}

impl EntrySum {
    fn add(&mut self, (tag, digest): Term, at: u128) {
        let hash = Sha256::new()
            .chain_update([tag])
            .chain_update(digest)
            .chain_update(at.to_be_bytes())
            .finalize();
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
    pub(super) fn record(&mut self, log_index: u64, record: &Record) {
        let at = position(record.time_unix_ms(), log_index);
        for term in audit_query::terms(record) {
            self.expected.add(term, at);
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
        let mut stored = EntrySum::default();
        let mismatch = |stored: &EntrySum| IntegrityError::AuditIndex {
            expected_entries: self.expected.count,
            stored_entries: stored.count,
        };
        for item in iter {
            let (key, value) = item.map_err(|e| IntegrityError::Damaged {
                first_bad_index: None,
                detail: format!("RocksDB reported damage while reading the audit index ({e})"),
            })?;
            if !key.starts_with(&prefix) {
                break;
            }
            if key.len() != AUDIT_KEY_LEN {
                return Err(mismatch(&stored));
            }
            let (bucket, smallest) = audit_key_parts(&key)?;
            let mut digest = [0u8; DIGEST_LEN];
            digest.copy_from_slice(&key[5..21]);
            let term = (key[4], digest);
            let raw = audit_positions(&value).ok_or_else(|| mismatch(&stored))?;
            let mut last = None;
            let mut least = u64::MAX;
            for i in 0..raw.len() / AUDIT_POSITION_LEN {
                let at = audit_position(raw, i);
                if bucket_of(at) != bucket || last.is_some_and(|l| l >= at) {
                    return Err(mismatch(&stored));
                }
                last = Some(at);
                least = least.min(position_parts(at).1);
                stored.add(term, at);
            }
            // An empty chunk, or one under another's key.
            if last.is_none() || least != smallest {
                return Err(mismatch(&stored));
            }
        }
        if stored != self.expected {
            return Err(mismatch(&stored));
        }
        Ok(())
    }
}

/// One bucket of a posting list, read (all its chunks), and the buckets it answers for: every
/// bucket in `span` (inclusive) but this one is empty. `positions` is `None` when no bucket is
/// left in the direction read.
struct Loaded {
    span: (u64, u64),
    bucket: u64,
    positions: Option<Vec<u128>>,
}

/// One posting list, read within the query's `[lo, hi]` positions. Its iterator stays at the
/// first chunk of the bucket after the loaded one (before it, read backwards).
struct Posting<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    generation: u32,
    term: Term,
    lo: u128,
    hi: u128,
    loaded: Option<Loaded>,
}

impl<'a> Posting<'a> {
    fn open(
        db: &'a DB,
        generation: u32,
        term: Term,
        lo: u128,
        hi: u128,
    ) -> Result<Posting<'a>, StoreError> {
        let (tag, digest) = term;
        let lower = audit_key(generation, tag, &digest, bucket_of(lo), 0).to_vec();
        // Exclusive: one byte longer than the last key wanted, so that key is inside.
        let mut upper = audit_key(generation, tag, &digest, bucket_of(hi), u64::MAX).to_vec();
        upper.push(0);
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        opts.set_iterate_upper_bound(upper);
        Ok(Posting {
            iter: db.raw_iterator_cf_opt(db::cf(db, CF_AUDIT)?, opts),
            generation,
            term,
            lo,
            hi,
            loaded: None,
        })
    }

    fn key(&self, bucket: u64, log_index: u64) -> [u8; AUDIT_KEY_LEN] {
        audit_key(
            self.generation,
            self.term.0,
            &self.term.1,
            bucket,
            log_index,
        )
    }

    /// Read every chunk of the bucket the iterator is at, moving on in the direction read: the
    /// first bucket at or after `asked` (`ascending`) or the last at or before it; none if the
    /// iterator is past the end.
    fn load(&mut self, asked: u64, ascending: bool, examined: &mut u64) -> Result<(), StoreError> {
        self.iter.status()?;
        let Some(key) = self.iter.key() else {
            let span = if ascending {
                (asked, u64::MAX)
            } else {
                (0, asked)
            };
            self.loaded = Some(Loaded {
                span,
                bucket: asked,
                positions: None,
            });
            return Ok(());
        };
        let (bucket, _) = audit_key_parts(key)?;
        let mut positions = Vec::new();
        while let Some(key) = self.iter.key() {
            if audit_key_parts(key)?.0 != bucket {
                break;
            }
            let value = self.iter.value().unwrap_or_default();
            let raw = audit_positions(value).ok_or_else(|| {
                StoreError::corrupt(
                    format!("audit index bucket {bucket}"),
                    format!("a chunk of {} bytes, not a list of positions", value.len()),
                )
            })?;
            positions.extend((0..raw.len() / AUDIT_POSITION_LEN).map(|i| audit_position(raw, i)));
            *examined += 1;
            if ascending {
                self.iter.next();
            } else {
                self.iter.prev();
            }
        }
        self.iter.status()?;
        // Sorted runs, one per chunk: the stable sort merges them in about linear time.
        positions.sort();
        self.loaded = Some(Loaded {
            span: (asked.min(bucket), asked.max(bucket)),
            bucket,
            positions: Some(positions),
        });
        Ok(())
    }

    fn covers(&self, bucket: u64) -> bool {
        self.loaded
            .as_ref()
            .is_some_and(|l| l.span.0 <= bucket && bucket <= l.span.1)
    }

    /// The first entry at or after `target`; `None` past the end.
    fn seek_ge(&mut self, target: u128, examined: &mut u64) -> Result<Option<u128>, StoreError> {
        let wanted = bucket_of(target);
        if !self.covers(wanted) {
            self.iter.seek(self.key(wanted, 0));
            self.load(wanted, true, examined)?;
        }
        loop {
            let Some(loaded) = &self.loaded else {
                return Ok(None);
            };
            let Some(positions) = &loaded.positions else {
                return Ok(None);
            };
            let i = positions.partition_point(|at| *at < target);
            if let Some(&at) = positions.get(i) {
                return Ok((at <= self.hi).then_some(at));
            }
            // Nothing from `target` on in this bucket: the next one's first entry.
            let Some(next) = loaded.bucket.checked_add(1) else {
                return Ok(None);
            };
            self.load(next, true, examined)?;
        }
    }

    /// The last entry at or before `target`; `None` past the start.
    fn seek_le(&mut self, target: u128, examined: &mut u64) -> Result<Option<u128>, StoreError> {
        let wanted = bucket_of(target);
        if !self.covers(wanted) {
            self.iter.seek_for_prev(self.key(wanted, u64::MAX));
            self.load(wanted, false, examined)?;
        }
        loop {
            let Some(loaded) = &self.loaded else {
                return Ok(None);
            };
            let Some(positions) = &loaded.positions else {
                return Ok(None);
            };
            let i = positions.partition_point(|at| *at <= target);
            if let Some(i) = i.checked_sub(1) {
                let at = positions[i];
                return Ok((at >= self.lo).then_some(at));
            }
            let Some(before) = loaded.bucket.checked_sub(1) else {
                return Ok(None);
            };
            self.load(before, false, examined)?;
        }
    }
}

/// What one filter reads: a posting list, or several whose union it is (a record in any).
enum List<'a> {
    One(Posting<'a>),
    Any(Vec<Posting<'a>>),
}

impl List<'_> {
    /// The first entry at or after `target` in the list (the union: the least of its
    /// members'); `None` past the end.
    fn seek_ge(&mut self, target: u128, examined: &mut u64) -> Result<Option<u128>, StoreError> {
        match self {
            List::One(p) => p.seek_ge(target, examined),
            List::Any(members) => {
                let mut first = None;
                for p in members {
                    if let Some(at) = p.seek_ge(target, examined)? {
                        first = Some(first.map_or(at, |f: u128| f.min(at)));
                    }
                }
                Ok(first)
            }
        }
    }

    /// The last entry at or before `target` (the union: the greatest of its members');
    /// `None` past the start.
    fn seek_le(&mut self, target: u128, examined: &mut u64) -> Result<Option<u128>, StoreError> {
        match self {
            List::One(p) => p.seek_le(target, examined),
            List::Any(members) => {
                let mut last = None;
                for p in members {
                    if let Some(at) = p.seek_le(target, examined)? {
                        last = Some(last.map_or(at, |l: u128| l.max(at)));
                    }
                }
                Ok(last)
            }
        }
    }
}

/// Leapfrog join: the first position from `target` on (in `ascending` order or against it) that
/// every list holds; `None` when one of them runs out.
fn join(
    postings: &mut [List<'_>],
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

/// What a query reads: the tree size its pages are bound to, and the inclusive range of
/// positions (time, log index) to walk; `None` when no position can match.
struct Window {
    bound: u64,
    positions: Option<(u128, u128)>,
}

/// The window of `q` on a tree of `size` records. [`RangeError::TreeSize`] for a cursor from a
/// larger tree.
fn window(q: &AuditQuery, size: u64) -> Result<Window, ReadError> {
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
    let empty = Window {
        bound,
        positions: None,
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
    Ok(Window {
        bound,
        positions: Some((lo, hi)),
    })
}

/// The lists `q` joins, each restricted to positions `lo..=hi`: one per filter, or the list of
/// every access record when there is none.
fn open_postings<'a>(
    db: &'a DB,
    generation: u32,
    q: &AuditQuery,
    lo: u128,
    hi: u128,
) -> Result<Vec<List<'a>>, StoreError> {
    let mut postings = Vec::with_capacity(q.filters.len().max(1));
    if q.filters.is_empty() {
        let all = (
            audit_query::field::ALL,
            audit_query::value_digest(audit_query::field::ALL, b""),
        );
        postings.push(List::One(Posting::open(db, generation, all, lo, hi)?));
    }
    for filter in &q.filters {
        let mut terms = filter.terms();
        let list = if terms.len() == 1 {
            List::One(Posting::open(db, generation, terms.remove(0), lo, hi)?)
        } else {
            List::Any(
                terms
                    .into_iter()
                    .map(|t| Posting::open(db, generation, t, lo, hi))
                    .collect::<Result<_, _>>()?,
            )
        };
        postings.push(list);
    }
    Ok(postings)
}

/// One page of a walk: the hits, whether more follow, and the index positions examined.
struct Walked {
    hits: Vec<AuditHit>,
    more: bool,
    examined: u64,
}

/// Walk the join of `postings` through `lo..=hi` from the end `q.order` starts at, keeping the
/// records below `bound` that match `q`, up to a page of them.
fn walk(
    db: &DB,
    generation: u32,
    postings: &mut [List<'_>],
    q: &AuditQuery,
    bound: u64,
    (lo, hi): (u128, u128),
) -> Result<Walked, StoreError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let ascending = q.order == AuditOrder::OldestFirst;
    let records = db::cf(db, CF_RECORDS)?;
    let mut hits = Vec::new();
    let mut more = false;
    let mut examined = 0u64;
    let mut target = if ascending { lo } else { hi };
    while let Some(found) = join(postings, target, ascending, &mut examined)? {
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
    Ok(Walked {
        hits,
        more,
        examined,
    })
}

/// Answer `q` from the audit index of `generation`, whose applied tree size is `size`.
pub(super) fn query(
    db: &DB,
    generation: u32,
    size: u64,
    q: &AuditQuery,
) -> Result<AuditPage, ReadError> {
    let Window { bound, positions } = window(q, size)?;
    let Some((lo, hi)) = positions else {
        return Ok(AuditPage {
            hits: Vec::new(),
            next: None,
            tree_size: bound,
            examined: 0,
        });
    };
    let mut postings = open_postings(db, generation, q, lo, hi)?;
    let Walked {
        hits,
        more,
        examined,
    } = walk(db, generation, &mut postings, q, bound, (lo, hi))?;
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
    let (tag, digest) = audit_query::config_term(kind);
    let mut posting = Posting::open(db, generation, (tag, digest), 0, u128::MAX)?;
    let mut indices = Vec::new();
    let mut examined = 0;
    let mut at = posting.seek_ge(0, &mut examined)?;
    while let Some(found) = at {
        let (_, log_index) = position_parts(found);
        if log_index < size {
            indices.push((log_index, position_parts(found).0));
        }
        at = match found.checked_add(1) {
            Some(next) => posting.seek_ge(next, &mut examined)?,
            None => None,
        };
    }
    // Listed by time; versions count in log order.
    indices.sort_unstable();
    let records = db::cf(db, CF_RECORDS)?;
    let mut history = Vec::with_capacity(indices.len());
    for (log_index, time) in indices {
        let (_, record) = candidate(db, records, generation, log_index, time)?;
        match record.content() {
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
