//! The origin check every node runs before a record changes anything: its originator's seal
//! and authority (rules in [`qianlian_verifier::record::seal`]), against the keys published by
//! the directory in force at that log position.
//!
//! The keys come from the replicated directory only (the config record the pointers name), never
//! from a node's local files, so every node decides the same for the same log position. Until
//! the cluster has a replicated directory, a seal's signature is checked but its authority
//! cannot be. A directory document whose keys do not read publishes none (the gateway refuses
//! such a document before it is appended; the log may still hold one from an older node).
//!
//! A refused record is not appended: it gets no log index and no leaf, changes no state, and
//! the tree's root stays what it was. Its Raft entry stays in the Raft log (whose other records
//! apply as usual) until that is compacted; the refusal is counted ([`super::StateReader::refused`])
//! and its submitter is told why.

use std::sync::Arc;

use qianlian_verifier::Hash;
use qianlian_verifier::license::DepartmentKey;
use qianlian_verifier::record::{
    BatchKey, BatchSealedRecord, BatchSignatureRecord, ConfigChange, DatasetOwner, MemberSet,
    OriginError, OriginKey, OriginKeys, SignerRole,
};
use rocksdb::DB;
use serde::Deserialize;

use super::governance::Governance;
use super::meta::ConfigPointers;
use crate::db::{self, CF_RECORDS, StoreError, record_key};
use crate::record::Record;

/// The parts of a directory document the origin check reads; everything else is the gateway's.
#[derive(Deserialize)]
struct DirectoryKeys {
    #[serde(default)]
    department: Vec<DepartmentKeys>,
    #[serde(default)]
    operator: Vec<OperatorKeys>,
}

/// An operator and the keys that sign its configuration changes.
#[derive(Deserialize)]
struct OperatorKeys {
    id: String,
    #[serde(default)]
    keys: Vec<DepartmentKey>,
}

/// A directory key as an origin key, or why it is not one.
fn origin_key(role: SignerRole, owner: &str, k: &DepartmentKey) -> Result<OriginKey, String> {
    let public_key: [u8; 32] = k.public_key.as_slice().try_into().map_err(|_| {
        format!(
            "key {} of {owner} is {} bytes, not 32",
            k.key_id,
            k.public_key.len()
        )
    })?;
    Ok(OriginKey {
        role,
        department: owner.to_owned(),
        key_id: k.key_id.clone(),
        public_key,
    })
}

#[derive(Deserialize)]
struct DepartmentKeys {
    id: String,
    /// License signing keys: they seal license issuance and status records.
    #[serde(default)]
    keys: Vec<DepartmentKey>,
    /// Gateway node keys: they seal the department's side of exchanges.
    #[serde(default)]
    node_keys: Vec<DepartmentKey>,
    /// The datasets the department owns (only their ids matter here).
    #[serde(default)]
    dataset: Vec<DatasetId>,
}

#[derive(Deserialize)]
struct DatasetId {
    id: String,
}

/// The keys a directory document (TOML) publishes.
pub fn keys_from_directory(toml_text: &str) -> Result<OriginKeys, String> {
    let doc: DirectoryKeys = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    let mut departments = Vec::new();
    let mut datasets = Vec::new();
    for d in doc.department {
        for ds in &d.dataset {
            datasets.push(DatasetOwner {
                dataset: ds.id.clone(),
                department: d.id.clone(),
            });
        }
        for (role, list) in [
            (SignerRole::LicenseIssuer, &d.keys),
            (SignerRole::Gateway, &d.node_keys),
        ] {
            for k in list {
                keys.push(origin_key(role, &d.id, k)?);
            }
        }
        departments.push(d.id);
    }
    for o in doc.operator {
        for k in &o.keys {
            keys.push(origin_key(SignerRole::Operator, &o.id, k)?);
        }
    }
    departments.sort();
    departments.dedup();
    // A dataset listed under two departments has no owner here: nobody takes governance steps
    // over it (the gateway refuses such a directory; one may still be in an older log), and the
    // keys stay in force.
    datasets.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    let listed: Vec<String> = datasets.iter().map(|d| d.dataset.clone()).collect();
    datasets.retain(|d| listed.iter().filter(|l| **l == d.dataset).count() == 1);
    Ok(OriginKeys {
        keys,
        departments,
        datasets,
    })
}

/// The keys of the directory `pointers` name, read from the stored record; `None` without a
/// replicated directory.
pub(super) fn load(
    db: &DB,
    generation: u32,
    pointers: &ConfigPointers,
) -> Result<Option<Arc<OriginKeys>>, StoreError> {
    let Some(p) = pointers.directory else {
        return Ok(None);
    };
    match config_change(db, generation, p.log_index, "the directory in force")? {
        ConfigChange::Directory { toml } => Ok(Some(Arc::new(readable_keys(&toml)))),
        _ => Err(StoreError::corrupt(
            format!("record {} (the directory in force)", p.log_index),
            "not a directory record",
        )),
    }
}

