//! Originator seals: the signature of the party responsible for a record, and the rules that
//! say who that party is.
//!
//! A sealed record is written in format version 2: `[FORMAT_V2] ++ postcard(Record) ++
//! postcard(Seal)`, where the inner record is any version-1 record. The seal's Ed25519 signature
//! covers [`seal_message`]: a fixed context, the originator (role, department, key id, public
//! key) and the inner record's canonical version-1 bytes. So a seal cannot be moved to another
//! record, nor re-attributed to another department or key, without breaking the signature.
//!
//! Who must seal what ([`responsible`]):
//! - access and exchange records: a gateway key of the department whose side it is (the owner
//!   for an access record, the writing gateway for an exchange record);
//! - license issuance and status changes: a license key of the issuing department;
//! - config records: an operator key (checked by the cluster configuration, not here).
//!
//! [`OriginKeys`] holds the keys a directory publishes and checks a record's authority against
//! them; the state machine runs that check on every node and an inspector runs the same check
//! offline from an evidence bundle.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::Record;

/// First byte of a sealed record: version 2 of the record encoding.
pub const FORMAT_V2: u8 = 2;

/// Domain separation of seal signatures from every other signature made with the same keys
/// (checkpoint notes, licenses).
const SEAL_CONTEXT: &[u8] = b"qianlian/record-seal/v1\n";

/// The capacity in which a key seals a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignerRole {
    /// A department's gateway node, for its side of a data exchange.
    Gateway,
    /// A department's license key, for the licenses it issues and their status.
    LicenseIssuer,
    /// A cluster operator, for policy and directory changes ([`super::authorize`]).
    Operator,
}

impl SignerRole {
    /// The role's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SignerRole::Gateway => "gateway",
            SignerRole::LicenseIssuer => "license-issuer",
            SignerRole::Operator => "operator",
        }
    }
}

/// Who sealed a record: a key, the department it speaks for and in what role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Originator {
    pub role: SignerRole,
    /// Department id; for an operator, the operator's id.
    pub department: String,
    /// The key's id in the directory (or in the cluster configuration for an operator).
    pub key_id: String,
    /// The 32-byte Ed25519 public key.
    #[serde(with = "super::hex_hash")]
    pub public_key: [u8; 32],
}

/// An originator and its signature over [`seal_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub originator: Originator,
    /// 64-byte Ed25519 signature.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// A version-1 record and its originator's seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    pub record: Record,
    pub seal: Seal,
}

/// The bytes a seal signs: context, originator, the inner record's canonical bytes.
pub fn seal_message(originator: &Originator, record: &Record) -> Vec<u8> {
    let mut out = SEAL_CONTEXT.to_vec();
    // Serialising plain strings and arrays into a Vec cannot fail.
    out.extend(postcard::to_stdvec(originator).unwrap_or_default());
    out.extend(record.encode());
    out
}

/// Why a record's origin does not hold. The record's submitter is at fault (or forged it); no
/// retry helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The seal's public key is not an Ed25519 point.
    #[error("the seal's public key ({key_id}) is not an Ed25519 key")]
    BadKey { key_id: String },
    /// The signature does not verify over the record and its originator.
    #[error(
        "the originator signature by {department}/{key_id} does not verify: the record or its seal was altered"
    )]
    BadSignature { department: String, key_id: String },
    /// A batch signature covers a record that carries a seal of its own, or is not a
    /// department's record (configuration, another signature).
    #[error(
        "a batch signature covers only unsealed records of departments: a sealed, configuration or signature record may not be covered"
    )]
    NotCoverable,
    /// The record needs a seal (its department publishes keys) and has none.
    #[error("the record is not signed, but {department} publishes {role} keys: it must be")]
    Unsealed {
        department: String,
        role: &'static str,
    },
    /// The seal speaks for another department or in another role than the record needs.
    #[error(
        "the record must be signed by a {role} key of {department}, but is signed as {found_role} of {found_department}"
    )]
    WrongSigner {
        role: &'static str,
        department: String,
        found_role: &'static str,
        found_department: String,
    },
    /// A config record carries no operator signature, but the directory in force lists
    /// operator keys.
    #[error(
        "the {kind} change is not signed, but the directory in force lists operator keys: sign it with an operator key (`qianlian {kind} apply` signs with the operator's `.sign.key`)"
    )]
    UnsignedConfig { kind: &'static str },
    /// A config change was signed against another version than the one in force (replayed,
    /// or another change came first).
    #[error(
        "the {kind} change was signed to replace version {replaces}, but version {in_force} is in force: fetch the current {kind} and sign the change again"
    )]
    Stale {
        kind: &'static str,
        replaces: u64,
        in_force: u64,
    },
    /// Fewer different operators signed than the change needs.
    #[error(
        "the {kind} change needs the signatures of {needed} different operators ({why}), but has {found}: have another operator add theirs (`qianlian {kind} apply --cosign`)"
    )]
    TooFewSignatures {
        kind: &'static str,
        needed: usize,
        found: usize,
        why: String,
    },
    /// One key signed twice.
    #[error("key {key_id} signed the change twice")]
    DuplicateSignature { key_id: String },
    /// The key is not one the directory in force publishes for that department and role.
    #[error(
        "key {key_id} of {department} is not among the {role} keys the directory in force lists at this position"
    )]
    UnknownKey {
        key_id: String,
        role: &'static str,
        department: String,
    },
    /// A governance step about a dataset by a department that does not own it.
    #[error(
        "{department} does not own dataset `{dataset}`: {}",
        match owner {
            Some(owner) => format!("the directory in force lists it under {owner}, who alone decides over it"),
            None => "the directory in force does not list it; an operator adds it to its owner's datasets (`qianlian directory apply`)".to_owned(),
        }
    )]
    NotOwner {
        dataset: String,
        department: String,
        owner: Option<String>,
    },
    /// A catalog entry that does not replace the one in force.
    #[error(
        "catalog entry version {found} of `{dataset}` does not follow version {in_force} in force: publish version {}",
        in_force + 1
    )]
    CatalogVersion {
        dataset: String,
        found: u64,
        in_force: u64,
    },
    /// A governance step that is not under its department's batch signature.
    #[error(
        "a governance step of {department} applies only under a batch signature by one of its gateway keys, made when its gateway writes the step"
    )]
    GovernanceUnsigned { department: String },
    /// A governance step while the cluster has no replicated directory to say who owns what.
    #[error(
        "no directory is in force, so nobody owns dataset `{dataset}` yet: an operator applies the directory first (`qianlian directory apply`)"
    )]
    NoDirectory { dataset: String },
}

