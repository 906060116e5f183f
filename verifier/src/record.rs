//! Typed, versioned notarization records and their canonical encoding.
//!
//! The canonical bytes of an unsealed record are `[FORMAT_V1] ++ postcard(Record)`; of a record
//! sealed by its originator ([`seal`]), `[FORMAT_V2] ++ postcard(SealedRecord)`; of a config
//! record with its operators' signatures ([`authorize`]), `[FORMAT_V3] ++
//! postcard(AuthorizedRecord)`; of a record sealed as one of a batch ([`batch`]), `[FORMAT_V4] ++
//! postcard(BatchSealedRecord)`; of a signature over the records before it
//! ([`batch_signature`]), `[FORMAT_V5] ++ postcard(BatchSignatureRecord)`. Postcard is
//! deterministic for a given value (no maps, no floats here), so every node derives the same
//! bytes and therefore the same leaf hash. Enum variants and struct fields are only ever added at
//! the end; `tests::v1_bytes_are_frozen` pins the bytes of version 1 so old logs keep decoding,
//! `tests::v2_bytes_are_frozen` those of version 2, `tests::v3_bytes_are_frozen` those of
//! version 3 and `tests::v5_bytes_are_frozen` those of version 5.

use crate::license::status::MAX_REASON_LEN;
use crate::{Hash, leaf_hash};
use serde::{Deserialize, Serialize};

pub mod authorize;
pub mod batch;
pub mod batch_signature;
pub mod governance;
pub mod seal;

pub use authorize::{AuthorizedRecord, FORMAT_V3, authorization_message, signatures_needed};
pub use batch::{BatchKey, BatchSeal, BatchSealedRecord, FORMAT_V4, batch_leaf, batch_message};
pub use batch_signature::{BatchSignatureRecord, FORMAT_V5};
pub use governance::{
    CatalogEntry, CatalogField, FieldClass, GovernanceRecord, GovernanceStep, SharingClass,
    UpdateFrequency,
};
pub use seal::{
    DatasetOwner, FORMAT_V2, OriginError, OriginKey, OriginKeys, Originator, Seal, SealedRecord,
    SignerRole,
};

/// First byte of every encoded record: the encoding version.
pub const FORMAT_V1: u8 = 1;

/// One entry of the notarization log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A call to a data service, allowed or denied.
    Access(AccessRecord),
    /// An e-license was issued: its hash is now on the record.
    LicenseIssued(LicenseIssuedRecord),
    /// An e-license was suspended, reinstated or revoked by its issuer.
    LicenseStatus(LicenseStatusRecord),
    /// A data exchange as a gateway saw it: the owner's gateway that decided (provider side) or
    /// the consumer's gateway that forwarded (consumer side). Supersedes [`Record::Access`].
    Exchange(ExchangeRecord),
    /// An operator replaced a piece of cluster-wide configuration (policy or directory).
    Config(ConfigRecord),
    /// A record of one of the kinds above with its originator's seal; encoded as version 2.
    /// Never nested: the inner record is unsealed.
    Sealed(Box<SealedRecord>),
    /// A config record with the operator signatures that authorise it; encoded as version 3.
    /// The inner record is an unsealed config record.
    Authorized(Box<AuthorizedRecord>),
    /// A record sealed by its originator as one of a batch with one signature; encoded as
    /// version 4. The inner record is unsealed.
    BatchSealed(Box<BatchSealedRecord>),
    /// One signature over the records just before it in the log; encoded as version 5.
    BatchSignature(Box<BatchSignatureRecord>),
    /// A department's step in data-sharing governance (a catalog entry it publishes), sealed
    /// by its gateway; encoded as version 1.
    Governance(GovernanceRecord),
}

/// Which gateway wrote an exchange record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The owner department's gateway: it decided and answered from its store.
    Provider,
    /// The consumer department's gateway: it forwarded its department's request to the owner.
    Consumer,
}

/// A keyed hash (HMAC-SHA256 with the cluster's subject key) of a citizen's or holder's
/// identifier: it finds a data subject's accesses without naming them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubjectHash(#[serde(with = "hex_hash")] pub Hash);

