//! Typed, versioned notarization records and their canonical encoding.
//!
//! The canonical bytes of a record are `[FORMAT_V1] ++ postcard(Record)`. Postcard is
//! deterministic for a given value (no maps, no floats here), so every node derives the same
//! bytes and therefore the same leaf hash. Enum variants and struct fields are only ever added at
//! the end; `tests::v1_bytes_are_frozen` pins the bytes of version 1 so old logs keep decoding.

use qianlian_verifier::{Hash, leaf_hash};
use serde::{Deserialize, Serialize};

/// First byte of every encoded record: the encoding version.
pub const FORMAT_V1: u8 = 1;

/// One entry of the notarization log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A call to a data service, allowed or denied.
    Access(AccessRecord),
}

/// Who made a call, as established from the client certificate at the TLS boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Department id from the certificate's SAN URI.
    pub department: String,
    /// Role from the certificate (`department`, `inspector`, `operator`).
    pub role: String,
    /// SHA-256 of the client certificate (DER), lowercase hex.
    pub cert_fingerprint: String,
}

/// What the caller asked to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Read,
    Write,
}

impl Action {
    /// The action's name in policies and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

/// The policy decision for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Deny,
}

/// A data access: who asked what of which record, why, and what the policy said.
///
/// Holds digests and metadata only, never payloads or personal identifiers in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// Unique id of the request (UUID v4); the same id links the records of one exchange.
    pub request_id: String,
    /// Time the gateway decided, in milliseconds since the Unix epoch (UTC).
    pub time_unix_ms: u64,
    pub caller: Caller,
    /// Owner department of the record.
    pub owner: String,
    pub dataset: String,
    pub key: String,
    pub action: Action,
    /// Declared purpose code; empty for writes by the owner.
    pub purpose: String,
    pub decision: Decision,
    /// Version of the policy that decided.
    pub policy_version: String,
    /// The policy rule that allowed the call, or the reason it was denied.
    pub rule: String,
    /// SHA-256 of the request as received.
    #[serde(with = "hex_hash")]
    pub request_digest: Hash,
    /// SHA-256 of the payload returned (read) or stored (write); `None` when nothing was.
    #[serde(with = "hex_hash_opt")]
    pub response_digest: Option<Hash>,
}

/// Why canonical bytes could not be decoded into a [`Record`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes were empty: not a record at all (caller or storage at fault; no retry helps).
    #[error("empty record bytes")]
    Empty,
    /// The format byte is not one this version knows (a newer node wrote it; upgrade this one).
    #[error("unknown record format version {0}")]
    UnknownFormat(u8),
    /// The body does not decode (corrupt storage or a forged record; no retry helps).
    #[error("malformed record body: {0}")]
    Malformed(String),
}

impl Record {
    /// The canonical bytes of this record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V1];
        // Serialising plain structs, strings and integers into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Decode canonical bytes. Trailing bytes are refused so that one record has one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != FORMAT_V1 {
            return Err(DecodeError::UnknownFormat(version));
        }
        let (record, rest) = postcard::take_from_bytes::<Record>(body)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(record)
    }

    /// RFC 6962 leaf hash of the canonical bytes: the record's identity in the log.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }
}

/// Serialises a hash as hex in human-readable formats (JSON) and as raw bytes in postcard.
mod hex_hash {
    use qianlian_verifier::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(h))
        } else {
            serde::Serialize::serialize(h, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
            v.try_into()
                .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
        } else {
            <Hash as Deserialize>::deserialize(d)
        }
    }
}

mod hex_hash_opt {
    use qianlian_verifier::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Option<Hash>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match h {
                Some(h) => s.serialize_some(&hex::encode(h)),
                None => s.serialize_none(),
            }
        } else {
            serde::Serialize::serialize(h, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Hash>, D::Error> {
        if d.is_human_readable() {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => {
                    let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
                    v.try_into()
                        .map(Some)
                        .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
                }
            }
        } else {
            <Option<Hash> as Deserialize>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Record {
        Record::Access(AccessRecord {
            request_id: "6f1c2b1e-8d7a-4a53-9c43-2b7f0c8e9a10".into(),
            time_unix_ms: 1_764_000_000_000,
            caller: Caller {
                department: "housing".into(),
                role: "department".into(),
                cert_fingerprint: "ab".repeat(32),
            },
            owner: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            key: "91520100MA6DKJ8X3T".into(),
            action: Action::Read,
            purpose: "permit-review".into(),
            decision: Decision::Allow,
            policy_version: "1".into(),
            rule: "p, housing, market-regulation, enterprise-registration, read, permit-review"
                .into(),
            request_digest: [7; 32],
            response_digest: Some([9; 32]),
        })
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode()).ok(), Some(r));
    }

    #[test]
    fn v1_bytes_are_frozen() {
        let bytes = sample().encode();
        assert_eq!(
            hex::encode(leaf_hash(&bytes)),
            FROZEN_V1_LEAF_HASH,
            "the canonical encoding of a v1 access record changed: old logs would no longer verify"
        );
        assert_eq!(bytes[0], FORMAT_V1);
    }

    const FROZEN_V1_LEAF_HASH: &str =
        "21b9788655eedbf16e6a4e54393123a438fc475f088eac66d020252301514386";

    #[test]
    fn refuses_unknown_format_trailing_bytes_and_garbage() {
        let mut bytes = sample().encode();
        bytes[0] = 9;
        assert!(matches!(
            Record::decode(&bytes),
            Err(DecodeError::UnknownFormat(9))
        ));
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(matches!(
            Record::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(Record::decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            Record::decode(&[1, 0xff, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn json_view_uses_hex_digests() {
        let json = serde_json::to_value(sample()).unwrap_or_default();
        assert_eq!(json["Access"]["request_digest"], "07".repeat(32));
        assert_eq!(json["Access"]["decision"], "allow");
    }
}
