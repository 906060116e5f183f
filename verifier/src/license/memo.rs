//! Licenses already verified: a node answering many verifications of the same license (a counter
//! scanning the same QR code all day, an app re-checking a wallet) opens each document and checks
//! its Ed25519 signature once.
//!
//! An entry is keyed by the license hash (SHA-256 of every byte of the COSE_Sign1: protected
//! header, claims and signature) and holds the key id, the public key that verified it and the
//! claims it vouches for. Equal hashes mean equal bytes, so a document that hashes to an entry is
//! the document that was opened and verified under that key; the caller still checks that the
//! key id names the same public key now ([`VerifiedLicenses::get`]). The memo is bounded: when
//! full it starts over, which costs only repeated checks.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;

use super::claims::LicenseClaims;
use super::cose::UnverifiedLicense;
use super::error::LicenseError;
use crate::Hash;

/// A license whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLicense {
    /// The COSE `kid` it names.
    pub key_id: String,
    /// The public key its signature verified under.
    pub key: [u8; 32],
    /// What it says, now to be believed.
    pub claims: LicenseClaims,
}

/// A bounded map from license hash to the verified license, and from QR payload to license
/// hash.
#[derive(Debug)]
pub struct VerifiedLicenses {
    seen: Mutex<HashMap<Hash, VerifiedLicense>>,
    /// SHA-256 of a QR payload's text → the hash of the license it decodes to.
    qr: Mutex<HashMap<Hash, Hash>>,
    capacity: usize,
}

impl VerifiedLicenses {
    /// A memo of at most `capacity` licenses (at least 1).
    pub fn new(capacity: usize) -> VerifiedLicenses {
        VerifiedLicenses {
            seen: Mutex::new(HashMap::new()),
            qr: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, VerifiedLicense>> {
        // Poisoned only by a panic inside a map operation; the map is still a map.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The license with hash `license_hash` if it verified before under the public key (its 32
    /// bytes) that `key_of` gives for its key id now, with what `key_of` returned alongside the
    /// key (`None` if that key changed or is gone).
    pub fn get<T>(
        &self,
        license_hash: &Hash,
        key_of: impl FnOnce(&str) -> Option<(T, [u8; 32])>,
    ) -> Option<(T, VerifiedLicense)> {
        let found = self.lock().get(license_hash).cloned()?;
        let (with, key) = key_of(&found.key_id)?;
        (key == found.key).then_some((with, found))
    }

    /// [`UnverifiedLicense::verify_signature`], remembering the license when it verifies.
    ///
    /// # Errors
    /// [`LicenseError::BadSignature`], as `verify_signature`; failures are not remembered.
    pub fn verify(
        &self,
        license: &UnverifiedLicense,
        key: &VerifyingKey,
    ) -> Result<LicenseClaims, LicenseError> {
        let claims = license.verify_signature(key)?;
        let verified = VerifiedLicense {
            key_id: license.key_id().to_owned(),
            key: *key.as_bytes(),
            claims: claims.clone(),
        };
        let mut seen = self.lock();
        if seen.len() >= self.capacity {
            seen.clear();
        }
        seen.insert(license.license_hash(), verified);
        Ok(claims)
    }

    /// The hash of the license that the QR payload `qr` decoded to when it was last given to
    /// [`VerifiedLicenses::remember_qr`]. Decoding a payload (base45, then inflate) costs more
    /// than the rest of a remembered license's check; the text's SHA-256 stands for it, so a
    /// payload differing in one character is decoded afresh.
    pub fn qr_hash(&self, qr: &str) -> Option<Hash> {
        let key = qr_key(qr);
        self.qr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
    }

    /// Remember that the QR payload `qr` decodes to the license with hash `license_hash`.
    pub fn remember_qr(&self, qr: &str, license_hash: Hash) {
        let key = qr_key(qr);
        let mut qrs = self.qr.lock().unwrap_or_else(|e| e.into_inner());
        if qrs.len() >= self.capacity {
            qrs.clear();
        }
        qrs.insert(key, license_hash);
    }

    /// Licenses held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn qr_key(qr: &str) -> Hash {
    use sha2::Digest as _;
    sha2::Sha256::digest(qr.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::{fixtures, license_hash, open_license, sign_license};

    #[test]
    fn a_remembered_license_is_not_a_pass_for_other_bytes_or_keys() {
        let key = fixtures::market_key();
        let rogue = fixtures::rogue_key();
        let claims = fixtures::business_license();
        let bytes = sign_license(&claims, &key).expect("sign");
        let hash = license_hash(&bytes);
        let memo = VerifiedLicenses::new(4);
        let same_key = |_: &str| Some(((), key.verifying_key().to_bytes()));
        assert!(
            memo.get(&hash, same_key).is_none(),
            "nothing before a check"
        );
        let license = open_license(&bytes).expect("open");
        // A failed check is not remembered.
        assert!(matches!(
            memo.verify(&license, &rogue.verifying_key()),
            Err(LicenseError::BadSignature { .. })
        ));
        assert!(memo.is_empty());
        assert_eq!(
            memo.verify(&license, &key.verifying_key()).ok(),
            Some(claims.clone())
        );
        let (_, found) = memo.get(&hash, same_key).expect("remembered");
        assert_eq!(found.claims, claims);
        assert_eq!(found.key_id, claims.issuer_key_id);
        // The key id now names another key, or none: not a pass.
        assert!(
            memo.get(&hash, |_| Some(((), rogue.verifying_key().to_bytes())))
                .is_none()
        );
        assert!(memo.get(&hash, |_| None::<((), [u8; 32])>).is_none());
        // One changed byte is another hash: not found.
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(memo.get(&license_hash(&forged), same_key).is_none());
    }

    #[test]
    fn a_qr_payload_is_remembered_by_its_exact_text() {
        let memo = VerifiedLicenses::new(2);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(memo.qr_hash("QL1:ABC"), None);
        memo.remember_qr("QL1:ABC", a);
        assert_eq!(memo.qr_hash("QL1:ABC"), Some(a));
        // Another character is another payload.
        assert_eq!(memo.qr_hash("QL1:ABD"), None);
        assert_eq!(memo.qr_hash("QL1:AB"), None);
        memo.remember_qr("QL1:XYZ", b);
        assert_eq!(memo.qr_hash("QL1:XYZ"), Some(b));
        // Full: starts over, within its capacity.
        memo.remember_qr("QL1:NEW", a);
        assert_eq!(memo.qr_hash("QL1:NEW"), Some(a));
        assert_eq!(memo.qr_hash("QL1:ABC"), None);
    }

    #[test]
    fn the_memo_stays_within_its_capacity() {
        let key = fixtures::market_key();
        let memo = VerifiedLicenses::new(3);
        for n in 0..10 {
            let mut claims = fixtures::business_license();
            claims.number = format!("GZ-2026-{n:04}");
            let bytes = sign_license(&claims, &key).expect("sign");
            let license = open_license(&bytes).expect("open");
            assert!(memo.verify(&license, &key.verifying_key()).is_ok());
            assert!(memo.len() <= 3);
            let again = memo.get(&license_hash(&bytes), |_| {
                Some(((), key.verifying_key().to_bytes()))
            });
            assert_eq!(again.map(|(_, v)| v.claims), Some(claims));
        }
    }
}