/// One side of a data exchange: who asked what of which records, why, what the policy said and
/// which fields were disclosed.
///
/// Holds digests and metadata only: never payloads, and citizen identifiers only as
/// [`SubjectHash`]es.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// Unique id of the exchange (UUID v4); both sides' records carry the same id.
    pub request_id: String,
    /// Time the gateway decided (provider) or got the answer (consumer), Unix milliseconds.
    pub time_unix_ms: u64,
    pub caller: Caller,
    pub side: Side,
    /// Department of the gateway that wrote this record.
    pub gateway: String,
    /// Owner department of the data.
    pub owner: String,
    pub dataset: String,
    pub action: Action,
    /// The record key (read, write), or the query with citizen identifiers replaced by their
    /// keyed hash (query).
    pub key: String,
    /// Declared purpose code; empty for writes by the owner.
    pub purpose: String,
    pub decision: Decision,
    /// Version of the replicated policy that decided (0: the node's local policy files, before
    /// any policy was applied to the cluster).
    pub policy_version: u64,
    /// The policy rule that allowed the call, or the reason it was denied.
    pub rule: String,
    /// The fields returned (read, query) or stored (write), sorted.
    pub disclosed_fields: Vec<String>,
    /// Records returned by a query (1 for a read that found its record).
    pub result_count: u32,
    /// Data subjects named by the request or by the disclosed data, sorted, without repeats.
    pub subjects: Vec<SubjectHash>,
    /// SHA-256 of the request as received.
    #[serde(with = "hex_hash")]
    pub request_digest: Hash,
    /// SHA-256 of the payload returned (read, query) or stored (write); `None` when nothing was.
    #[serde(with = "hex_hash_opt")]
    pub response_digest: Option<Hash>,
    /// W3C trace id (32 lowercase hex digits) of the request's trace; empty when not traced.
    pub trace_id: String,
}

/// What an operator changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    /// The access policy: the Casbin model and its rules, as text.
    Policy { model: String, rules: String },
    /// The department directory, as TOML.
    Directory { toml: String },
    /// The Raft membership: the members the cluster had when the change was signed (`from`)
    /// and the members it has after it (`to`). Every node lets a membership change into its
    /// Raft log only as the change from `from` to `to` (see `raft-store`'s membership gate).
    Membership { from: MemberSet, to: MemberSet },
}

/// A Raft membership: every member (voters and learners) with the address the others reach it
/// at, and which of them vote. Both lists are in ascending id order, each id once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberSet {
    pub members: Vec<Member>,
    pub voters: Vec<u64>,
}

/// One member of a Raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub address: String,
}

/// Longest member address a membership record carries.
pub const MAX_MEMBER_ADDRESS: usize = 256;

impl MemberSet {
    /// The set of `members` (id → address) of which `voters` vote, in canonical order.
    pub fn new(
        members: impl IntoIterator<Item = (u64, String)>,
        voters: impl IntoIterator<Item = u64>,
    ) -> MemberSet {
        let members: std::collections::BTreeMap<u64, String> = members.into_iter().collect();
        let voters: std::collections::BTreeSet<u64> = voters.into_iter().collect();
        MemberSet {
            members: members
                .into_iter()
                .map(|(id, address)| Member { id, address })
                .collect(),
            voters: voters.into_iter().collect(),
        }
    }

    /// This set with `id` at `address` added as a learner.
    pub fn with_learner(&self, id: u64, address: &str) -> MemberSet {
        MemberSet::new(
            self.pairs().chain([(id, address.to_owned())]),
            self.voters.iter().copied(),
        )
    }

    /// This set with member `id` voting.
    pub fn with_voter(&self, id: u64) -> MemberSet {
        MemberSet::new(self.pairs(), self.voters.iter().copied().chain([id]))
    }

    /// This set without member `id`.
    pub fn without(&self, id: u64) -> MemberSet {
        MemberSet::new(
            self.pairs().filter(|(m, _)| *m != id),
            self.voters.iter().copied().filter(|v| *v != id),
        )
    }