/// The change of the config record at `log_index`, which `what` names in errors.
fn config_change(
    db: &DB,
    generation: u32,
    log_index: u64,
    what: &str,
) -> Result<ConfigChange, StoreError> {
    let what = || format!("record {log_index} ({what})");
    let bytes = db
        .get_pinned_cf(db::cf(db, CF_RECORDS)?, record_key(generation, log_index))?
        .ok_or_else(|| StoreError::corrupt(what(), "missing below the tree size"))?;
    let record = Record::decode(&bytes).map_err(|e| StoreError::corrupt(what(), e))?;
    match record.into_content() {
        Record::Config(c) => Ok(c.change),
        _ => Err(StoreError::corrupt(what(), "not a config record")),
    }
}

/// The operators' say over Raft membership as of the applied state: whether the directory in
/// force has operators (who then sign every membership change), and the last change they
/// signed (`from`, `to`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipAuthority {
    pub operators_sign: bool,
    pub last_signed: Option<(MemberSet, MemberSet)>,
}

/// The membership authority of the state `keys` and `pointers` describe.
pub(super) fn membership_authority(
    db: &DB,
    generation: u32,
    keys: Option<&OriginKeys>,
    pointers: &ConfigPointers,
) -> Result<MembershipAuthority, StoreError> {
    let operators_sign = keys.is_some_and(|k| !k.operators().is_empty());
    let Some(p) = pointers.membership else {
        return Ok(MembershipAuthority {
            operators_sign,
            last_signed: None,
        });
    };
    match config_change(db, generation, p.log_index, "the last membership change")? {
        ConfigChange::Membership { from, to } => Ok(MembershipAuthority {
            operators_sign,
            last_signed: Some((from, to)),
        }),
        _ => Err(StoreError::corrupt(
            format!("record {} (the last membership change)", p.log_index),
            "not a membership record",
        )),
    }
}

/// The keys of a directory document, or none if they do not read.
fn readable_keys(toml_text: &str) -> OriginKeys {
    keys_from_directory(toml_text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the directory in force publishes no readable keys");
        OriginKeys::default()
    })
}

/// Why a record was refused: its seal or authority does not hold.
pub type Refusal = OriginError;

/// Judge `record` against `keys` (the directory in force; `None`: none replicated yet) and
/// `config` (the versions in force, which a signed config change must replace). `issuer` is
/// the issuing department of the license a status change names. On success, returns the keys
/// of a directory change, which are in force from the next record on.
pub(super) fn judge(
    keys: Option<&OriginKeys>,
    config: &ConfigPointers,
    governance: &Governance,
    record: &Record,
    issuer: Option<&str>,
    batches: &VerifiedBatches,
) -> Result<Option<OriginKeys>, Refusal> {
    if let Record::Governance(g) = record.content() {
        // Only under a batch signature (decided in `batch_signatures`); say what else is wrong
        // with the step, if anything, so its submitter can mend it.
        let keys = keys.ok_or_else(|| OriginError::NoDirectory {
            dataset: g.dataset().to_owned(),
        })?;
        keys.check_governance(g, governance.catalog_version(g.dataset()))?;
        return Err(OriginError::GovernanceUnsigned {
            department: g.department.clone(),
        });
    }
    let new_keys = match record.content() {
        Record::Config(c) => match &c.change {
            ConfigChange::Directory { toml } => Some(readable_keys(toml)),
            ConfigChange::Policy { .. } | ConfigChange::Membership { .. } => None,
        },
        _ => None,
    };
    // Signatures first (a batch's once), then whether the signer may speak for the record.
    match record {
        Record::Sealed(s) => s.verify_signature()?,
        Record::BatchSealed(s) => batches.verify(s)?,
        Record::Authorized(a) => a.verify_signatures()?,
        _ => {}
    }
    // Authority needs a directory: without one, only signatures can be checked.
    if let Some(keys) = keys {
        keys.check_authority(record, issuer)?;
        keys.check_config(
            record,
            |kind| config.get(kind).map_or(0, |p| p.version),
            new_keys.as_ref(),
        )?;
    }
    Ok(new_keys)
}

