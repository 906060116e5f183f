//! The trust bundle: everything a verifier needs to judge licenses offline, exported by the
//! cluster (`qianlian license trust-bundle`) and carried by the verifying app.
//!
//! JSON shape (version 1; unknown fields are refused, bytes are standard base64):
//!
//! ```json
//! {
//!   "version": 1,
//!   "origin": "qianlian.example/notary",
//!   "departments": [
//!     { "id": "market-regulation", "name": "贵州省市场监督管理局",
//!       "keys": [ { "key_id": "market-regulation-2026", "public_key": "…32 bytes…" } ],
//!       "may_issue": ["business-license"] }
//!   ],
//!   "node_keys": ["node-a+1f2e3d4c+AU…", "node-b+…", "node-c+…"],
//!   "min_cosigners": 2,
//!   "checkpoint": "qianlian.example/notary\n1234\n…\n\n— node-a …\n— node-b …\n",
//!   "status_list": "qianlian.example/notary\nqianlian license-status v1\ntree 1234 …\n…"
//! }
//! ```
//!
//! The bundle itself is unsigned: whoever hands it over is trusted for the keys in it, as for any
//! trust anchor. Its checkpoint and status list are signed, and [`TrustBundle::open`] accepts them
//! only with `min_cosigners` distinct node signatures, from the named log, and with the status
//! list bound to the checkpoint (same tree size and root). The status list's time therefore dates
//! both: that is how old the bundle's knowledge is, while checkpoints stay plain C2SP.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::claims::{LicenseType, check_identifier};
use super::evidence::VersionProbe;
use super::serde_bytes;
use super::status::{StatusListError, VerifiedStatusList, open_status_list};
use crate::checkpoint::{CheckpointError, VerifiedCheckpoint, open_checkpoint};
use crate::note::{NoteError, NoteVerifier};

/// The format version of [`TrustBundleFile`] JSON.
pub const TRUST_BUNDLE_VERSION: u32 = 1;

/// A trust bundle as stored and exchanged: plain data, not yet checked. [`TrustBundle::open`]
/// checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBundleFile {
    /// Always [`TRUST_BUNDLE_VERSION`].
    pub version: u32,
    /// The log's origin line, as in its checkpoints.
    pub origin: String,
    /// The departments that issue licenses.
    pub departments: Vec<DepartmentEntry>,
    /// The nodes' checkpoint verifier keys (`<name>+<hex id>+<base64 key>`).
    pub node_keys: Vec<String>,
    /// How many distinct node signatures a checkpoint or status list needs (k of n).
    pub min_cosigners: usize,
    /// A cosigned checkpoint (signed note text).
    pub checkpoint: String,
    /// The status list (signed note text) bound to that checkpoint.
    pub status_list: String,
}

/// A department that issues licenses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentEntry {
    /// The department id used in licenses and the directory (e.g. `market-regulation`).
    pub id: String,
    /// The name people read (e.g. 贵州省市场监督管理局).
    pub name: String,
    /// Its license signing keys; several during a rotation.
    pub keys: Vec<DepartmentKey>,
    /// The license types it may issue.
    pub may_issue: Vec<LicenseType>,
}

/// One Ed25519 license signing key of a department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentKey {
    /// The key id, unique across the bundle; licenses name it as COSE `kid`.
    pub key_id: String,
    /// The 32-byte Ed25519 public key.
    #[serde(with = "serde_bytes::bytes")]
    pub public_key: Vec<u8>,
}

impl DepartmentKey {
    /// The entry for `key` under `key_id`.
    pub fn new(key_id: impl Into<String>, key: &VerifyingKey) -> Self {
        Self {
            key_id: key_id.into(),
            public_key: key.as_bytes().to_vec(),
        }
    }
}