    fn pairs(&self) -> impl Iterator<Item = (u64, String)> + '_ {
        self.members.iter().map(|m| (m.id, m.address.clone()))
    }

    /// The address of member `id`.
    pub fn address(&self, id: u64) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.address.as_str())
    }

    /// Members of `self` that `other` does not have as members, and voters of `self` that do
    /// not vote in `other`.
    pub fn dropped_in(&self, other: &MemberSet) -> Vec<u64> {
        let mut dropped: Vec<u64> = self
            .members
            .iter()
            .filter(|m| other.address(m.id).is_none())
            .map(|m| m.id)
            .chain(
                self.voters
                    .iter()
                    .copied()
                    .filter(|v| !other.voters.contains(v)),
            )
            .collect();
        dropped.sort_unstable();
        dropped.dedup();
        dropped
    }

    /// Whether the lists are canonical: ascending ids, each once, every voter a member, at
    /// least one voter, and addresses of 1 to [`MAX_MEMBER_ADDRESS`] bytes.
    pub fn check(&self) -> Result<(), String> {
        if !self.members.windows(2).all(|w| w[0].id < w[1].id) {
            return Err("members must be in ascending id order, each once".into());
        }
        if !self.voters.windows(2).all(|w| w[0] < w[1]) {
            return Err("voters must be in ascending order, each once".into());
        }
        if self.voters.is_empty() {
            return Err("a membership needs at least one voter".into());
        }
        if let Some(v) = self.voters.iter().find(|v| self.address(**v).is_none()) {
            return Err(format!("voter {v} is not a member"));
        }
        if let Some(m) = self
            .members
            .iter()
            .find(|m| m.address.is_empty() || m.address.len() > MAX_MEMBER_ADDRESS)
        {
            return Err(format!(
                "member {} has an address of {} bytes; 1 to {MAX_MEMBER_ADDRESS} are allowed",
                m.id,
                m.address.len()
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for MemberSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for m in &self.members {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            let role = if self.voters.contains(&m.id) {
                "voter"
            } else {
                "learner"
            };
            write!(f, "{} ({role}, {})", m.id, m.address)?;
        }
        Ok(())
    }
}

/// The kinds of cluster-wide configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigKind {
    Policy,
    Directory,
    Membership,
}

impl ConfigKind {
    /// Every kind.
    pub const ALL: [ConfigKind; 3] = [
        ConfigKind::Policy,
        ConfigKind::Directory,
        ConfigKind::Membership,
    ];

    /// The kinds that are documents a node switches to (policy and directory); a membership
    /// change is made by Raft itself.
    pub const DOCUMENTS: [ConfigKind; 2] = [ConfigKind::Policy, ConfigKind::Directory];

    /// The kind's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Policy => "policy",
            ConfigKind::Directory => "directory",
            ConfigKind::Membership => "membership",
        }
    }

    /// The byte that names the kind in storage keys.
    pub fn tag(self) -> u8 {
        match self {
            ConfigKind::Policy => 1,
            ConfigKind::Directory => 2,
            ConfigKind::Membership => 3,
        }
    }
}

impl ConfigChange {
    pub fn kind(&self) -> ConfigKind {
        match self {
            ConfigChange::Policy { .. } => ConfigKind::Policy,
            ConfigChange::Directory { .. } => ConfigKind::Directory,
            ConfigChange::Membership { .. } => ConfigKind::Membership,
        }
    }
}

/// A new version of one piece of cluster-wide configuration. Every node switches to it at the
/// log index of this record; its version is the number of records of its kind up to and
/// including it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub request_id: String,
    pub time_unix_ms: u64,
    pub caller: Caller,
    pub change: ConfigChange,
}

/// The issuance of one e-license. The license document itself stays with its holder; the log
/// holds its hash and what is needed to find it, never the holder's identifier in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseIssuedRecord {
    pub request_id: String,
    pub time_unix_ms: u64,
    pub caller: Caller,
    /// SHA-256 of the signed license (COSE_Sign1 bytes): the license's identity.
    #[serde(with = "hex_hash")]
    pub license_hash: Hash,
    /// License type slug, e.g. `business-license`.
    pub license_type: String,
    /// License number as printed on it.
    pub number: String,
    /// Issuing department id.
    pub department: String,
    /// Keyed hash (HMAC-SHA256 with the cluster's subject key) of the holder's identifier.
    #[serde(with = "hex_hash")]
    pub holder_hash: Hash,
    /// Validity, in Unix seconds: from (inclusive), until (exclusive; `None` = no end).
    pub valid_from: i64,
    pub valid_until: Option<i64>,
}

