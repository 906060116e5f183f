//! [`BundleError`]: every way a bundle is refused, each naming the log index it concerns.

use crate::checkpoint::CheckpointError;
use crate::note::NoteError;
use crate::proof::ProofError;
use crate::record::DecodeError;

/// Why a bundle was refused. Whoever produced or edited the bundle is at fault, or the log it
/// came from no longer matches its checkpoint; none is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not JSON of the documented shape (a field missing, unknown or of the wrong type).
    #[error("evidence bundle is not valid JSON of the documented shape: {reason}")]
    Json {
        /// What the JSON parser reported, with line and column.
        reason: String,
    },

    /// A bundle version this verifier does not read.
    #[error("evidence bundle version {version} is not supported: this verifier reads version 1")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },

    /// A node key string (in the bundle or the pinned set) does not parse.
    #[error("node key {index}: {source}")]
    NodeKey {
        /// Position in the key list.
        index: usize,
        /// Why it was refused.
        source: NoteError,
    },

    /// The k of n threshold cannot be met or demands nothing.
    #[error("min_cosigners {k} must be between 1 and the {n} distinct node keys")]
    InvalidThreshold {
        /// The threshold asked for.
        k: usize,
        /// Distinct key names available.
        n: usize,
    },

    /// The bundle claims another log than the pinned one.
    #[error("bundle is for log {bundle:?}, but the pinned keys are for log {pinned:?}")]
    OriginMismatch {
        /// The origin the reader trusts.
        pinned: String,
        /// The origin the bundle names.
        bundle: String,
    },

    /// The checkpoint is from another log than the one expected.
    #[error("checkpoint is from log {got:?}, not {expected:?}")]
    WrongOrigin {
        /// The origin expected.
        expected: String,
        /// The origin in the checkpoint.
        got: String,
    },

    /// Fewer distinct trusted nodes signed the checkpoint than demanded.
    #[error(
        "checkpoint has {} trusted signature(s) ({}), {required} required",
        signers.len(),
        signers.join(", ")
    )]
    TooFewSigners {
        /// The threshold k.
        required: usize,
        /// The distinct trusted signers found.
        signers: Vec<String>,
    },

    /// The checkpoint does not open with the trusted keys (no trusted signature, a bad
    /// signature, a malformed note or body).
    #[error("checkpoint refused: {0}")]
    Checkpoint(CheckpointError),

    /// A department entry breaks a rule.
    #[error("department {id:?}: {reason}")]
    Department {
        /// The department id as written.
        id: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// An entry claims a position the checkpoint does not cover.
    #[error(
        "{entry} at log index {log_index}: outside the checkpoint's tree of {tree_size} entries"
    )]
    OutsideTree {
        entry: Entry,
        log_index: u64,
        tree_size: u64,
    },

    /// The same log index appears twice in one list.
    #[error("{entry} at log index {log_index}: appears twice")]
    DuplicateIndex { entry: Entry, log_index: u64 },

    /// The bytes and proof do not lead to the checkpoint's root: the bytes, index or proof were
    /// altered, or the log no longer holds what it committed to.
    #[error("{entry} at log index {log_index}: not in the checkpoint's tree: {source}")]
    Inclusion {
        entry: Entry,
        log_index: u64,
        source: ProofError,
    },

    /// The bytes are not a record this verifier reads.
    #[error("{entry} at log index {log_index}: does not decode: {source}")]
    Undecodable {
        entry: Entry,
        log_index: u64,
        source: DecodeError,
    },

    /// The record's originator seal does not hold: its signature does not verify over the
    /// record (the record or its seal was altered), or the key is not one the bundle lists for
    /// the department and role that must seal it.
    #[error("{entry} at log index {log_index}: origin not proven: {source}")]
    Origin {
        entry: Entry,
        log_index: u64,
        source: crate::record::OriginError,
    },

    /// `record_json` is not what the record's bytes decode to: the JSON view was edited.
    #[error(
        "record at log index {log_index}: record_json differs from the logged record at {at:?}: the JSON view was edited"
    )]
    JsonView {
        log_index: u64,
        /// JSON pointer of the first difference (empty: the whole value).
        at: String,
    },

    /// A policy entry holds another kind of record.
    #[error("policy at log index {log_index}: is a {found} record, not a policy change")]
    NotAPolicy {
        log_index: u64,
        /// The kind of record found.
        found: &'static str,
    },

    /// Policy versions are not 1, 2, 3 … in increasing log order.
    #[error(
        "policy at log index {log_index}: version {got} where version {expected} belongs, after log index {after:?}"
    )]
    PolicyOrder {
        log_index: u64,
        expected: u64,
        got: u64,
        /// Log index of the previous policy entry.
        after: Option<u64>,
    },

    /// A record was decided under a policy version the bundle does not carry.
    #[error(
        "record at log index {log_index}: decided under policy version {referenced}, but the bundle's policies stop before version {missing}"
    )]
    MissingPolicy {
        /// The record that references the policy.
        log_index: u64,
        /// The version it references.
        referenced: u64,
        /// The first version missing.
        missing: u64,
    },
}

impl BundleError {
    /// The log index the failure concerns, if it concerns one entry.
    pub fn log_index(&self) -> Option<u64> {
        match self {
            BundleError::OutsideTree { log_index, .. }
            | BundleError::DuplicateIndex { log_index, .. }
            | BundleError::Inclusion { log_index, .. }
            | BundleError::Undecodable { log_index, .. }
            | BundleError::Origin { log_index, .. }
            | BundleError::JsonView { log_index, .. }
            | BundleError::NotAPolicy { log_index, .. }
            | BundleError::PolicyOrder { log_index, .. }
            | BundleError::MissingPolicy { log_index, .. } => Some(*log_index),
            _ => None,
        }
    }
}

/// Which list of the bundle an entry is in, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Record,
    Policy,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entry::Record => "record",
            Entry::Policy => "policy",
        })
    }
}