impl SealedRecord {
    /// Seal `record` (a version-1 record) with `key` as `originator`, whose `public_key` is
    /// replaced by `key`'s.
    pub fn seal(record: Record, mut originator: Originator, key: &SigningKey) -> SealedRecord {
        originator.public_key = key.verifying_key().to_bytes();
        let signature = key.sign(&seal_message(&originator, &record));
        SealedRecord {
            record,
            seal: Seal {
                originator,
                signature: signature.to_bytes().to_vec(),
            },
        }
    }

    /// Check the signature alone (not whether the key may seal this record: [`OriginKeys`]).
    pub fn verify_signature(&self) -> Result<(), OriginError> {
        let o = &self.seal.originator;
        verify_by(o, &seal_message(o, &self.record), &self.seal.signature)
    }
}

/// Check `signature` (64 bytes, strict Ed25519) over `message` by `signer`'s public key; a
/// failure names the signer.
pub(super) fn verify_by(
    signer: &Originator,
    message: &[u8],
    signature: &[u8],
) -> Result<(), OriginError> {
    let bad = || OriginError::BadSignature {
        department: signer.department.clone(),
        key_id: signer.key_id.clone(),
    };
    let key = VerifyingKey::from_bytes(&signer.public_key).map_err(|_| OriginError::BadKey {
        key_id: signer.key_id.clone(),
    })?;
    let bytes: [u8; 64] = signature.try_into().map_err(|_| bad())?;
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| bad())
}

/// The party that must seal `record`: its role and department. `issuer` is the department that
/// issued the license a status change names, as the log says (`None`: not issued, and the
/// caller's department answers for it).
pub fn responsible(record: &Record, issuer: Option<&str>) -> (SignerRole, String) {
    match record.content() {
        Record::Access(r) => (SignerRole::Gateway, r.owner.clone()),
        Record::Exchange(r) => (SignerRole::Gateway, r.gateway.clone()),
        Record::LicenseIssued(r) => (SignerRole::LicenseIssuer, r.department.clone()),
        Record::LicenseStatus(r) => (
            SignerRole::LicenseIssuer,
            issuer.unwrap_or(&r.caller.department).to_owned(),
        ),
        Record::Governance(r) => (SignerRole::Gateway, r.department.clone()),
        Record::Config(_)
        | Record::Sealed(_)
        | Record::Authorized(_)
        | Record::BatchSealed(_)
        | Record::BatchSignature(_) => (SignerRole::Operator, String::new()),
    }
}

/// One key a directory publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginKey {
    pub role: SignerRole,
    pub department: String,
    pub key_id: String,
    #[serde(with = "super::hex_hash")]
    pub public_key: [u8; 32],
}

/// The keys that may seal records, as one version of the directory publishes them.
///
/// A department that publishes gateway keys is *sealed*: every record it answers for (its
/// exchange records, its licenses and their status) must carry a seal by one of its keys of the
/// right role. A department that publishes none (a directory written before seals existed) may
/// still write unsealed records, so that old logs apply as they always did; a seal it does
/// carry is checked all the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginKeys {
    pub keys: Vec<OriginKey>,
    /// Every department the directory lists, keys or not: a change that removes one needs
    /// more operators ([`super::authorize::signatures_needed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<String>,
    /// Every dataset the directory lists, with the department that owns it, sorted by dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetOwner>,
}

/// A dataset and its owner, as the directory lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetOwner {
    pub dataset: String,
    pub department: String,
}

