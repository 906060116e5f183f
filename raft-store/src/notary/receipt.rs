//! The receipt an append answers with.

use qianlian_verifier::Hash;

/// Proof of notarization handed to the caller of [`Notary::append`](super::Notary::append).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The record's position in the notarization log (its Merkle leaf index).
    pub log_index: u64,
    /// RFC 6962 leaf hash of the record's canonical bytes.
    pub record_hash: Hash,
}
