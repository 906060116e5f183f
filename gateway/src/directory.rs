//! The department directory: which departments exist, their names, and the public keys their
//! e-licenses are signed with. Loaded from `departments.toml` (written by `qianlian pki init`);
//! every node of a cluster uses the same file.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use qianlian_verifier::license::DepartmentKey;
use serde::{Deserialize, Serialize};

/// The directory file could not be used. The operator's file is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// One department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    pub id: String,
    /// The name people read, e.g. 贵州省市场监督管理局.
    pub name: String,
    /// License signing keys (several during a rotation).
    #[serde(default)]
    pub keys: Vec<DepartmentKey>,
}

/// All departments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    #[serde(default)]
    pub department: Vec<DirectoryEntry>,
}

impl Directory {
    /// Load and check a directory file: unique department ids and key ids, 32-byte keys.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |reason: String| DirectoryError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let d: Directory = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut ids = std::collections::HashSet::new();
        let mut kids = std::collections::HashSet::new();
        for e in &d.department {
            if !ids.insert(e.id.as_str()) {
                return Err(invalid(format!("department `{}` is listed twice", e.id)));
            }
            for k in &e.keys {
                if !kids.insert(k.key_id.as_str()) {
                    return Err(invalid(format!("key id `{}` is listed twice", k.key_id)));
                }
                let bytes: [u8; 32] = k.public_key.as_slice().try_into().map_err(|_| {
                    invalid(format!("key `{}` is not a 32-byte Ed25519 key", k.key_id))
                })?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| invalid(format!("key `{}`: {e}", k.key_id)))?;
            }
        }
        Ok(d)
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn department(&self, id: &str) -> Option<&DirectoryEntry> {
        self.department.iter().find(|d| d.id == id)
    }

    /// The department and public key behind a license key id.
    pub fn key(&self, key_id: &str) -> Option<(&DirectoryEntry, VerifyingKey)> {
        self.department.iter().find_map(|d| {
            d.keys.iter().find(|k| k.key_id == key_id).and_then(|k| {
                let bytes: [u8; 32] = k.public_key.as_slice().try_into().ok()?;
                Some((d, VerifyingKey::from_bytes(&bytes).ok()?))
            })
        })
    }
}
