//! The e-license state in RocksDB: staged in the apply's write batch, read for the notary,
//! and checked against the records by the integrity check (on open and on every installed
//! snapshot). The rules are in [`crate::license`]; the layouts in [`crate::db`].
//!
//! Only the issuance index and the facts needed for the status list are stored; the records
//! themselves stay in `records`, and every read that answers with a record reads it from there.

use std::collections::HashMap;

use qianlian_verifier::Hash;
use qianlian_verifier::license::StatusEntry;
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::error::IntegrityError;
use crate::db::{
    self, CF_HOLDERS, CF_LICENSE_CHANGES, CF_LICENSES, CF_RECORDS, StoreError, decode_value,
    encode_value, generation_prefix, hash_index_key, hash_index_key_parts, license_key, record_key,
};
use crate::license::{LicenseCurrentStatus, LicenseView};
use crate::record::{LicenseIssuedRecord, LicenseStatusChange, LicenseStatusRecord, Record};

/// The value of a `license_changes` entry: what the status list needs of a status record, so
/// the list is built from this column family alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredChange {
    pub change: LicenseStatusChange,
    pub time_unix_ms: u64,
    pub reason: String,
}

impl StoredChange {
    fn of(record: &LicenseStatusRecord) -> StoredChange {
        StoredChange {
            change: record.change,
            time_unix_ms: record.time_unix_ms,
            reason: record.reason.clone(),
        }
    }
}

const WHAT_CHANGE: &str = "license change";

/// The record at `log_index` of `generation`, decoded; missing or undecodable is corruption.
fn read_record(db: &DB, generation: u32, log_index: u64) -> Result<Record, StoreError> {
    let what = || format!("record {log_index}");
    let bytes = db
        .get_pinned_cf(db::cf(db, CF_RECORDS)?, record_key(generation, log_index))?
        .ok_or_else(|| StoreError::corrupt(what(), "missing below the tree size"))?;
    Record::decode(&bytes).map_err(|e| StoreError::corrupt(what(), e))
}

/// The issuance record at `log_index`, which the license index says issued `license_hash`.
fn read_issued(
    db: &DB,
    generation: u32,
    log_index: u64,
    license_hash: &Hash,
) -> Result<LicenseIssuedRecord, StoreError> {
    match read_record(db, generation, log_index)?.into_content() {
        Record::LicenseIssued(r) if r.license_hash == *license_hash => Ok(r),
        _ => Err(StoreError::corrupt(
            format!("license index entry of {}", hex::encode(license_hash)),
            format!("points at log index {log_index}, which does not issue that license"),
        )),
    }
}

/// The log index of `license_hash`'s issuance in the `licenses` index, if any.
fn issued_index(db: &DB, generation: u32, license_hash: &Hash) -> Result<Option<u64>, StoreError> {
    let key = license_key(generation, license_hash);
    match db.get_pinned_cf(db::cf(db, CF_LICENSES)?, key)? {
        None => Ok(None),
        Some(bytes) => {
            let index: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                StoreError::corrupt(
                    format!("license index entry of {}", hex::encode(license_hash)),
                    format!("{} bytes, expected 8", bytes.len()),
                )
            })?;
            Ok(Some(u64::from_be_bytes(index)))
        }
    }
}

