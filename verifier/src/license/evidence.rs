//! The evidence that a license is on the record, and the holder's bundle that carries it.
//!
//! The log does not hold licenses but records about them, so the evidence carries the issuance
//! record's canonical bytes: the verifier checks that the record names the license (through a
//! [`super::RecordCheck`] the log's owner supplies, so this crate needs no record types) and
//! that the record's RFC 6962 leaf is included in a cosigned tree head.
//!
//! JSON form of a holder's bundle (bytes and hashes in standard base64):
//!
//! ```json
//! {
//!   "version": 1,
//!   "license": "0oRDoQEnBFgb…",
//!   "evidence": {
//!     "log_index": 17,
//!     "tree_size": 18,
//!     "inclusion_proof": ["…32 bytes…", "…"],
//!     "checkpoint": "qianlian.example/notary\n18\n…\n\n— node-a …\n",
//!     "record": "…canonical record bytes…"
//!   }
//! }
//! ```

use serde::{Deserialize, Serialize};

use super::serde_bytes;
use crate::hash::Hash;

/// The format version of [`HolderBundle`] JSON.
pub const HOLDER_BUNDLE_VERSION: u32 = 1;

/// Proof that a license's issuance record is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseEvidence {
    /// 0-based index of the issuance record in the log.
    pub log_index: u64,
    /// Size of the tree the proof is against; equal to the checkpoint's size.
    pub tree_size: u64,
    /// RFC 6962 inclusion proof of the record's leaf in that tree.
    #[serde(with = "serde_bytes::hashes")]
    pub inclusion_proof: Vec<Hash>,
    /// The cosigned checkpoint (signed note text) of that tree.
    pub checkpoint: String,
    /// The issuance record's canonical bytes: the log leaf is `leaf_hash(record)`.
    #[serde(with = "serde_bytes::bytes")]
    pub record: Vec<u8>,
}

/// What a license holder keeps: the license and, once it is logged, its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderBundle {
    /// Always [`HOLDER_BUNDLE_VERSION`].
    pub version: u32,
    /// The license's COSE_Sign1 bytes.
    #[serde(with = "serde_bytes::bytes")]
    pub license: Vec<u8>,
    /// The evidence, or `None` before the issuance is on the record.
    pub evidence: Option<LicenseEvidence>,
}

/// Reads only the `version` field of a versioned JSON document.
#[derive(Deserialize)]
pub(crate) struct VersionProbe {
    pub(crate) version: u32,
}

/// Why a holder bundle could not be read. The file is at fault; none is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HolderBundleError {
    /// Not JSON of the documented shape (a field missing, unknown or of the wrong type).
    #[error("holder bundle is not valid JSON of the documented shape: {reason}")]
    Json {
        /// What the JSON parser reported, with line and column.
        reason: String,
    },

    /// A bundle version this verifier does not read.
    #[error("holder bundle version {version} is not supported: this verifier reads version 1")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
}

impl HolderBundle {
    /// A current-version bundle.
    pub fn new(license: Vec<u8>, evidence: Option<LicenseEvidence>) -> Self {
        Self {
            version: HOLDER_BUNDLE_VERSION,
            license,
            evidence,
        }
    }

    /// Reads a bundle from its JSON form. The license and evidence are not checked here:
    /// [`super::verify_offline`] does that.
    ///
    /// # Errors
    /// [`HolderBundleError`].
    pub fn from_json(json: &str) -> Result<Self, HolderBundleError> {
        let json_error = |e: serde_json::Error| HolderBundleError::Json {
            reason: e.to_string(),
        };
        // The version first, so that a newer bundle is named as such rather than as bad JSON.
        let version = serde_json::from_str::<VersionProbe>(json)
            .map_err(json_error)?
            .version;
        if version != HOLDER_BUNDLE_VERSION {
            return Err(HolderBundleError::UnsupportedVersion { version });
        }
        serde_json::from_str(json).map_err(json_error)
    }

    /// The pretty-printed JSON form.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and arrays cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::fixtures::{Log, signed_business_license};

    fn sample() -> HolderBundle {
        let license = signed_business_license();
        let mut log = Log::new();
        let index = log.issue(&license);
        let evidence = log.evidence(&license, index);
        HolderBundle::new(license, Some(evidence))
    }

    #[test]
    fn holder_bundle_round_trips_through_json() {
        let bundle = sample();
        let json = bundle.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["version"], 1);
        assert_eq!(value["evidence"]["log_index"], 5);
        assert_eq!(value["evidence"]["tree_size"], 6);
        assert!(
            value["license"]
                .as_str()
                .is_some_and(|s| s.starts_with("0oRYG6IBJwRW"))
        );
        assert_eq!(HolderBundle::from_json(&json), Ok(bundle));

        let without = HolderBundle::new(vec![1, 2, 3], None);
        assert_eq!(HolderBundle::from_json(&without.to_json()), Ok(without));
    }

    #[test]
    fn bad_holder_bundles_are_refused() {
        let json = sample().to_json();
        assert_eq!(
            HolderBundle::from_json(&json.replacen("\"version\": 1", "\"version\": 2", 1)),
            Err(HolderBundleError::UnsupportedVersion { version: 2 })
        );
        for bad in [
            json.replacen("\"version\": 1", "\"version\": 1, \"extra\": 0", 1),
            json.replacen("\"license\": \"", "\"license\": \"!", 1),
            json.replacen(
                "\"inclusion_proof\": [",
                "\"inclusion_proof\": [\"AAAA\",",
                1,
            ),
            "[]".to_owned(),
        ] {
            assert!(
                matches!(
                    HolderBundle::from_json(&bad),
                    Err(HolderBundleError::Json { .. })
                ),
                "{bad}"
            );
        }
    }
}