/// Why a trust bundle was refused. Whoever exported or edited it is at fault; none is transient:
/// fetch a fresh bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustBundleError {
    /// Not JSON of the documented shape.
    #[error("trust bundle is not valid JSON of the documented shape: {reason}")]
    Json {
        /// What the JSON parser reported, with line and column.
        reason: String,
    },

    /// A bundle version this verifier does not read.
    #[error("trust bundle version {version} is not supported: this verifier reads version 1")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },

    /// The origin is empty or has control characters.
    #[error("trust bundle origin must be a non-empty line without control characters")]
    InvalidOrigin,

    /// A department entry breaks a rule (id, name).
    #[error("trust bundle department {id:?}: {reason}")]
    InvalidDepartment {
        /// The department id as written.
        id: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// Two department entries with one id.
    #[error("trust bundle lists department {id:?} twice")]
    DuplicateDepartment {
        /// The repeated id.
        id: String,
    },

    /// A department key that is not a valid Ed25519 public key, or has an invalid id.
    #[error("trust bundle key {key_id:?}: {reason}")]
    InvalidKey {
        /// The key id as written.
        key_id: String,
        /// What is wrong.
        reason: String,
    },

    /// Two keys with one id: a license's `kid` would not name one key.
    #[error("trust bundle lists key id {key_id:?} twice")]
    DuplicateKeyId {
        /// The repeated key id.
        key_id: String,
    },

    /// A node key string that does not parse.
    #[error("trust bundle node key #{index}: {source}")]
    NodeKey {
        /// 0-based position in `node_keys`.
        index: usize,
        /// Why it was refused.
        source: NoteError,
    },

    /// `min_cosigners` is 0 or more than the number of distinct node keys.
    #[error(
        "trust bundle demands {k} cosigners out of {n} distinct node keys: k must be between 1 and n"
    )]
    InvalidThreshold {
        /// `min_cosigners`.
        k: usize,
        /// Distinct node key names.
        n: usize,
    },

    /// The checkpoint does not open with the node keys, from this origin, with k signers.
    #[error("trust bundle checkpoint refused: {0}")]
    Checkpoint(#[source] CheckpointError),

    /// The status list does not open with the node keys, from this origin, with k signers.
    #[error("trust bundle status list refused: {0}")]
    StatusList(#[source] StatusListError),

    /// The status list is not bound to the checkpoint: it reflects another tree head.
    #[error(
        "trust bundle status list reflects tree size {status_size}, but its checkpoint is of size {checkpoint_size} (or the roots differ): export them together"
    )]
    StatusListMismatch {
        /// Size of the checkpoint.
        checkpoint_size: u64,
        /// Size named by the status list.
        status_size: u64,
    },
}

/// A checked trust bundle, ready for [`super::verify_offline`].
#[derive(Debug, Clone)]
pub struct TrustBundle {
    file: TrustBundleFile,
    nodes: Vec<NoteVerifier>,
    checkpoint: VerifiedCheckpoint,
    status: VerifiedStatusList,
    /// Key id → (index into `file.departments`, key).
    issuer_keys: BTreeMap<String, (usize, VerifyingKey)>,
}

impl TrustBundle {
    /// Reads and checks a bundle from its JSON form.
    ///
    /// # Errors
    /// [`TrustBundleError::Json`], [`TrustBundleError::UnsupportedVersion`], then as
    /// [`TrustBundle::open`].
    pub fn from_json(json: &str) -> Result<Self, TrustBundleError> {
        let json_error = |e: serde_json::Error| TrustBundleError::Json {
            reason: e.to_string(),
        };
        let version = serde_json::from_str::<VersionProbe>(json)
            .map_err(json_error)?
            .version;
        if version != TRUST_BUNDLE_VERSION {
            return Err(TrustBundleError::UnsupportedVersion { version });
        }
        Self::open(serde_json::from_str(json).map_err(json_error)?)
    }

