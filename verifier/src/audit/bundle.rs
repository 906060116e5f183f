//! Evidence bundles: records of the log with their proofs, as an inspector hands them to someone
//! who trusts nobody.
//!
//! JSON shape (version 1; unknown fields are refused; bytes are standard base64, proof hashes
//! lowercase hex):
//!
//! ```json
//! {
//!   "version": 1,
//!   "created_unix_ms": 1770000000000,
//!   "query": "reads of market-regulation/enterprise-registration, 2026-02-01 to 2026-02-28",
//!   "origin": "qianlian.example/notary",
//!   "checkpoint": "qianlian.example/notary\n1234\n…\n\n— node-a …\n— node-b …\n",
//!   "node_keys": ["node-a+1f2e3d4c+AU…", "node-b+…", "node-c+…"],
//!   "min_cosigners": 2,
//!   "departments": [
//!     { "id": "market-regulation", "name": "贵州省市场监督管理局",
//!       "keys": [ { "key_id": "market-regulation-2026", "public_key": "…32 bytes…" } ],
//!       "node_keys": [ { "key_id": "market-regulation.qianlian.example", "public_key": "…" } ] }
//!   ],
//!   "records": [
//!     { "log_index": 17, "record": "AQM…", "record_json": { "Exchange": { … } },
//!       "proof": ["5f1c…", "…"] }
//!   ],
//!   "policies": [ { "version": 1, "log_index": 0, "record": "AQQ…", "proof": ["…"] } ]
//! }
//! ```
//!
//! Every proof is an inclusion proof against the checkpoint's tree size. `policies` holds every
//! policy version from 1 up to the highest one a bundled exchange record was decided under, so
//! the reader can see the rules that applied. `record_json` is a convenience for people; the
//! check refuses a bundle whose JSON view differs from the bytes the log committed to.
//!
//! A record sealed as one of a batch under a batch signature record (format version 5) carries
//! `signed_by`: the signature record with its own inclusion proof, and the record's path among
//! the records the signature covers; the signature must cover the record's log index and
//! verify over that path, and its key must be listed as below.
//!
//! A sealed record (format version 2) proves its origin offline: its seal's signature must
//! verify over the record, and its key must be one the bundle lists for the department that
//! must seal it (a gateway node key of the department whose side an exchange record is; the
//! issuer's license key for license records), else the check fails naming the record. A
//! department whose bundle entry lists no node keys (a log from before seals) has unsealed
//! exchange records, which still check. The keys are those of the directory in force when the
//! bundle was exported.
//!
//! Without pinned keys ([`TrustedKeys`]) the bundle vouches for itself: the check then only shows
//! that the records are consistent with a checkpoint signed by the keys the bundle names, and
//! [`BundleReport::keys_pinned`] says so.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::license::evidence::VersionProbe;
use crate::license::serde_bytes;
use crate::license::trust::{DepartmentKey, TrustBundle, TrustBundleFile};
use crate::note::NoteVerifier;
use crate::record::{DecodeError, Record};

pub(super) mod check;
mod error;

pub use error::{BundleError, Entry};

/// The format version of [`EvidenceBundle`] JSON.
pub const EVIDENCE_BUNDLE_VERSION: u32 = 1;

/// An evidence bundle as stored and exchanged: plain data, not yet checked. [`check_bundle`](crate::audit::check_bundle)
/// checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    /// Always [`EVIDENCE_BUNDLE_VERSION`].
    pub version: u32,
    /// When the bundle was exported, Unix milliseconds (informational).
    pub created_unix_ms: u64,
    /// What was asked of the log, for people (informational).
    pub query: String,
    /// The log's origin line, as in its checkpoints.
    pub origin: String,
    /// A cosigned checkpoint (signed note text); every proof is against its tree size.
    pub checkpoint: String,
    /// The nodes' checkpoint verifier keys (`<name>+<hex id>+<base64 key>`), used when the
    /// reader pins none.
    pub node_keys: Vec<String>,
    /// How many distinct node signatures the checkpoint needs (k of n), when none are pinned.
    pub min_cosigners: usize,
    /// The departments named by the records, with their license signing keys.
    pub departments: Vec<BundleDepartment>,
    /// The records the query found.
    pub records: Vec<BundleRecord>,
    /// The policy versions the records were decided under, from version 1.
    pub policies: Vec<BundlePolicy>,
}

