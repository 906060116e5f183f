//! The department directory: which departments exist, their names, their gateways, the public
//! keys their e-licenses are signed with, and the datasets they own with their field schemas.
//!
//! The directory in force is replicated: `qianlian directory apply FILE` appends it to the log
//! and every node switches to it at that log index. Until the cluster has one, a node uses its
//! local `departments.toml` (written by `qianlian pki init`).

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
    /// Gateway node keys (Ed25519, normally a node's checkpoint note key): the records the
    /// department's gateway writes for its side of an exchange must be sealed by one of them.
    /// A department that lists none writes unsealed records (a directory from before seals);
    /// once it lists one, every node refuses its unsealed or foreign-sealed records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_keys: Vec<DepartmentKey>,
    /// The department's gateway, `https://host:port`; requests for its datasets are forwarded
    /// there by other departments' gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// SHA-256 (lowercase hex) of the gateway's TLS certificate (DER). When set, other
    /// departments' gateways forward to it only if the server at `gateway` presents exactly
    /// this certificate (`openssl x509 -in node.crt -outform der | sha256sum`); renew the
    /// certificate, update this pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
    /// The datasets the department owns.
    #[serde(default, rename = "dataset", skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<crate::domain::dataset::Dataset>,
}

/// A cluster operator whose signature authorises policy and directory changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorEntry {
    /// The operator's id, as in its certificate (`spiffe://<domain>/dept/<id>`, OU operator).
    pub id: String,
    /// Ed25519 keys the operator signs configuration changes with (several during a rotation).
    #[serde(default)]
    pub keys: Vec<DepartmentKey>,
}

/// All departments, and the operators who may change the cluster's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    #[serde(default)]
    pub department: Vec<DirectoryEntry>,
    /// Once the directory in force lists an operator key, every node refuses a policy or
    /// directory change that operators have not signed (see `qianlian_verifier::record::authorize`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator: Vec<OperatorEntry>,
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
        d.check().map_err(invalid)?;
        Ok(d)
    }

    /// Parse and check a directory from its TOML text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Directory, DirectoryError> {
        let invalid = |reason: String| DirectoryError::Invalid {
            path: source.to_owned(),
            reason,
        };
        let d: Directory = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        d.check().map_err(invalid)?;
        Ok(d)
    }

    /// Unique department, key and dataset ids; 32-byte keys; gateway URLs and fingerprints in
    /// their forms; field names in theirs.
    fn check(&self) -> Result<(), String> {
        let d = self;
        let invalid = |reason: String| reason;
        let mut ids = std::collections::HashSet::new();
        let mut kids = std::collections::HashSet::new();
        let mut datasets = std::collections::HashSet::new();
        for e in &d.department {
            if e.id.is_empty()
                || !e
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(invalid(format!(
                    "department id `{}` must be lowercase letters, digits and `-`",
                    e.id
                )));
            }
            if let Some(g) = &e.gateway {
                let ok = g
                    .strip_prefix("https://")
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
                if !ok {
                    return Err(invalid(format!(
                        "department `{}`: gateway `{g}` must be https://host:port",
                        e.id
                    )));
                }
            }
            if let Some(f) = &e.cert_fingerprint
                && (f.len() != 64
                    || !f
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
            {
                return Err(invalid(format!(
                    "department `{}`: cert_fingerprint must be 64 lowercase hex digits (SHA-256 of the certificate)",
                    e.id
                )));
            }
            for ds in &e.datasets {
                if !datasets.insert(ds.id.as_str()) {
                    return Err(invalid(format!(
                        "dataset `{}` is listed twice; a dataset has one owner",
                        ds.id
                    )));
                }
                ds.check()
                    .map_err(|why| invalid(format!("dataset `{}`: {why}", ds.id)))?;
            }
            if !ids.insert(e.id.as_str()) {
                return Err(invalid(format!("department `{}` is listed twice", e.id)));
            }
            // A node serving several departments lists its key under each of them: node key
            // ids are unique within a department, license key ids (COSE `kid`) everywhere.
            let mut node_kids = std::collections::HashSet::new();
            for k in &e.node_keys {
                if !node_kids.insert(k.key_id.as_str()) {
                    return Err(invalid(format!(
                        "node key id `{}` is listed twice for `{}`",
                        k.key_id, e.id
                    )));
                }
                let bytes: [u8; 32] = k.public_key.as_slice().try_into().map_err(|_| {
                    invalid(format!(
                        "node key `{}` is not a 32-byte Ed25519 key",
                        k.key_id
                    ))
                })?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| invalid(format!("node key `{}`: {e}", k.key_id)))?;
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
        let mut operators = std::collections::HashSet::new();
        for o in &d.operator {
            crate::domain::identity::validate_id(&o.id)
                .map_err(|why| invalid(format!("operator id `{}`: {why}", o.id)))?;
            if !operators.insert(o.id.as_str()) {
                return Err(invalid(format!("operator `{}` is listed twice", o.id)));
            }
            for k in &o.keys {
                if !kids.insert(k.key_id.as_str()) {
                    return Err(invalid(format!("key id `{}` is listed twice", k.key_id)));
                }
                let bytes: [u8; 32] = k.public_key.as_slice().try_into().map_err(|_| {
                    invalid(format!(
                        "operator key `{}` is not a 32-byte Ed25519 key",
                        k.key_id
                    ))
                })?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| invalid(format!("operator key `{}`: {e}", k.key_id)))?;
            }
        }
        Ok(())
    }

    /// The operator `id` and the id under which it lists `public_key`, if it does.
    pub fn operator_key_id(&self, id: &str, public_key: &[u8; 32]) -> Option<&str> {
        self.operator
            .iter()
            .find(|o| o.id == id)?
            .keys
            .iter()
            .find(|k| k.public_key == public_key)
            .map(|k| k.key_id.as_str())
    }

    /// The dataset `id` and its owner. A directory that lists no datasets at all gets the
    /// built-in catalog, owned by the departments it names.
    pub fn dataset(&self, id: &str) -> Option<(&str, &crate::domain::dataset::Dataset)> {
        let listed = self.department.iter().find_map(|d| {
            d.datasets
                .iter()
                .find(|ds| ds.id == id)
                .map(|ds| (d.id.as_str(), ds))
        });
        if listed.is_some() || self.department.iter().any(|d| !d.datasets.is_empty()) {
            return listed;
        }
        crate::domain::dataset::builtin(id)
    }

    /// The ids of all datasets, for error messages.
    pub fn dataset_ids(&self) -> String {
        let ids: Vec<&str> = self
            .department
            .iter()
            .flat_map(|d| d.datasets.iter().map(|ds| ds.id.as_str()))
            .collect();
        if ids.is_empty() {
            crate::domain::dataset::known_ids()
        } else {
            ids.join(", ")
        }
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn department(&self, id: &str) -> Option<&DirectoryEntry> {
        self.department.iter().find(|d| d.id == id)
    }

    /// The id under which `department` lists `public_key` as one of its gateway node keys.
    pub fn node_key_id(&self, department: &str, public_key: &[u8; 32]) -> Option<&str> {
        self.department(department)?
            .node_keys
            .iter()
            .find(|k| k.public_key == public_key)
            .map(|k| k.key_id.as_str())
    }

    /// The department and public key behind a license key id.
    pub fn key(&self, key_id: &str) -> Option<(&DirectoryEntry, VerifyingKey)> {
        let (d, bytes) = self.key_bytes(key_id)?;
        Some((d, VerifyingKey::from_bytes(&bytes).ok()?))
    }

    /// The department holding license key `key_id` and the key's 32 bytes, not decoded (a
    /// comparison needs no curve point).
    pub fn key_bytes(&self, key_id: &str) -> Option<(&DirectoryEntry, [u8; 32])> {
        self.department.iter().find_map(|d| {
            d.keys.iter().find(|k| k.key_id == key_id).and_then(|k| {
                let bytes: [u8; 32] = k.public_key.as_slice().try_into().ok()?;
                Some((d, bytes))
            })
        })
    }
}