    /// Checks a bundle: version, unique department ids and key ids, valid keys, a k-of-n
    /// threshold that can be met, the checkpoint and status list signed by k node keys for this
    /// origin, and the status list bound to the checkpoint.
    ///
    /// # Errors
    /// Every variant of [`TrustBundleError`] but `Json`.
    pub fn open(file: TrustBundleFile) -> Result<Self, TrustBundleError> {
        if file.version != TRUST_BUNDLE_VERSION {
            return Err(TrustBundleError::UnsupportedVersion {
                version: file.version,
            });
        }
        if file.origin.is_empty() || file.origin.chars().any(|c| c < ' ') {
            return Err(TrustBundleError::InvalidOrigin);
        }
        let issuer_keys = index_issuer_keys(&file.departments)?;
        let nodes = file
            .node_keys
            .iter()
            .enumerate()
            .map(|(index, vkey)| {
                NoteVerifier::from_vkey(vkey)
                    .map_err(|source| TrustBundleError::NodeKey { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = nodes
            .iter()
            .map(NoteVerifier::name)
            .collect::<BTreeSet<_>>()
            .len();
        let k = file.min_cosigners;
        if k == 0 || k > n {
            return Err(TrustBundleError::InvalidThreshold { k, n });
        }
        let checkpoint = open_checkpoint(&file.checkpoint, &nodes)
            .and_then(|c| c.require_origin(&file.origin))
            .and_then(|c| c.require_signers(k))
            .map_err(TrustBundleError::Checkpoint)?;
        let status = open_status_list(&file.status_list, &nodes)
            .and_then(|s| s.require_origin(&file.origin))
            .and_then(|s| s.require_signers(k))
            .map_err(TrustBundleError::StatusList)?;
        if (status.list.tree_size, status.list.root)
            != (checkpoint.checkpoint.size, checkpoint.checkpoint.root)
        {
            return Err(TrustBundleError::StatusListMismatch {
                checkpoint_size: checkpoint.checkpoint.size,
                status_size: status.list.tree_size,
            });
        }
        Ok(Self {
            file,
            nodes,
            checkpoint,
            status,
            issuer_keys,
        })
    }

    /// The bundle as it was read.
    pub fn file(&self) -> &TrustBundleFile {
        &self.file
    }

    /// The pretty-printed JSON form.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and arrays cannot fail.
        serde_json::to_string_pretty(&self.file).unwrap_or_default()
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.file.origin
    }

    /// The node keys that sign checkpoints and status lists.
    pub fn node_verifiers(&self) -> &[NoteVerifier] {
        &self.nodes
    }

    /// k: distinct node signatures required.
    pub fn min_cosigners(&self) -> usize {
        self.file.min_cosigners
    }

    /// The bundle's verified checkpoint.
    pub fn checkpoint(&self) -> &VerifiedCheckpoint {
        &self.checkpoint
    }

    /// The bundle's verified status list.
    pub fn status_list(&self) -> &VerifiedStatusList {
        &self.status
    }

    /// When the bundle's knowledge was current: the status list's time (Unix seconds).
    pub fn as_of(&self) -> i64 {
        self.status.list.time
    }

    /// The department entry with this id.
    pub fn department(&self, id: &str) -> Option<&DepartmentEntry> {
        self.file.departments.iter().find(|d| d.id == id)
    }

    /// The department that owns the key `key_id`, and the key.
    pub fn issuer_key(&self, key_id: &str) -> Option<(&DepartmentEntry, &VerifyingKey)> {
        self.issuer_keys
            .get(key_id)
            .map(|(i, key)| (&self.file.departments[*i], key))
    }

    /// Opens a checkpoint (from a holder's evidence, say) with this bundle's rules: the node
    /// keys, the origin, k signers.
    ///
    /// # Errors
    /// As [`open_checkpoint`], [`VerifiedCheckpoint::require_origin`] and
    /// [`VerifiedCheckpoint::require_signers`].
    pub fn open_checkpoint(&self, note: &str) -> Result<VerifiedCheckpoint, CheckpointError> {
        open_checkpoint(note, &self.nodes)
            .and_then(|c| c.require_origin(&self.file.origin))
            .and_then(|c| c.require_signers(self.file.min_cosigners))
    }
}

fn index_issuer_keys(
    departments: &[DepartmentEntry],
) -> Result<BTreeMap<String, (usize, VerifyingKey)>, TrustBundleError> {
    let mut ids = BTreeSet::new();
    let mut keys = BTreeMap::new();
    for (i, dept) in departments.iter().enumerate() {
        let invalid = |reason: String| TrustBundleError::InvalidDepartment {
            id: dept.id.clone(),
            reason,
        };
        check_identifier("id", &dept.id).map_err(|e| invalid(e.to_string()))?;
        if dept.name.trim().is_empty() || dept.name.chars().any(char::is_control) {
            return Err(invalid(
                "the name must be non-empty, without control characters".into(),
            ));
        }
        if !ids.insert(dept.id.as_str()) {
            return Err(TrustBundleError::DuplicateDepartment {
                id: dept.id.clone(),
            });
        }
        for key in &dept.keys {
            let invalid_key = |reason: String| TrustBundleError::InvalidKey {
                key_id: key.key_id.clone(),
                reason,
            };
            check_identifier("key_id", &key.key_id).map_err(|e| invalid_key(e.to_string()))?;
            let bytes: [u8; 32] = key
                .public_key
                .as_slice()
                .try_into()
                .map_err(|_| invalid_key("an Ed25519 public key is 32 bytes".into()))?;
            let public = VerifyingKey::from_bytes(&bytes)
                .ok()
                .filter(|k| !k.is_weak())
                .ok_or_else(|| {
                    invalid_key("not a valid Ed25519 public key of full order".into())
                })?;
            if keys.insert(key.key_id.clone(), (i, public)).is_some() {
                return Err(TrustBundleError::DuplicateKeyId {
                    key_id: key.key_id.clone(),
                });
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
