//! Keyed hashes of citizen identifiers: how the log names a data subject without exposing them.
//!
//! The key (32 bytes, `subject.key` from `qianlian pki init`, config `licenses.subject_key`) is
//! the same on every node of a cluster and never leaves it, so the same identifier always gives
//! the same hash, and only the cluster can compute it from an identifier.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use qianlian_verifier::Hash;

/// The cluster's subject key.
#[derive(Clone)]
pub struct SubjectKey(Arc<[u8; 32]>);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    pub fn new(key: [u8; 32]) -> SubjectKey {
        SubjectKey(Arc::new(key))
    }

    /// HMAC-SHA256 of the identifier as given (normalise it first with [`normalise`]).
    pub fn hash(&self, identifier: &str) -> Hash {
        // HMAC takes a key of any length: a 32-byte key is never refused.
        let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_slice()) {
            Ok(m) => m,
            Err(e) => unreachable!("{e}"),
        };
        mac.update(identifier.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The form in which an identifier is hashed and stored: trimmed, ASCII letters in upper case
/// (a resident ID may end in `x` or `X`).
pub fn normalise(identifier: &str) -> String {
    identifier.trim().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_identifier_same_hash_other_key_other_hash() {
        let a = SubjectKey::new([1; 32]);
        let b = SubjectKey::new([2; 32]);
        let id = normalise(" 52010219900307123x ");
        assert_eq!(id, "52010219900307123X");
        assert_eq!(a.hash(&id), a.hash("52010219900307123X"));
        assert_ne!(a.hash(&id), b.hash(&id));
        assert_ne!(a.hash(&id), a.hash("52010219900307123"));
    }
}