/// A department as the bundle names it: the directory entry without what only licenses need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleDepartment {
    /// The department id used in records (e.g. `market-regulation`).
    pub id: String,
    /// The name people read (e.g. 贵州省市场监督管理局).
    pub name: String,
    /// Its license signing keys.
    pub keys: Vec<DepartmentKey>,
    /// Its gateway node keys, which seal its side of exchanges (absent from bundles of logs
    /// before seals, and for departments that publish none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_keys: Vec<DepartmentKey>,
    /// The log index from which the department's records must be sealed (the directory
    /// version that made seals compulsory for it); records below it may be unsealed. Absent
    /// with `node_keys`: from the start of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_from: Option<u64>,
    /// Keys the department published in earlier directory versions and no longer does, each
    /// with the log positions between which it was in force: the records it sealed then still
    /// prove their origin after a rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_keys: Vec<RetiredKey>,
}

/// A key a department no longer publishes, and when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    /// What the key sealed: `gateway` (node keys) or `license-issuer` (license keys).
    pub role: crate::record::SignerRole,
    pub key: DepartmentKey,
    /// Log index of the directory version from which it was listed.
    pub from: u64,
    /// Log index of the directory version that no longer listed it: records from here on may
    /// not carry its seal.
    pub until: u64,
}

/// One record of the log with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRecord {
    /// Its 0-based position in the log.
    pub log_index: u64,
    /// The canonical bytes the log committed to.
    #[serde(with = "serde_bytes::bytes")]
    pub record: Vec<u8>,
    /// The decoded record as JSON, for people; must equal what `record` decodes to. An object
    /// that repeats a key is refused when read.
    #[serde(deserialize_with = "super::unique_keys::deserialize")]
    pub record_json: serde_json::Value,
    /// Inclusion proof of the record's leaf against the checkpoint.
    #[serde(with = "super::hex_hashes")]
    pub proof: Vec<Hash>,
    /// For a record sealed as one of a batch under a batch signature record (format version
    /// 5, written after the batch's records): that record and where this one sits among those
    /// it covers. Absent for records sealed alone, or unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<BundleBatchSignature>,
}

/// The batch signature record that covers a bundled record, with what proves it covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleBatchSignature {
    /// Its 0-based position in the log: it covers the `count` records just before it.
    pub log_index: u64,
    /// Its canonical bytes.
    #[serde(with = "serde_bytes::bytes")]
    pub record: Vec<u8>,
    /// Inclusion proof of its leaf against the checkpoint.
    #[serde(with = "super::hex_hashes")]
    pub proof: Vec<Hash>,
    /// Inclusion path of the bundled record's leaf among the leaves the signature covers.
    #[serde(with = "super::hex_hashes")]
    pub path: Vec<Hash>,
}

/// One version of the replicated access policy, as logged, with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePolicy {
    /// The policy version: the number of policy records up to and including this one.
    ///
    /// [`check_bundle`](crate::audit::check_bundle) checks that the versions run 1, 2, … in log order and that each entry
    /// is a policy record of the log at its index. It cannot check the number itself: a policy
    /// record does not carry it, and a proof of inclusion says nothing of the policy records
    /// left out, so a bundle that omits version 1 can show version 2's record as version 1.
    pub version: u64,
    /// Its 0-based position in the log.
    pub log_index: u64,
    /// The canonical bytes of the policy's Config record.
    #[serde(with = "serde_bytes::bytes")]
    pub record: Vec<u8>,
    /// Inclusion proof of the record's leaf against the checkpoint.
    #[serde(with = "super::hex_hashes")]
    pub proof: Vec<Hash>,
}

/// The checkpoint keys a reader trusts from elsewhere than the bundle (a license trust bundle, a
/// configuration file): the log's origin, the node keys and the k of n threshold.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    origin: String,
    verifiers: Vec<NoteVerifier>,
    min_cosigners: usize,
}

impl TrustedKeys {
    /// Pins `verifiers` for the log named `origin`, demanding `min_cosigners` distinct signers.
    ///
    /// # Errors
    /// [`BundleError::InvalidThreshold`] unless `1 <= min_cosigners <=` distinct key names.
    pub fn new(
        origin: impl Into<String>,
        verifiers: Vec<NoteVerifier>,
        min_cosigners: usize,
    ) -> Result<Self, BundleError> {
        check_threshold(&verifiers, min_cosigners)?;
        Ok(Self {
            origin: origin.into(),
            verifiers,
            min_cosigners,
        })
    }

    /// As [`TrustedKeys::new`], from verifier key strings.
    ///
    /// # Errors
    /// [`BundleError::NodeKey`] and [`BundleError::InvalidThreshold`].
    pub fn from_vkeys(
        origin: impl Into<String>,
        vkeys: &[String],
        min_cosigners: usize,
    ) -> Result<Self, BundleError> {
        Self::new(origin, parse_vkeys(vkeys)?, min_cosigners)
    }

