//! Audit evidence: what an inspector hands over, and what `qianlian audit verify` checks.
//!
//! - [`bundle`]: the evidence bundle, a self-contained JSON file of records with inclusion
//!   proofs against one cosigned checkpoint (and the policies that decided them), and
//!   [`check_bundle`], which trusts nothing in it but the keys it is told to pin.
//! - [`log`]: streaming a whole log against trusted checkpoints ([`LogVerifier`]), finding the
//!   first altered record with O(log n) proofs ([`locate_first_bad`]), and checking that
//!   successive checkpoints extend each other ([`check_consistency`]).
//!
//! Invariant: every failure names the log index it concerns and why, so an inspector can say
//! which record is wrong, not only that something is.

pub mod bundle;
pub mod log;

mod hex_hashes;
mod unique_keys;

pub use bundle::check::check_bundle;
pub use bundle::{
    BundleBatchSignature, BundleDepartment, BundleError, BundlePolicy, BundleRecord, BundleReport,
    EVIDENCE_BUNDLE_VERSION, Entry, EvidenceBundle, RetiredKey, TrustedKeys,
};
pub use log::{
    CheckpointMatch, LocateError, LogError, LogSummary, LogVerifier, TrustedRoot,
    UndecodableRecord, check_consistency, locate_first_bad,
};