impl OriginKeys {
    /// The department that owns `dataset`, if the directory lists it.
    pub fn owner_of(&self, dataset: &str) -> Option<&str> {
        self.datasets
            .binary_search_by(|d| d.dataset.as_str().cmp(dataset))
            .ok()
            .map(|i| self.datasets[i].department.as_str())
    }

    /// Whether a governance step, sealed with authority ([`OriginKeys::check_authority`]),
    /// may be taken: its department owns the dataset, and a catalog entry is the next version
    /// of that dataset's entry (`catalog_version`: the version in force, 0 for none).
    pub fn check_governance(
        &self,
        record: &super::GovernanceRecord,
        catalog_version: u64,
    ) -> Result<(), OriginError> {
        let dataset = record.dataset();
        let owner = self.owner_of(dataset);
        if owner != Some(record.department.as_str()) {
            return Err(OriginError::NotOwner {
                dataset: dataset.to_owned(),
                department: record.department.clone(),
                owner: owner.map(str::to_owned),
            });
        }
        match &record.step {
            super::GovernanceStep::Catalog(entry) if entry.version != catalog_version + 1 => {
                Err(OriginError::CatalogVersion {
                    dataset: dataset.to_owned(),
                    found: entry.version,
                    in_force: catalog_version,
                })
            }
            super::GovernanceStep::Catalog(_) => Ok(()),
        }
    }

    /// Whether `department` publishes gateway keys, which makes seals compulsory for it.
    pub fn is_sealed(&self, department: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.role == SignerRole::Gateway && k.department == department)
    }

    /// Check `record`'s seal (signature and authority) against these keys. `issuer` as in
    /// [`responsible`]. Config records are not checked here.
    pub fn check(&self, record: &Record, issuer: Option<&str>) -> Result<(), OriginError> {
        match record {
            Record::Sealed(sealed) => sealed.verify_signature()?,
            Record::BatchSealed(sealed) => sealed.verify_signature()?,
            _ => {}
        }
        self.check_authority(record, issuer)
    }

    /// [`OriginKeys::check`] without the signature: whether the record's seal, if its
    /// signature verifies, speaks with authority. For a caller that verified the signature
    /// already (it depends on the record alone).
    pub fn check_authority(
        &self,
        record: &Record,
        issuer: Option<&str>,
    ) -> Result<(), OriginError> {
        self.check_authority_by(record, issuer, record.originator())
    }

    /// The originator a batch signature speaks as for `record`, one of the records it covers:
    /// its key, in its role, as listed for the department that answers for the record. Errs
    /// when the directory lists no such key, or the record carries a seal of its own (a covered
    /// record is unsealed).
    pub fn covered_originator(
        &self,
        signature: &super::BatchSignatureRecord,
        record: &Record,
        issuer: Option<&str>,
    ) -> Result<Originator, OriginError> {
        let (_, department) = responsible(record, issuer);
        if !matches!(
            record,
            Record::Access(_)
                | Record::Exchange(_)
                | Record::LicenseIssued(_)
                | Record::LicenseStatus(_)
                | Record::Governance(_)
        ) {
            return Err(OriginError::NotCoverable);
        }
        let key = self.keys.iter().find(|k| {
            k.role == signature.role
                && k.department == department
                && k.public_key == signature.public_key
        });
        match key {
            Some(k) => Ok(signature.originator(&department, &k.key_id)),
            None => Err(OriginError::UnknownKey {
                key_id: hex::encode(&signature.public_key[..8]),
                role: signature.role.as_str(),
                department,
            }),
        }
    }

    /// [`OriginKeys::check_authority`] with the record's originator given (`None`: unsealed),
    /// for a record covered by a batch signature.
    pub fn check_authority_by(
        &self,
        record: &Record,
        issuer: Option<&str>,
        originator: Option<&Originator>,
    ) -> Result<(), OriginError> {
        let (role, department) = responsible(record, issuer);
        if role == SignerRole::Operator {
            return Ok(());
        }
        let Some(o) = originator else {
            // Governance steps are newer than every directory: always sealed.
            let always = matches!(record.content(), Record::Governance(_));
            return if always || self.is_sealed(&department) {
                Err(OriginError::Unsealed {
                    department,
                    role: role.as_str(),
                })
            } else {
                Ok(())
            };
        };
        if o.role != role || o.department != department {
            return Err(OriginError::WrongSigner {
                role: role.as_str(),
                department,
                found_role: o.role.as_str(),
                found_department: o.department.clone(),
            });
        }
        let listed = self.keys.iter().any(|k| {
            k.role == role
                && k.department == department
                && k.key_id == o.key_id
                && k.public_key == o.public_key
        });
        if !listed {
            return Err(OriginError::UnknownKey {
                key_id: o.key_id.clone(),
                role: role.as_str(),
                department,
            });
        }
        Ok(())
    }
}

/// Serialises bytes as hex in human-readable formats (JSON) and as a byte string in postcard.
pub(super) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(b))
        } else {
            s.serialize_bytes(b)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode(&s).map_err(serde::de::Error::custom)
        } else {
            // postcard's byte strings: a length and the bytes, as `Vec<u8>` reads them.
            <Vec<u8> as Deserialize>::deserialize(d)
        }
    }
}