/// What the batch signatures of one Raft entry decide for each of its records, decided before
/// any of them applies (a signature covers fixed log positions, so it is appended only with
/// every record it covers):
/// - `None`: no signature holds for the record; it is judged on its own, as unsealed;
/// - `Some(Ok(()))`: a signature record whose whole group holds, or a record of that group
///   (signature verified over the group's log leaves; the signing key listed, in its role, for
///   the department that answers for each record);
/// - `Some(Err(reason))`: a signature record refused with the reason (the records it would
///   cover are then judged on their own).
///
/// Covered records are judged against `keys`, the directory in force at the start of the entry;
/// without a directory only the signature is checked. `leaves` are the records' log leaf hashes;
/// `issuer` gives the issuer of the license a status change names.
pub(super) fn batch_signatures(
    keys: Option<&OriginKeys>,
    governance: &Governance,
    records: &[Record],
    leaves: &[Hash],
    batches: &VerifiedBatches,
    mut issuer: impl FnMut(&Record) -> Result<Option<String>, StoreError>,
) -> Result<Vec<Option<Result<(), Refusal>>>, StoreError> {
    let mut verdicts: Vec<Option<Result<(), Refusal>>> = vec![None; records.len()];
    // Catalog versions as the groups accepted so far leave them (the entry's governance steps
    // apply only under signatures, so in this order).
    let mut catalog: std::collections::BTreeMap<&str, u64> = Default::default();
    for (p, record) in records.iter().enumerate() {
        let Record::BatchSignature(signature) = record else {
            continue;
        };
        let range = match signature.covered(p) {
            Some(range) if range.clone().all(|q| verdicts[q].is_none()) => range,
            // Reaching before the entry, or over another signature's group.
            _ => {
                verdicts[p] = Some(Err(OriginError::NotCoverable));
                continue;
            }
        };
        let mut verdict = batches.verify_covering(signature, &leaves[p], &leaves[range.clone()]);
        let mut steps: Vec<(&str, u64)> = Vec::new();
        if verdict.is_ok() {
            for q in range.clone() {
                let checked = match keys {
                    Some(keys) => {
                        let issuer = issuer(&records[q])?;
                        keys.covered_originator(signature, &records[q], issuer.as_deref())
                            .and_then(|o| {
                                keys.check_authority_by(&records[q], issuer.as_deref(), Some(&o))
                            })
                    }
                    None => Ok(()),
                }
                .and_then(|()| match records[q].content() {
                    Record::Governance(g) => {
                        let dataset = g.dataset();
                        let in_force = steps
                            .iter()
                            .rev()
                            .find(|(d, _)| *d == dataset)
                            .map(|(_, v)| *v)
                            .or_else(|| catalog.get(dataset).copied())
                            .unwrap_or_else(|| governance.catalog_version(dataset));
                        let keys = keys.ok_or_else(|| OriginError::NoDirectory {
                            dataset: dataset.to_owned(),
                        })?;
                        keys.check_governance(g, in_force)?;
                        let qianlian_verifier::record::GovernanceStep::Catalog(entry) = &g.step;
                        steps.push((dataset, entry.version));
                        Ok(())
                    }
                    _ => Ok(()),
                });
                if let Err(e) = checked {
                    verdict = Err(e);
                    break;
                }
            }
        }
        if verdict.is_ok() {
            for q in range {
                verdicts[q] = Some(Ok(()));
            }
            catalog.extend(steps);
        }
        verdicts[p] = Some(verdict);
    }
    Ok(verdicts)
}

/// How many verified batch signatures a node remembers: a batch's records reach the origin
/// check within moments of each other (submission, then apply), so the last few thousand
/// suffice; an older one is verified again, which costs time, never a wrong answer.
const VERIFIED_BATCHES: usize = 4096;

/// Batch signatures verified on this node, newest last. Only signatures that verified are
/// kept, keyed by what they sign and the signature itself, so a hit means the same check
/// already passed.
#[derive(Debug, Default)]
pub(crate) struct VerifiedBatches {
    seen: std::sync::Mutex<(
        std::collections::HashSet<BatchKey>,
        std::collections::VecDeque<BatchKey>,
    )>,
}

impl VerifiedBatches {
    /// Check `sealed`'s path and batch signature, verifying the signature only if this node
    /// has not already verified it.
    pub(crate) fn verify(&self, sealed: &BatchSealedRecord) -> Result<(), OriginError> {
        let key = sealed.batch_key()?;
        let known = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .contains(&key);
        if known {
            return Ok(());
        }
        sealed.verify_signature()?;
        self.remember(key);
        Ok(())
    }

    /// Check that batch signature `signature` (whose own log leaf is `own_leaf`) covers records
    /// with log leaves `covered`, verifying the signature only if this node has not already
    /// verified it (by its leaf).
    pub(crate) fn verify_covering(
        &self,
        signature: &BatchSignatureRecord,
        own_leaf: &Hash,
        covered: &[Hash],
    ) -> Result<(), OriginError> {
        let known = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .contains(own_leaf);
        if known {
            // The signature verified over a root: the leaves must still give that root.
            return match covered.len() as u64 == signature.count
                && qianlian_verifier::tree::root_of(covered) == signature.root
            {
                true => Ok(()),
                false => signature.verify(covered),
            };
        }
        signature.verify(covered)?;
        self.remember(*own_leaf);
        Ok(())
    }

    /// Remember `key` as verified (by this node, or made by it).
    pub(crate) fn remember(&self, key: BatchKey) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0.insert(key) {
            seen.1.push_back(key);
            while seen.1.len() > VERIFIED_BATCHES {
                if let Some(old) = seen.1.pop_front() {
                    seen.0.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
