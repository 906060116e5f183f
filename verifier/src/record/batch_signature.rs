//! One signature over a run of records in the log: the node that seals a batch appends, right
//! after the batch's records, a record signing their log leaves.
//!
//! A batch signature record is written in format version 5: `[FORMAT_V5] ++
//! postcard(BatchSignatureRecord)`. It covers the `count` records just before it in the log
//! (log indices `s - count .. s` for a signature at `s`), whose records stay as small as
//! unsealed ones. Its Ed25519 signature covers [`BatchSignatureRecord::message`]: a fixed
//! context, the signer's role and public key, the count, and the RFC 6962 root of the covered
//! records' log leaf hashes (`leaf_hash` of their canonical bytes). So a covered record proves its
//! origin with the signature record and its inclusion path among the covered leaves, which anyone
//! holding the log (or an evidence bundle) computes; nothing of the seal is repeated per record.
//!
//! Who may sign what is checked per covered record: the key must be one the directory lists,
//! with the signature's role, for the department that answers for that record
//! ([`super::seal::responsible`]).

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use super::seal::{OriginError, Originator, SignerRole, verify_by};
use crate::Hash;
use crate::proof::root_from_inclusion;
use crate::tree::mth;

/// First byte of a batch signature record: version 5 of the record encoding.
pub const FORMAT_V5: u8 = 5;

/// Most records one batch signature covers.
pub const MAX_COVERED: u64 = 1 << 20;

/// Domain separation of batch signatures from every other signature.
const SIGNATURE_CONTEXT: &[u8] = b"qianlian/record-batch-signature/v1\n";

/// A signature over the `count` records just before this one in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSignatureRecord {
    /// When the batch was signed, Unix milliseconds.
    pub time_unix_ms: u64,
    /// The role the key signs in (a gateway node key).
    pub role: SignerRole,
    /// The signing key.
    #[serde(with = "super::hex_hash")]
    pub public_key: [u8; 32],
    /// How many records just before this one it covers (at least one).
    pub count: u64,
    /// RFC 6962 root of the covered records' log leaf hashes, in log order.
    #[serde(with = "super::hex_hash")]
    pub root: Hash,
    /// 64-byte Ed25519 signature over [`BatchSignatureRecord::message`].
    #[serde(with = "super::seal::hex_bytes")]
    pub signature: Vec<u8>,
}

impl BatchSignatureRecord {
    /// Sign the records whose log leaf hashes are `leaves` (in log order, at least one) with
    /// `key`, in `role`, at `time_unix_ms`.
    pub fn sign(
        role: SignerRole,
        key: &SigningKey,
        leaves: &[Hash],
        time_unix_ms: u64,
    ) -> BatchSignatureRecord {
        let mut signed = BatchSignatureRecord {
            time_unix_ms,
            role,
            public_key: key.verifying_key().to_bytes(),
            count: leaves.len() as u64,
            root: mth(leaves),
            signature: Vec::new(),
        };
        signed.signature = key.sign(&signed.message()).to_bytes().to_vec();
        signed
    }

    /// The bytes the signature covers: context, role, public key, count, root.
    pub fn message(&self) -> Vec<u8> {
        let mut out = SIGNATURE_CONTEXT.to_vec();
        out.push(self.role as u8);
        out.extend(self.public_key);
        out.extend(self.count.to_be_bytes());
        out.extend(self.root);
        out.extend(self.time_unix_ms.to_be_bytes());
        out
    }

    /// The signer as an originator speaking for `department` under `key_id` (for messages and
    /// authority checks: the key is the signature's, the department the covered record's).
    pub fn originator(&self, department: &str, key_id: &str) -> Originator {
        Originator {
            role: self.role,
            department: department.to_owned(),
            key_id: key_id.to_owned(),
            public_key: self.public_key,
        }
    }

    fn signer(&self) -> Originator {
        self.originator("(batch signature)", &hex::encode(&self.public_key[..8]))
    }

    fn bad(&self) -> OriginError {
        let s = self.signer();
        OriginError::BadSignature {
            department: s.department,
            key_id: s.key_id,
        }
    }

    /// Check the signature alone (not what it covers).
    pub fn verify_signature(&self) -> Result<(), OriginError> {
        verify_by(&self.signer(), &self.message(), &self.signature)
    }

    /// Check that `leaves` (the covered records' log leaf hashes, in log order) are what this
    /// record signed, and the signature.
    pub fn verify(&self, leaves: &[Hash]) -> Result<(), OriginError> {
        if leaves.len() as u64 != self.count || mth(leaves) != self.root {
            return Err(self.bad());
        }
        self.verify_signature()
    }

    /// Check that the record with log leaf hash `leaf` is covered record `index` (0-based, in
    /// log order), with `path` its inclusion path among the covered leaves, and the signature.
    pub fn verify_covered(
        &self,
        leaf: &Hash,
        index: u64,
        path: &[Hash],
    ) -> Result<(), OriginError> {
        let root = root_from_inclusion(leaf, index, self.count, path).map_err(|_| self.bad())?;
        if root != self.root {
            return Err(self.bad());
        }
        self.verify_signature()
    }

    /// The positions of the records this signature covers when it stands at `position` of a
    /// run of records (`None` if it would reach before the first).
    pub fn covered(&self, position: usize) -> Option<std::ops::Range<usize>> {
        let count = usize::try_from(self.count).ok()?;
        position.checked_sub(count).map(|start| start..position)
    }

    /// Whether the record's fields are in range: at least one and at most [`MAX_COVERED`]
    /// records covered, a 64-byte signature.
    pub fn check(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_COVERED {
            return Err(format!(
                "a batch signature covers 1 to {MAX_COVERED} records, not {}",
                self.count
            ));
        }
        if self.signature.len() != 64 {
            return Err(format!(
                "a batch signature is 64 bytes, not {}",
                self.signature.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf_hash;
    use crate::tree::root_and_paths;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn leaves(n: u8) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i, 1, 2])).collect()
    }

    #[test]
    fn a_signature_covers_exactly_its_records_in_order() -> Result<(), OriginError> {
        let l = leaves(7);
        let s = BatchSignatureRecord::sign(SignerRole::Gateway, &key(1), &l, 5);
        s.verify(&l)?;
        let (_, paths) = root_and_paths(&l);
        for (i, (leaf, path)) in l.iter().zip(&paths).enumerate() {
            s.verify_covered(leaf, i as u64, path)?;
        }
        let mut swapped = l.clone();
        swapped.swap(1, 2);
        assert!(s.verify(&swapped).is_err(), "order is signed");
        assert!(s.verify(&l[..6]).is_err(), "the count is signed");
        assert!(
            s.verify_covered(&l[1], 2, &paths[2]).is_err(),
            "a leaf at another place"
        );
        let mut later = s.clone();
        later.time_unix_ms += 1;
        assert!(later.verify(&l).is_err(), "the time is signed");
        let mut other_key = s.clone();
        other_key.public_key = key(2).verifying_key().to_bytes();
        assert!(other_key.verify(&l).is_err(), "the key is signed");
        let mut role = s.clone();
        role.role = SignerRole::LicenseIssuer;
        assert!(role.verify(&l).is_err(), "the role is signed");
        Ok(())
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let mut s = BatchSignatureRecord::sign(SignerRole::Gateway, &key(1), &leaves(1), 0);
        assert!(s.check().is_ok());
        s.count = 0;
        assert!(s.check().is_err());
        s.count = 1;
        s.signature.pop();
        assert!(s.check().is_err());
    }
}
