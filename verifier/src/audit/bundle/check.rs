//! [`check_bundle`]: the checks, in the order a reader would ask them.

use std::collections::BTreeSet;

use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use super::error::{BundleError, Entry};
use super::{
    BundleReport, EVIDENCE_BUNDLE_VERSION, EvidenceBundle, TrustedKeys, check_threshold, json_view,
    parse_vkeys, policy_version,
};
use crate::checkpoint::{CheckpointError, VerifiedCheckpoint, open_checkpoint};
use crate::hash::{Hash, leaf_hash};
use crate::note::{NoteError, NoteVerifier};
use crate::proof::verify_inclusion;
use crate::record::{
    ConfigChange, OriginError, OriginKey, OriginKeys, Originator, Record, SignerRole,
};

/// Checks a bundle: its version; the checkpoint signed by `min_cosigners` distinct node keys
/// for the bundle's origin (the pinned `trust`, or else the bundle's own keys); department
/// entries; every record and policy included in the checkpoint's tree at its log index,
/// decodable, without repeated indices, with an unedited JSON view; policy versions 1, 2, …
/// in log order, up to the highest version a record was decided under. Which policy record
/// bears which number is the exporter's word (see [`super::BundlePolicy::version`]).
///
/// # Errors
/// The first failure, as a [`BundleError`] naming the log index where there is one;
/// [`BundleError::Json`] never (see [`EvidenceBundle::from_json`]).
pub fn check_bundle(
    bundle: &EvidenceBundle,
    trust: Option<&TrustedKeys>,
) -> Result<BundleReport, BundleError> {
    if bundle.version != EVIDENCE_BUNDLE_VERSION {
        return Err(BundleError::UnsupportedVersion {
            version: bundle.version,
        });
    }
    let checkpoint = open(bundle, trust)?;
    let (tree_size, root) = (checkpoint.checkpoint.size, checkpoint.checkpoint.root);
    check_departments(bundle)?;
    let committed = |entry, log_index, bytes: &[u8], proof: &[Hash]| {
        if log_index >= tree_size {
            return Err(BundleError::OutsideTree {
                entry,
                log_index,
                tree_size,
            });
        }
        // A seal is checked first: an altered seal also breaks the inclusion proof, and the
        // seal names what was altered.
        let origin = match Record::decode(bytes) {
            Ok(Record::Sealed(sealed)) => sealed.verify_signature(),
            Ok(Record::Authorized(authorized)) => authorized.verify_signatures(),
            Ok(Record::BatchSealed(sealed)) => sealed.verify_signature(),
            Ok(Record::BatchSignature(signature)) => signature.verify_signature(),
            _ => Ok(()),
        };
        origin.map_err(|source| BundleError::Origin {
            entry,
            log_index,
            source,
        })?;
        verify_inclusion(&leaf_hash(bytes), log_index, tree_size, proof, &root).map_err(
            |source| BundleError::Inclusion {
                entry,
                log_index,
                source,
            },
        )?;
        Record::decode(bytes).map_err(|source| BundleError::Undecodable {
            entry,
            log_index,
            source,
        })
    };

    let keys = origin_keys(bundle);
    let mut origins = Vec::new();
    let mut seen = BTreeSet::new();
    let mut time_range: Option<(u64, u64)> = None;
    // (version, log index of the record that references it)
    let mut highest_policy: Option<(u64, u64)> = None;
    for r in &bundle.records {
        let log_index = r.log_index;
        if !seen.insert(log_index) {
            return Err(BundleError::DuplicateIndex {
                entry: Entry::Record,
                log_index,
            });
        }
        let record = committed(Entry::Record, log_index, &r.record, &r.proof)?;
        let origin_error = |source| BundleError::Origin {
            entry: Entry::Record,
            log_index,
            source,
        };
        let covered = match &r.signed_by {
            None => None,
            Some(b) => {
                // An altered signature is named as this record's origin failing.
                if let Ok(Record::BatchSignature(s)) = Record::decode(&b.record) {
                    s.verify_signature().map_err(origin_error)?;
                }
                let signature = committed(Entry::Record, b.log_index, &b.record, &b.proof)?;
                let signed = covering(bundle, &keys, &signature, b, log_index, &r.record, &record)
                    .map_err(origin_error)?;
                Some(signed)
            }
        };
        let originator = covered.as_ref().or(record.originator());
        check_origin(bundle, &keys, log_index, &record, originator).map_err(origin_error)?;
        if let Some(originator) = originator {
            origins.push((log_index, originator.clone()));
        }
        if let Some(at) = first_difference(&json_view(&record), &r.record_json) {
            return Err(BundleError::JsonView { log_index, at });
        }
        let t = record.time_unix_ms();
        time_range = Some(time_range.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
        let version = policy_version(&record);
        if version > highest_policy.map_or(0, |(v, _)| v) {
            highest_policy = Some((version, log_index));
        }
    }

    let mut after: Option<u64> = None;
    for (expected, p) in (1..).zip(&bundle.policies) {
        let log_index = p.log_index;
        if p.version != expected || after.is_some_and(|a| a >= log_index) {
            return Err(BundleError::PolicyOrder {
                log_index,
                expected,
                got: p.version,
                after,
            });
        }
        let record = committed(Entry::Policy, log_index, &p.record, &p.proof)?;
        if !matches!(record.content(), Record::Config(c) if matches!(c.change, ConfigChange::Policy { .. }))
        {
            return Err(BundleError::NotAPolicy {
                log_index,
                found: kind(&record),
            });
        }
        after = Some(log_index);
    }
    let carried = bundle.policies.len() as u64;
    if let Some((referenced, log_index)) = highest_policy.filter(|&(v, _)| v > carried) {
        return Err(BundleError::MissingPolicy {
            log_index,
            referenced,
            missing: carried + 1,
        });
    }

    Ok(BundleReport {
        origin: checkpoint.checkpoint.origin,
        tree_size,
        root,
        signers: checkpoint.signers,
        min_cosigners: trust.map_or(bundle.min_cosigners, TrustedKeys::min_cosigners),
        keys_pinned: trust.is_some(),
        records_checked: bundle.records.len(),
        policies_checked: bundle.policies.len(),
        time_range_unix_ms: time_range,
        origins,
    })
}

/// Opens the checkpoint with the pinned keys, or with the bundle's own.
fn open(
    bundle: &EvidenceBundle,
    trust: Option<&TrustedKeys>,
) -> Result<VerifiedCheckpoint, BundleError> {
    let own: Vec<NoteVerifier>;
    let (origin, verifiers, k) = match trust {
        Some(trust) => {
            if bundle.origin != trust.origin() {
                return Err(BundleError::OriginMismatch {
                    pinned: trust.origin().to_owned(),
                    bundle: bundle.origin.clone(),
                });
            }
            (trust.origin(), trust.verifiers(), trust.min_cosigners())
        }
        None => {
            own = parse_vkeys(&bundle.node_keys)?;
            check_threshold(&own, bundle.min_cosigners)?;
            (bundle.origin.as_str(), own.as_slice(), bundle.min_cosigners)
        }
    };
    open_checkpoint(&bundle.checkpoint, verifiers)
        .and_then(|c| c.require_origin(origin))
        .and_then(|c| c.require_signers(k))
        .map_err(|e| match e {
            CheckpointError::WrongOrigin { expected, got } => {
                BundleError::WrongOrigin { expected, got }
            }
            CheckpointError::Note(NoteError::NotEnoughSigners { required, signers }) => {
                BundleError::TooFewSigners { required, signers }
            }
            other => BundleError::Checkpoint(other),
        })
}

/// Department ids and key ids are unique, and every key is an Ed25519 public key.
fn check_departments(bundle: &EvidenceBundle) -> Result<(), BundleError> {
    let mut ids = BTreeSet::new();
    let mut key_ids = BTreeSet::new();
    for d in &bundle.departments {
        let refuse = |reason: String| BundleError::Department {
            id: d.id.clone(),
            reason,
        };
        if d.id.is_empty() || !ids.insert(d.id.as_str()) {
            return Err(refuse("the id is empty or appears twice".into()));
        }
        for key in &d.keys {
            if !key_ids.insert(key.key_id.as_str()) {
                return Err(refuse(format!("key id {:?} appears twice", key.key_id)));
            }
            let valid = <[u8; 32]>::try_from(key.public_key.as_slice())
                .ok()
                .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok());
            if valid.is_none() {
                return Err(refuse(format!(
                    "key {:?} is not a 32-byte Ed25519 public key",
                    key.key_id
                )));
            }
        }
    }
    Ok(())
}

