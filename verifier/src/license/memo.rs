//! Signatures already checked: a node answering many verifications of the same license (a
//! counter scanning the same QR code all day, an app re-checking a wallet) checks each one's
//! Ed25519 signature once.
//!
//! An entry is the license hash (SHA-256 of every byte of the COSE_Sign1: protected header,
//! claims and signature) with the public key that verified it. Equal hashes mean equal bytes, so
//! a document that hashes to an entry carries exactly the signature that verified under that
//! key; any other document, or the same one under another key, is checked in full. The memo is
//! bounded: when full it starts over, which costs only repeated checks.

use std::collections::HashSet;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;

use super::{LicenseClaims, LicenseError, UnverifiedLicense};
use crate::Hash;

/// A bounded set of (license hash, public key) pairs whose signature verified.
#[derive(Debug)]
pub struct VerifiedSignatures {
    seen: Mutex<HashSet<[u8; 64]>>,
    capacity: usize,
}

impl VerifiedSignatures {
    /// A memo of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> VerifiedSignatures {
        VerifiedSignatures {
            seen: Mutex::new(HashSet::new()),
            capacity: capacity.max(1),
        }
    }

    fn entry(hash: &Hash, key: &VerifyingKey) -> [u8; 64] {
        let mut entry = [0u8; 64];
        entry[..32].copy_from_slice(hash);
        entry[32..].copy_from_slice(key.as_bytes());
        entry
    }

    /// Whether `license`'s signature verified under `key` before.
    pub fn contains(&self, license: &UnverifiedLicense, key: &VerifyingKey) -> bool {
        let entry = Self::entry(&license.license_hash(), key);
        // Poisoned only by a panic inside a set operation; the set is still a set.
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&entry)
    }

    /// [`UnverifiedLicense::verify_signature`], skipped for a document whose exact bytes
    /// verified under `key` before.
    ///
    /// # Errors
    /// [`LicenseError::BadSignature`], as `verify_signature`.
    pub fn verify(
        &self,
        license: &UnverifiedLicense,
        key: &VerifyingKey,
    ) -> Result<LicenseClaims, LicenseError> {
        if self.contains(license, key) {
            return Ok(license.unverified_claims().clone());
        }
        let claims = license.verify_signature(key)?;
        let entry = Self::entry(&license.license_hash(), key);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.capacity {
            seen.clear();
        }
        seen.insert(entry);
        Ok(claims)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::fixtures;
    use crate::license::{open_license, sign_license};

    #[test]
    fn a_remembered_signature_is_not_a_pass_for_other_bytes_or_keys() {
        let key = fixtures::market_key();
        let other = fixtures::rogue_key();
        let claims = fixtures::business_license();
        let bytes = sign_license(&claims, &key).expect("sign");
        let memo = VerifiedSignatures::new(4);
        let license = open_license(&bytes).expect("open");
        assert_eq!(
            memo.verify(&license, &key.verifying_key()).ok(),
            Some(claims.clone())
        );
        assert!(memo.contains(&license, &key.verifying_key()));
        // The same document under another key is checked, and fails.
        assert!(!memo.contains(&license, &other.verifying_key()));
        assert!(matches!(
            memo.verify(&license, &other.verifying_key()),
            Err(LicenseError::BadSignature { .. })
        ));
        // A document with another signature byte is another entry, checked and refused.
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = open_license(&forged).expect("structure still opens");
        assert!(!memo.contains(&forged, &key.verifying_key()));
        assert!(memo.verify(&forged, &key.verifying_key()).is_err());
        assert_eq!(memo.len(), 1, "failures are not remembered");
    }

    #[test]
    fn the_memo_stays_within_its_capacity() {
        let key = fixtures::market_key();
        let memo = VerifiedSignatures::new(3);
        for n in 0..10 {
            let mut claims = fixtures::business_license();
            claims.number = format!("GZ-2026-{n:04}");
            let license = open_license(&sign_license(&claims, &key).expect("sign")).expect("open");
            assert!(memo.verify(&license, &key.verifying_key()).is_ok());
            assert!(memo.len() <= 3);
            assert!(memo.contains(&license, &key.verifying_key()));
        }
    }
}
