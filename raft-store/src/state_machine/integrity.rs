//! The full integrity check of a node's stored notarization log, run on every open and on every
//! installed snapshot before it goes live.
//!
//! One sequential pass over the live generation: each record is decoded and hashed, the leaf
//! hashes are folded up the tree exactly as applying them did (`merkle::Edge`), and every node
//! that folding completes is compared with the stored node of the same position, read by one
//! forward iterator per tree level. So each stored record and node is read once, memory stays
//! O(log n), and the first disagreement is reported with the first log index it affects. Then
//! the stored checkpoint's signature is checked with this node's own key and its root compared
//! with the root the verified tree gives at its size: records rewritten together with a
//! recomputed tree still disagree with what was signed.
//!
//! The same pass checks the license state against the records it derives from (`licenses`):
//! a revocation deleted from the state, or a status changed, is found although every record
//! and tree node is intact. It also sums a digest of every audit index key the records give
//! and compares it with the same sum over the stored keys (`audit_index`), so an entry removed,
//! added or altered is found without holding the index in memory.
//!
//! RocksDB verifies block checksums while scanning; a checksum error stops the scan and is
//! reported with the range of log indices left unchecked.

use std::time::{Duration, Instant};

use qianlian_verifier::{Hash, SignedNote, leaf_hash};
use rocksdb::{DB, DBIteratorWithThreadMode, Direction, IteratorMode};

use super::audit_index::AuditCheck;
pub use super::error::IntegrityError;
use super::licenses::LicenseCheck;
use super::meta::KEY_CHECKPOINT;
use super::shared::Shared;
use super::tree::read_node;
use crate::db::{
    self, CF_RECORDS, CF_SM_META, CF_TREE, StoreError, decode_value, generation_prefix, node_key,
    node_key_parts, record_key, record_key_parts,
};
use crate::merkle::{self, Edge, Subtree};
use crate::record::Record;

/// What a passed check covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// Whether a stored checkpoint was checked against the tree.
    pub checkpoint_size: Option<u64>,
    /// How long the check took.
    pub elapsed: Duration,
}

fn damaged(first_bad_index: Option<u64>, detail: String) -> IntegrityError {
    IntegrityError::Damaged {
        first_bad_index,
        detail,
    }
}

/// Check the live generation and the stored checkpoint of the state machine in `shared`.
pub(super) fn check(db: &DB, shared: &Shared) -> Result<Report, IntegrityError> {
    let started = Instant::now();
    let (generation, size) = {
        let applied = shared.applied();
        (applied.generation, applied.tree_size)
    };
    let audit = check_records(db, generation, size)?;
    let checkpoint_size = check_checkpoint(db, shared, generation, size)?;
    // Last: the index derives from the records, so damage to those is named first.
    audit.finish(db, generation)?;
    Ok(Report {
        records: size,
        checkpoint_size,
        elapsed: started.elapsed(),
    })
}

/// One forward iterator per tree level, each expecting that level's nodes in order.
struct Levels<'a> {
    db: &'a DB,
    generation: u32,
    iters: Vec<Option<DBIteratorWithThreadMode<'a, DB>>>,
}