#[cfg(test)]
mod directory_tests {
    use super::*;

    const ONE: &str = r#"
[[department]]
id = "housing"
name = "住房和城乡建设厅"
gateway = "https://10.0.0.3:7400"

[[department.dataset]]
id = "construction-permit"
title = "permits"
key = "construction-permit"
field = [{ name = "permit_number" }, { name = "project_manager_id", personal = true, indexed = true }]
"#;

    #[test]
    fn datasets_gateways_and_fields_are_read_and_checked() {
        let d = Directory::from_toml(ONE, "d.toml").expect("valid");
        let (owner, ds) = d.dataset("construction-permit").expect("listed");
        assert_eq!(owner, "housing");
        assert!(
            ds.field("project_manager_id")
                .is_some_and(|f| f.personal && f.indexed)
        );
        // A directory that lists datasets has only those; one that lists none has the catalog.
        assert!(d.dataset("enterprise-registration").is_none());
        let bare =
            Directory::from_toml("[[department]]\nid = \"x\"\nname = \"X\"\n", "b").expect("valid");
        assert_eq!(
            bare.dataset("enterprise-registration").map(|(o, _)| o),
            Some("market-regulation")
        );
        for (bad, needle) in [
            (
                ONE.replace("https://10.0.0.3:7400", "http://10.0.0.3"),
                "must be https://host:port",
            ),
            (
                ONE.replace("gateway = ", "cert_fingerprint = \"AB\"\ngateway = "),
                "64 lowercase hex",
            ),
            (
                format!(
                    "{ONE}\n[[department.dataset]]\nid = \"construction-permit\"\ntitle = \"t\"\nkey = \"construction-permit\"\n"
                ),
                "listed twice",
            ),
            (
                ONE.replace("{ name = \"permit_number\" }", "{ name = \"Permit\" }"),
                "field name `Permit`",
            ),
            (
                ONE.replace("key = \"construction-permit\"", "key = \"passport\""),
                "unknown variant",
            ),
        ] {
            let err = Directory::from_toml(&bad, "d.toml")
                .expect_err(needle)
                .to_string();
            assert!(err.starts_with("d.toml: ") && err.contains(needle), "{err}");
        }
    }
}