/// A change of an e-license's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LicenseStatusChange {
    Suspended,
    Reinstated,
    Revoked,
}

/// The issuer changed a license's status, with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseStatusRecord {
    pub request_id: String,
    pub time_unix_ms: u64,
    pub caller: Caller,
    #[serde(with = "hex_hash")]
    pub license_hash: Hash,
    pub change: LicenseStatusChange,
    /// Reason code, lowercase letters, digits and `-` (1–32 characters).
    pub reason: String,
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
    /// A search of a dataset by indexed fields.
    Query,
}

impl Action {
    /// The action's name in policies and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Query => "query",
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
        // Serialising plain structs, strings and integers into a Vec cannot fail.
        match self {
            Record::Sealed(sealed) => {
                let mut out = vec![FORMAT_V2];
                out.extend(postcard::to_stdvec(sealed.as_ref()).unwrap_or_default());
                out
            }
            Record::Authorized(authorized) => {
                let mut out = vec![FORMAT_V3];
                out.extend(postcard::to_stdvec(authorized.as_ref()).unwrap_or_default());
                out
            }
            Record::BatchSealed(sealed) => {
                let mut out = vec![FORMAT_V4];
                out.extend(postcard::to_stdvec(sealed.as_ref()).unwrap_or_default());
                out
            }
            Record::BatchSignature(signature) => {
                let mut out = vec![FORMAT_V5];
                out.extend(postcard::to_stdvec(signature.as_ref()).unwrap_or_default());
                out
            }
            _ => {
                let mut out = vec![FORMAT_V1];
                out.extend(postcard::to_stdvec(self).unwrap_or_default());
                out
            }
        }
    }

    /// The record without its seal or operator signatures.
    pub fn content(&self) -> &Record {
        match self {
            Record::Sealed(sealed) => &sealed.record,
            Record::Authorized(authorized) => &authorized.record,
            Record::BatchSealed(sealed) => &sealed.record,
            other => other,
        }
    }

    /// The record without its seal or operator signatures, by value.
    pub fn into_content(self) -> Record {
        match self {
            Record::Sealed(sealed) => sealed.record,
            Record::Authorized(authorized) => authorized.record,
            Record::BatchSealed(sealed) => sealed.record,
            other => other,
        }
    }

    /// The originator's seal, if the record has a single one.
    pub fn seal(&self) -> Option<&Seal> {
        match self {
            Record::Sealed(sealed) => Some(&sealed.seal),
            _ => None,
        }
    }

    /// Who sealed the record, alone or in a batch; `None` if it is not sealed.
    pub fn originator(&self) -> Option<&Originator> {
        match self {
            Record::Sealed(sealed) => Some(&sealed.seal.originator),
            Record::BatchSealed(sealed) => Some(&sealed.seal.originator),
            _ => None,
        }
    }

    /// Decode canonical bytes. Trailing bytes, and any other spelling of a record than its
    /// [`Record::encode`] (a varint padded with continuation bytes, say), are refused, so that
    /// one record has one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let malformed = |e: postcard::Error| DecodeError::Malformed(e.to_string());
        let (record, rest) = match version {
            FORMAT_V1 => postcard::take_from_bytes::<Record>(body).map_err(malformed)?,
            FORMAT_V2 => {
                let (sealed, rest) =
                    postcard::take_from_bytes::<SealedRecord>(body).map_err(malformed)?;
                (Record::Sealed(Box::new(sealed)), rest)
            }
            FORMAT_V3 => {
                let (authorized, rest) =
                    postcard::take_from_bytes::<AuthorizedRecord>(body).map_err(malformed)?;
                if !matches!(authorized.record, Record::Config(_)) {
                    return Err(DecodeError::Malformed(
                        "operator signatures on a record that is not a config change".into(),
                    ));
                }
                (Record::Authorized(Box::new(authorized)), rest)
            }
            FORMAT_V4 => {
                let (sealed, rest) =
                    postcard::take_from_bytes::<BatchSealedRecord>(body).map_err(malformed)?;
                (Record::BatchSealed(Box::new(sealed)), rest)
            }
            FORMAT_V5 => {
                let (signature, rest) =
                    postcard::take_from_bytes::<BatchSignatureRecord>(body).map_err(malformed)?;
                (Record::BatchSignature(Box::new(signature)), rest)
            }
            _ => return Err(DecodeError::UnknownFormat(version)),
        };
        let wrapper = |r: &Record| {
            matches!(
                r,
                Record::Sealed(_) | Record::Authorized(_) | Record::BatchSealed(_)
            )
        };
        let special = |r: &Record| wrapper(r) || matches!(r, Record::BatchSignature(_));
        if (version == FORMAT_V1 && special(&record))
            || (wrapper(&record) && special(record.content()))
        {
            return Err(DecodeError::Malformed(
                "a sealed record inside a record: seals are not nested".into(),
            ));
        }
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if record.encode().get(1..) != Some(body) {
            return Err(DecodeError::Malformed(
                "not the canonical encoding of the record it decodes to".into(),
            ));
        }
        Ok(record)
    }

    /// RFC 6962 leaf hash of the canonical bytes: the record's identity in the log.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// When the gateway that wrote the record decided, in milliseconds since the Unix epoch.
    /// Replicated with the record, so every node reads the same time for the same log index.
    pub fn time_unix_ms(&self) -> u64 {
        match self {
            Record::Access(r) => r.time_unix_ms,
            Record::LicenseIssued(r) => r.time_unix_ms,
            Record::LicenseStatus(r) => r.time_unix_ms,
            Record::Exchange(r) => r.time_unix_ms,
            Record::Config(r) => r.time_unix_ms,
            Record::Sealed(s) => s.record.time_unix_ms(),
            Record::Authorized(a) => a.record.time_unix_ms(),
            Record::BatchSealed(s) => s.record.time_unix_ms(),
            Record::BatchSignature(s) => s.time_unix_ms,
            Record::Governance(r) => r.time_unix_ms,
        }
    }

    /// Check the rules a record must meet before it enters the log, where it stays forever:
    /// today, that a status change's reason is a reason code (the signed status list carries
    /// it). Records already in the log are never refused on these grounds.
    pub fn check(&self) -> Result<(), RecordError> {
        match self.content() {
            Record::LicenseStatus(r) if !is_reason_code(&r.reason) => {
                Err(RecordError::ReasonCode {
                    reason: r.reason.chars().take(40).collect(),
                })
            }
            Record::BatchSignature(s) => s.check().map_err(RecordError::BatchSignature),
            Record::Governance(g) => g.check().map_err(RecordError::Governance),
            Record::Config(ConfigRecord {
                change: ConfigChange::Membership { from, to },
                ..
            }) => {
                for (which, set) in [("from", from), ("to", to)] {
                    set.check()
                        .map_err(|reason| RecordError::Membership { which, reason })?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Why a record may not enter the log. The caller built it wrongly; no retry helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A license status change's reason is not 1 to 32 of `a-z`, `0-9` and `-`.
    #[error("license status reason {reason:?} is not a reason code: 1 to 32 of a-z, 0-9 and -")]
    ReasonCode { reason: String },
    /// A batch signature's fields are out of range.
    #[error("batch signature: {0}")]
    BatchSignature(String),
    /// A governance record is not well formed.
    #[error("{0}")]
    Governance(String),
    /// A membership change's member lists are not canonical.
    #[error("membership change: `{which}`: {reason}")]
    Membership { which: &'static str, reason: String },
}

/// Whether `reason` is a reason code as the signed status list allows it: 1 to
/// [`MAX_REASON_LEN`] of `a-z`, `0-9` and `-`.
pub fn is_reason_code(reason: &str) -> bool {
    (1..=MAX_REASON_LEN).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Serialises a hash as hex in human-readable formats (JSON) and as raw bytes in postcard.
mod hex_hash {
    use crate::Hash;
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
    use crate::Hash;
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
pub(crate) mod tests;