impl<'a> Levels<'a> {
    fn iter(
        &mut self,
        level: u8,
        from: u64,
    ) -> Result<&mut DBIteratorWithThreadMode<'a, DB>, IntegrityError> {
        let slot = usize::from(level);
        if self.iters.len() <= slot {
            self.iters.resize_with(slot + 1, || None);
        }
        if self.iters[slot].is_none() {
            let cf = db::cf(self.db, CF_TREE)?;
            let start = node_key(self.generation, level, from);
            self.iters[slot] = Some(self.db.iterator_cf_opt(
                cf,
                db::scan_options(),
                IteratorMode::From(&start, Direction::Forward),
            ));
        }
        match self.iters[slot].as_mut() {
            Some(iter) => Ok(iter),
            None => Err(IntegrityError::Store(StoreError::Task(
                "tree level iterator vanished".into(),
            ))),
        }
    }

    /// The stored node at `id` must be `computed`.
    fn expect(&mut self, id: Subtree, computed: Hash) -> Result<(), IntegrityError> {
        let leaves = id.leaves();
        let first = leaves.start;
        let generation = self.generation;
        let node = if id.level == 0 {
            format!("log index {first}: the stored leaf hash")
        } else {
            format!(
                "log index {first}: the stored tree node at level {}, index {} (log indices \
                 {}..{})",
                id.level, id.index, leaves.start, leaves.end
            )
        };
        let next = self.iter(id.level, id.index)?.next();
        let (key, value) = match next {
            None => return Err(damaged(Some(first), format!("{node} is missing"))),
            Some(Err(e)) => {
                return Err(damaged(
                    Some(first),
                    format!(
                        "log index {first}: RocksDB reported damage while reading tree level {} \
                         ({e}); the scan stopped there",
                        id.level
                    ),
                ));
            }
            Some(Ok(item)) => item,
        };
        if key.as_ref() != node_key(generation, id.level, id.index) {
            return Err(damaged(Some(first), format!("{node} is missing")));
        }
        let stored: Option<Hash> = value.as_ref().try_into().ok();
        if stored == Some(computed) {
            return Ok(());
        }
        Err(damaged(
            Some(first),
            if id.level == 0 {
                format!("log index {first}: stored record does not match its leaf hash")
            } else {
                format!("{node} does not match the nodes below it")
            },
        ))
    }

    /// Nothing may be stored at `level` from index `from` on.
    fn expect_end(&mut self, level: u8, from: u64) -> Result<(), IntegrityError> {
        let generation = self.generation;
        // A fresh iterator: the scan's one for this level has already been advanced past.
        let cf = db::cf(self.db, CF_TREE)?;
        let start = node_key(generation, level, from);
        let mut iter = self.db.iterator_cf_opt(
            cf,
            db::scan_options(),
            IteratorMode::From(&start, Direction::Forward),
        );
        match iter.next() {
            Some(Ok((key, _))) => {
                let (g, l, index) = node_key_parts(&key)?;
                if g == generation && l == level {
                    let id = Subtree::new(level, index);
                    return Err(damaged(
                        Some(id.leaves().start),
                        format!(
                            "a tree node at level {level}, index {index} is stored beyond the \
                             tree"
                        ),
                    ));
                }
                Ok(())
            }
            Some(Err(e)) => Err(damaged(
                None,
                format!("RocksDB reported damage while reading tree level {level} ({e})"),
            )),
            None => Ok(()),
        }
    }
}

/// Check that generation `generation` holds exactly `size` records that decode, whose leaf
/// hashes and tree nodes are the stored ones, and whose license state is the stored one, and
/// nothing beyond.
pub(crate) fn check_generation(db: &DB, generation: u32, size: u64) -> Result<(), IntegrityError> {
    check_records(db, generation, size)?.finish(db, generation)
}