    /// The origin, node keys and threshold of a license trust bundle file (its checkpoint and
    /// status list are not needed here and not checked).
    ///
    /// # Errors
    /// As [`TrustedKeys::from_vkeys`].
    pub fn from_trust_bundle(file: &TrustBundleFile) -> Result<Self, BundleError> {
        Self::from_vkeys(file.origin.clone(), &file.node_keys, file.min_cosigners)
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The pinned node keys.
    pub fn verifiers(&self) -> &[NoteVerifier] {
        &self.verifiers
    }

    /// The k of n threshold.
    pub fn min_cosigners(&self) -> usize {
        self.min_cosigners
    }
}

impl From<&TrustBundle> for TrustedKeys {
    /// The keys of a trust bundle that was already checked.
    fn from(bundle: &TrustBundle) -> Self {
        Self {
            origin: bundle.origin().to_owned(),
            verifiers: bundle.node_verifiers().to_vec(),
            min_cosigners: bundle.min_cosigners(),
        }
    }
}

pub(crate) fn parse_vkeys(vkeys: &[String]) -> Result<Vec<NoteVerifier>, BundleError> {
    vkeys
        .iter()
        .enumerate()
        .map(|(index, vkey)| {
            NoteVerifier::from_vkey(vkey).map_err(|source| BundleError::NodeKey { index, source })
        })
        .collect()
}

pub(crate) fn check_threshold(verifiers: &[NoteVerifier], k: usize) -> Result<(), BundleError> {
    let mut names: Vec<&str> = verifiers.iter().map(NoteVerifier::name).collect();
    names.sort_unstable();
    names.dedup();
    if k == 0 || k > names.len() {
        return Err(BundleError::InvalidThreshold { k, n: names.len() });
    }
    Ok(())
}

/// What a bundle that passed [`check_bundle`](crate::audit::check_bundle) proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// The log the checkpoint names.
    pub origin: String,
    /// The checkpoint's tree size: every record is among its first `tree_size` entries.
    pub tree_size: u64,
    /// The checkpoint's root hash.
    pub root: Hash,
    /// Distinct names of the trusted keys that signed the checkpoint.
    pub signers: Vec<String>,
    /// The threshold that was demanded.
    pub min_cosigners: usize,
    /// Whether the keys came from the reader ([`TrustedKeys`]) rather than from the bundle
    /// itself; when false, the bundle only vouches for itself.
    pub keys_pinned: bool,
    /// Number of records checked.
    pub records_checked: usize,
    /// Number of policy versions checked.
    pub policies_checked: usize,
    /// Earliest and latest record time, Unix milliseconds; `None` without records.
    pub time_range_unix_ms: Option<(u64, u64)>,
    /// The originator of every sealed record, by log index: whose key vouches for it, checked
    /// against the keys the bundle lists (or vouches for itself, as `keys_pinned` says).
    pub origins: Vec<(u64, crate::record::Originator)>,
}

impl EvidenceBundle {
    /// Reads a bundle from JSON. Only the shape is checked here: see [`check_bundle`](crate::audit::check_bundle).
    ///
    /// # Errors
    /// [`BundleError::Json`] (naming the line, column and field) and
    /// [`BundleError::UnsupportedVersion`].
    pub fn from_json(json: &str) -> Result<Self, BundleError> {
        let json_error = |e: serde_json::Error| BundleError::Json {
            reason: e.to_string(),
        };
        let version = serde_json::from_str::<VersionProbe>(json)
            .map_err(json_error)?
            .version;
        if version != EVIDENCE_BUNDLE_VERSION {
            return Err(BundleError::UnsupportedVersion { version });
        }
        serde_json::from_str(json).map_err(json_error)
    }

    /// The pretty-printed JSON form.
    pub fn to_json_pretty(&self) -> String {
        // Strings, integers, arrays and JSON values with string keys always serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The highest policy version any decodable bundled record was decided under (0: none, or
    /// only node-local policy files): the bundle must carry policies 1 to this.
    pub fn highest_policy_version(&self) -> u64 {
        self.records
            .iter()
            .filter_map(|r| Record::decode(&r.record).ok())
            .map(|r| policy_version(&r))
            .max()
            .unwrap_or(0)
    }
}

impl BundleRecord {
    /// The entry for the canonical `record` bytes at `log_index`, with its JSON view.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a record.
    pub fn new(log_index: u64, record: Vec<u8>, proof: Vec<Hash>) -> Result<Self, DecodeError> {
        let record_json = json_view(&Record::decode(&record)?);
        Ok(Self {
            log_index,
            record,
            record_json,
            proof,
            signed_by: None,
        })
    }
}

/// The JSON view of a record, as `record_json` must hold it.
pub fn json_view(record: &Record) -> serde_json::Value {
    // A record has string keys, integers and strings only: it always serialises.
    serde_json::to_value(record).unwrap_or_default()
}

/// The replicated policy version a record was decided under (0: none, or node-local files).
pub fn policy_version(record: &Record) -> u64 {
    match record.content() {
        Record::Exchange(r) => r.policy_version,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