/// The JSON pointer of the first place where `got` differs from `expected`; `None` if equal.
fn first_difference(expected: &Value, got: &Value) -> Option<String> {
    match (expected, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    None => return Some(format!("/{key}")),
                    Some(other) => {
                        if let Some(at) = first_difference(value, other) {
                            return Some(format!("/{key}{at}"));
                        }
                    }
                }
            }
            b.keys()
                .find(|key| !a.contains_key(*key))
                .map(|key| format!("/{key}"))
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (value, other)) in a.iter().zip(b).enumerate() {
                if let Some(at) = first_difference(value, other) {
                    return Some(format!("/{i}{at}"));
                }
            }
            (a.len() != b.len()).then(|| format!("/{}", a.len().min(b.len())))
        }
        _ => (expected != got).then(String::new),
    }
}

/// The keys the bundle's departments publish.
fn origin_keys(bundle: &EvidenceBundle) -> OriginKeys {
    let mut keys = Vec::new();
    for d in &bundle.departments {
        for (role, list) in [
            (SignerRole::LicenseIssuer, &d.keys),
            (SignerRole::Gateway, &d.node_keys),
        ] {
            for k in list {
                if let Ok(public_key) = <[u8; 32]>::try_from(k.public_key.as_slice()) {
                    keys.push(OriginKey {
                        role,
                        department: d.id.clone(),
                        key_id: k.key_id.clone(),
                        public_key,
                    });
                }
            }
        }
    }
    OriginKeys {
        keys,
        ..Default::default()
    }
}