/// [`check_generation`] but for the audit index, whose expected digest it returns.
fn check_records(db: &DB, generation: u32, size: u64) -> Result<AuditCheck, IntegrityError> {
    let records = db.iterator_cf_opt(
        db::cf(db, CF_RECORDS)?,
        db::scan_options(),
        IteratorMode::From(&record_key(generation, 0), Direction::Forward),
    );
    let mut records = records.into_iter();
    let mut levels = Levels {
        db,
        generation,
        iters: Vec::new(),
    };
    let mut edge = Edge::default();
    let mut licenses = LicenseCheck::default();
    let mut audit = AuditCheck::default();
    let mut completed: Vec<(Subtree, Hash)> = Vec::with_capacity(64);
    for index in 0..size {
        let (key, bytes) = match records.next() {
            None => {
                return Err(damaged(
                    Some(index),
                    format!("log index {index}: the record is missing"),
                ));
            }
            Some(Err(e)) => {
                return Err(damaged(
                    Some(index),
                    format!(
                        "log index {index}: RocksDB reported damage while reading records \
                         ({e}); the scan stopped there, records {index}..{size} were not checked"
                    ),
                ));
            }
            Some(Ok(item)) => item,
        };
        if record_key_parts(&key)? != (generation, index) {
            return Err(damaged(
                Some(index),
                format!("log index {index}: the record is missing"),
            ));
        }
        let record = match Record::decode(&bytes) {
            Ok(record) => record,
            Err(e) => {
                return Err(damaged(
                    Some(index),
                    format!("log index {index}: stored record does not decode ({e})"),
                ));
            }
        };
        completed.clear();
        edge.append(leaf_hash(&bytes), |id, hash| completed.push((id, hash)))
            .ok_or_else(|| damaged(Some(index), "the tree is full".into()))?;
        for (id, hash) in completed.drain(..) {
            levels.expect(id, hash)?;
        }
        // After the tree: a record that does not match its leaf is named as such first.
        licenses.record(db, generation, index, &record)?;
        audit.record(index, &record);
    }
    match records.next() {
        Some(Ok((key, _))) if key.starts_with(&generation_prefix(generation)) => {
            let (_, index) = record_key_parts(&key)?;
            return Err(damaged(
                Some(index),
                format!("log index {index}: a record is stored beyond the tree size {size}"),
            ));
        }
        Some(Err(e)) => {
            return Err(damaged(
                Some(size),
                format!("RocksDB reported damage after the last record ({e})"),
            ));
        }
        _ => {}
    }
    for level in 0..64u8 {
        levels.expect_end(level, size >> level)?;
    }
    licenses.finish(db, generation)?;
    Ok(audit)
}

/// Check the stored checkpoint: this node's signature, its size within the tree, its root
/// against the (verified) tree. Returns the size it covers, if there is one.
fn check_checkpoint(
    db: &DB,
    shared: &Shared,
    generation: u32,
    size: u64,
) -> Result<Option<u64>, IntegrityError> {
    let Some(bytes) = db.get_pinned_cf(db::cf(db, CF_SM_META)?, KEY_CHECKPOINT)? else {
        return Ok(None);
    };
    let note: String = decode_value("checkpoint", &bytes)
        .map_err(|e| damaged(None, format!("the stored checkpoint does not decode ({e})")))?;
    let parsed = SignedNote::parse(&note).map_err(|e| {
        damaged(
            None,
            format!("the stored checkpoint is not a signed note ({e})"),
        )
    })?;
    match shared.config.signer.verifier() {
        Some(own) => {
            if let Err(e) = parsed.verify(std::slice::from_ref(&own)) {
                return Err(damaged(
                    None,
                    format!(
                        "the stored checkpoint is not validly signed by this node's key {} ({e})",
                        own.name()
                    ),
                ));
            }
        }
        None => tracing::warn!(
            "no checkpoint key configured: the stored checkpoint's signature is not checked"
        ),
    }
    let checkpoint = crate::checkpoint::parse_stored(&note)
        .map_err(|e| damaged(None, format!("the stored checkpoint does not parse ({e})")))?;
    if checkpoint.size > size {
        return Err(damaged(
            None,
            format!(
                "the stored checkpoint covers {} records but only {size} are stored",
                checkpoint.size
            ),
        ));
    }
    let root = merkle::root(checkpoint.size, &mut |id| read_node(db, generation, id))?;
    if root != checkpoint.root {
        return Err(damaged(
            None,
            format!(
                "the root of the first {} records is {} but the stored checkpoint signed {}: \
                 records were rewritten together with the tree",
                checkpoint.size,
                hex::encode(root),
                hex::encode(checkpoint.root)
            ),
        ));
    }
    Ok(Some(checkpoint.size))
}