/// Visit every `(hash, log index, value)` stored under `hash` (or the whole generation when
/// `hash` is `None`) in `cf_name`, in key order, until `visit` returns `false`.
fn scan(
    db: &DB,
    cf_name: &str,
    generation: u32,
    hash: Option<&Hash>,
    mut visit: impl FnMut(Hash, u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut prefix = generation_prefix(generation).to_vec();
    if let Some(hash) = hash {
        prefix.extend_from_slice(hash);
    }
    let iter = db.iterator_cf_opt(
        db::cf(db, cf_name)?,
        db::scan_options(),
        IteratorMode::From(&prefix, Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let (_, hash, index) = hash_index_key_parts(cf_name, &key)?;
        if !visit(hash, index, &value)? {
            break;
        }
    }
    Ok(())
}

/// Stages the license state of appended records into the apply's write batch.
pub(super) struct LicenseStager<'a> {
    db: &'a DB,
    generation: u32,
    // Licenses issued earlier in the batch not yet written, which the database cannot answer
    // for: license hash → (issuance log index, holder hash, issuing department).
    unwritten: HashMap<Hash, (u64, Hash, String)>,
}

impl<'a> LicenseStager<'a> {
    pub(super) fn new(db: &'a DB, generation: u32) -> LicenseStager<'a> {
        LicenseStager {
            db,
            generation,
            unwritten: HashMap::new(),
        }
    }

    /// The issuance of `license_hash`: its log index and holder hash.
    fn issuance(&self, license_hash: &Hash) -> Result<Option<(u64, Hash, String)>, StoreError> {
        if let Some(found) = self.unwritten.get(license_hash) {
            return Ok(Some(found.clone()));
        }
        let Some(index) = issued_index(self.db, self.generation, license_hash)? else {
            return Ok(None);
        };
        let issued = read_issued(self.db, self.generation, index, license_hash)?;
        Ok(Some((index, issued.holder_hash, issued.department)))
    }

    /// The department that issued the license a status record names, as the records applied
    /// so far say; `None` for other records and for a license not issued.
    pub(super) fn issuer_for(&self, record: &Record) -> Result<Option<String>, StoreError> {
        match record.content() {
            Record::LicenseStatus(r) => Ok(self.issuance(&r.license_hash)?.map(|(_, _, d)| d)),
            _ => Ok(None),
        }
    }

    /// Stage the state change of `record`, appended at `log_index`.
    pub(super) fn stage(
        &mut self,
        batch: &mut WriteBatch,
        log_index: u64,
        record: &Record,
    ) -> Result<(), StoreError> {
        let generation = self.generation;
        match record.content() {
            Record::Access(_)
            | Record::Exchange(_)
            | Record::Config(_)
            | Record::Sealed(_)
            | Record::Authorized(_)
            | Record::BatchSealed(_)
            | Record::BatchSignature(_)
            | Record::Governance(_) => {}
            Record::LicenseIssued(r) => {
                // First issuance wins: a repeat stays in the log and in its holder's index.
                if self.issuance(&r.license_hash)?.is_none() {
                    batch.put_cf(
                        db::cf(self.db, CF_LICENSES)?,
                        license_key(generation, &r.license_hash),
                        log_index.to_be_bytes(),
                    );
                    self.unwritten.insert(
                        r.license_hash,
                        (log_index, r.holder_hash, r.department.clone()),
                    );
                }
                batch.put_cf(
                    db::cf(self.db, CF_HOLDERS)?,
                    hash_index_key(generation, &r.holder_hash, log_index),
                    [],
                );
            }
            Record::LicenseStatus(r) => {
                // A change of a license not (yet) issued stays in the log, outside the state.
                let Some((_, holder, _)) = self.issuance(&r.license_hash)? else {
                    return Ok(());
                };
                batch.put_cf(
                    db::cf(self.db, CF_LICENSE_CHANGES)?,
                    hash_index_key(generation, &r.license_hash, log_index),
                    encode_value(WHAT_CHANGE, &StoredChange::of(r))?,
                );
                batch.put_cf(
                    db::cf(self.db, CF_HOLDERS)?,
                    hash_index_key(generation, &holder, log_index),
                    [],
                );
            }
        }
        Ok(())
    }
}

/// The license `license_hash` as of the first `size` records.
pub(super) fn view(
    db: &DB,
    generation: u32,
    size: u64,
    license_hash: &Hash,
) -> Result<Option<LicenseView>, StoreError> {
    let Some(issued_index) = issued_index(db, generation, license_hash)?.filter(|i| *i < size)
    else {
        return Ok(None);
    };
    let issued = read_issued(db, generation, issued_index, license_hash)?;
    let mut indices = Vec::new();
    scan(
        db,
        CF_LICENSE_CHANGES,
        generation,
        Some(license_hash),
        |_, index, _| {
            // Entries at or beyond the size belong to an apply whose tree size is not yet
            // published: not part of the applied state.
            let below = index < size;
            if below {
                indices.push(index);
            }
            Ok(below)
        },
    )?;
    let mut status = LicenseCurrentStatus::Valid;
    let mut changes = Vec::with_capacity(indices.len());
    for index in indices {
        let change = match read_record(db, generation, index)?.into_content() {
            Record::LicenseStatus(r) if r.license_hash == *license_hash => r,
            _ => {
                return Err(StoreError::corrupt(
                    format!("license change of {}", hex::encode(license_hash)),
                    format!("log index {index} is not a status record of that license"),
                ));
            }
        };
        status = status.then(index, change.change, change.time_unix_ms, &change.reason);
        changes.push((index, change));
    }
    Ok(Some(LicenseView {
        issued_index,
        issued,
        status,
        changes,
    }))
}

/// Log indices of the license records of holder `holder_hash` among the first `size` records,
/// ascending.
pub(super) fn holder_records(
    db: &DB,
    generation: u32,
    size: u64,
    holder_hash: &Hash,
) -> Result<Vec<u64>, StoreError> {
    let mut indices = Vec::new();
    scan(
        db,
        CF_HOLDERS,
        generation,
        Some(holder_hash),
        |_, index, _| {
            let below = index < size;
            if below {
                indices.push(index);
            }
            Ok(below)
        },
    )?;
    Ok(indices)
}

/// The entries of the status list as of tree size `size`: every license suspended or revoked
/// by the status records below `size`, sorted by license hash. Works for any `size` up to the
/// applied one: later changes are skipped, and a license issued at or after `size` has no
/// change below it.
pub(super) fn status_entries(
    db: &DB,
    generation: u32,
    size: u64,
) -> Result<Vec<StatusEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut current: Option<(Hash, LicenseCurrentStatus)> = None;
    scan(
        db,
        CF_LICENSE_CHANGES,
        generation,
        None,
        |hash, index, value| {
            if current.as_ref().is_some_and(|(h, _)| *h != hash)
                && let Some((h, status)) = current.take()
            {
                entries.extend(status.status_entry(h));
            }
            if index < size {
                let change: StoredChange = decode_value(WHAT_CHANGE, value)?;
                let status = match current.take() {
                    Some((_, status)) => status,
                    None => LicenseCurrentStatus::Valid,
                };
                current = Some((
                    hash,
                    status.then(index, change.change, change.time_unix_ms, &change.reason),
                ));
            }
            Ok(true)
        },
    )?;
    if let Some((h, status)) = current {
        entries.extend(status.status_entry(h));
    }
    Ok(entries)
}

/// Checks, record by record, that the stored license state is exactly the one the records
/// give, with O(1) memory: point reads for each license record, then a count of every
/// stored entry (so nothing is stored beyond what the records give).
#[derive(Debug, Default)]
pub(super) struct LicenseCheck {
    licenses: u64,
    changes: u64,
    holders: u64,
}

fn damaged(index: u64, detail: String) -> IntegrityError {
    IntegrityError::Damaged {
        first_bad_index: Some(index),
        detail: format!("log index {index}: {detail}"),
    }
}

impl LicenseCheck {
    /// Check the state of `record`, stored at `log_index`.
    pub(super) fn record(
        &mut self,
        db: &DB,
        generation: u32,
        log_index: u64,
        record: &Record,
    ) -> Result<(), IntegrityError> {
        let holders = db::cf(db, CF_HOLDERS)?;
        match record.content() {
            Record::Access(_)
            | Record::Exchange(_)
            | Record::Config(_)
            | Record::Sealed(_)
            | Record::Authorized(_)
            | Record::BatchSealed(_)
            | Record::BatchSignature(_)
            | Record::Governance(_) => {}
            Record::LicenseIssued(r) => {
                // At the first issuance the index must name it; at a repeat, an earlier
                // issuance of the same license, which was checked when the scan passed it.
                match issued_index(db, generation, &r.license_hash)? {
                    Some(i) if i == log_index => self.licenses += 1,
                    Some(i) if i < log_index => {
                        if read_issued(db, generation, i, &r.license_hash).is_err() {
                            return Err(damaged(
                                log_index,
                                format!(
                                    "the license index points at log index {i}, which does \
                                     not issue this license"
                                ),
                            ));
                        }
                    }
                    _ => {
                        return Err(damaged(
                            log_index,
                            "the license index does not point at this license's first issuance"
                                .into(),
                        ));
                    }
                }
                let key = hash_index_key(generation, &r.holder_hash, log_index);
                if db.get_pinned_cf(holders, key)?.is_none() {
                    return Err(damaged(
                        log_index,
                        "the issuance is missing from its holder's index".into(),
                    ));
                }
                self.holders += 1;
            }
            Record::LicenseStatus(r) => {
                let Some(i) =
                    issued_index(db, generation, &r.license_hash)?.filter(|i| *i < log_index)
                else {
                    // Ignored by the state; an entry stored for it shows in the counts.
                    return Ok(());
                };
                let holder = read_issued(db, generation, i, &r.license_hash)
                    .map_err(|e| damaged(log_index, e.to_string()))?
                    .holder_hash;
                let key = hash_index_key(generation, &r.license_hash, log_index);
                let stored = db.get_pinned_cf(db::cf(db, CF_LICENSE_CHANGES)?, key)?;
                let stored: Option<StoredChange> = stored
                    .map(|bytes| decode_value(WHAT_CHANGE, &bytes))
                    .transpose()
                    .map_err(|e| damaged(log_index, e.to_string()))?;
                if stored.as_ref() != Some(&StoredChange::of(r)) {
                    return Err(damaged(
                        log_index,
                        "the license status change is missing or differs from the record".into(),
                    ));
                }
                self.changes += 1;
                let key = hash_index_key(generation, &holder, log_index);
                if db.get_pinned_cf(holders, key)?.is_none() {
                    return Err(damaged(
                        log_index,
                        "the status change is missing from its holder's index".into(),
                    ));
                }
                self.holders += 1;
            }
        }
        Ok(())
    }

    /// Nothing may be stored beyond what the records checked give.
    pub(super) fn finish(self, db: &DB, generation: u32) -> Result<(), IntegrityError> {
        let prefix = generation_prefix(generation);
        for (cf_name, expected) in [
            (CF_LICENSES, self.licenses),
            (CF_LICENSE_CHANGES, self.changes),
            (CF_HOLDERS, self.holders),
        ] {
            let iter = db.iterator_cf_opt(
                db::cf(db, cf_name)?,
                db::scan_options(),
                IteratorMode::From(&prefix, Direction::Forward),
            );
            let mut stored = 0u64;
            for item in iter {
                let (key, _) = item.map_err(|e| IntegrityError::Damaged {
                    first_bad_index: None,
                    detail: format!("RocksDB reported damage while reading {cf_name} ({e})"),
                })?;
                if !key.starts_with(&prefix) {
                    break;
                }
                stored += 1;
            }
            if stored != expected {
                return Err(IntegrityError::Damaged {
                    first_bad_index: None,
                    detail: format!(
                        "{cf_name} holds {stored} entries but the records give {expected}: the \
                         license state was altered"
                    ),
                });
            }
        }
        Ok(())
    }
}