/// A record's authority against the bundle's keys, by the rules every node applies (its
/// seal's signature was checked with its inclusion): a department that lists node keys must
/// have sealed its records, one that lists none (a log before seals) need not. A license
/// status change answers to the department that made it, as the bundle does not carry the
/// issuance (the nodes checked it against the issuer).
fn check_origin(
    bundle: &EvidenceBundle,
    keys: &OriginKeys,
    log_index: u64,
    record: &Record,
    originator: Option<&Originator>,
) -> Result<(), OriginError> {
    let (_, department) = crate::record::seal::responsible(record, None);
    let before_seals = bundle
        .departments
        .iter()
        .find(|d| d.id == department)
        .and_then(|d| d.sealed_from)
        .is_some_and(|from| log_index < from);
    if before_seals && originator.is_none() {
        return Ok(());
    }
    match keys.check_authority_by(record, None, originator) {
        // A key rotated out since: good for the records sealed while it was listed.
        Err(OriginError::UnknownKey { .. })
            if retired_at(bundle, &department, log_index, originator) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The originator the batch signature `signature` (at `b.log_index`) speaks as for `record`
/// (canonical `bytes`, at `log_index`): it must cover that log index, verify over the record's
/// path among the records it covers, and be a key the bundle lists (now or retired) for the
/// record's department.
fn covering(
    bundle: &EvidenceBundle,
    keys: &OriginKeys,
    signature: &Record,
    b: &super::BundleBatchSignature,
    log_index: u64,
    bytes: &[u8],
    record: &Record,
) -> Result<Originator, OriginError> {
    let Record::BatchSignature(signature) = signature else {
        return Err(OriginError::NotCoverable);
    };
    let start = b.log_index.checked_sub(signature.count);
    let index = match start {
        Some(start) if (start..b.log_index).contains(&log_index) => log_index - start,
        _ => return Err(OriginError::NotCoverable),
    };
    signature.verify_covered(&leaf_hash(bytes), index, &b.path)?;
    let (_, department) = crate::record::seal::responsible(record, None);
    match keys.covered_originator(signature, record, None) {
        // A key the department no longer lists: `check_origin` accepts it for the positions
        // where it was listed.
        Err(OriginError::UnknownKey { .. }) => {
            let retired = bundle
                .departments
                .iter()
                .filter(|d| d.id == department)
                .flat_map(|d| &d.retired_keys)
                .find(|r| r.role == signature.role && r.key.public_key == signature.public_key);
            match retired {
                Some(r) => Ok(signature.originator(&department, &r.key.key_id)),
                None => keys.covered_originator(signature, record, None),
            }
        }
        other => other,
    }
}

/// Whether `originator` is a key `department` listed at `log_index` and has retired since.
fn retired_at(
    bundle: &EvidenceBundle,
    department: &str,
    log_index: u64,
    originator: Option<&Originator>,
) -> bool {
    let Some(o) = originator else {
        return false;
    };
    bundle
        .departments
        .iter()
        .filter(|d| d.id == department)
        .flat_map(|d| &d.retired_keys)
        .any(|r| {
            r.role == o.role
                && r.key.key_id == o.key_id
                && r.key.public_key == o.public_key
                && (r.from..r.until).contains(&log_index)
        })
}

/// A record's kind, for messages.
fn kind(record: &Record) -> &'static str {
    match record.content() {
        Record::Access(_) => "access",
        Record::LicenseIssued(_) => "license-issued",
        Record::LicenseStatus(_) => "license-status",
        Record::Exchange(_) => "exchange",
        Record::Config(c) => match c.change {
            ConfigChange::Policy { .. } => "policy",
            ConfigChange::Directory { .. } => "directory",
            ConfigChange::Membership { .. } => "membership",
        },
        Record::Sealed(_) => "sealed",
        Record::Authorized(_) => "authorized",
        Record::BatchSealed(_) => "sealed",
        Record::BatchSignature(_) => "batch-signature",
        Record::Governance(g) => match g.step {
            crate::record::GovernanceStep::Catalog(_) => "catalog",
        },
    }
}
