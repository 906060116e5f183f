//! Seals made for a batch of records with one signature: a gateway under load seals the records
//! it writes together, and every node verifies one signature per batch instead of one per record.
//!
//! A batch-sealed record is written in format version 4: `[FORMAT_V4] ++
//! postcard(BatchSealedRecord)`, whose inner record is a version-1 record. The batch is an
//! RFC 6962 Merkle tree whose leaves are the records' [`seal_message`]s (so each leaf binds the
//! originator and the record, as a single seal does); the originator's Ed25519 signature covers
//! [`batch_message`]: a fixed context, the public key, the batch size and the tree's root. Each
//! record carries its index, the batch size, its inclusion path and the signature, and so proves
//! its origin alone: a record taken out of its batch still verifies, and it cannot be moved to
//! another batch, index or originator without breaking the path or the signature.
//!
//! Who must seal what is the same as for single seals ([`super::seal::responsible`]).

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Record;
use super::seal::{OriginError, Originator, seal_message, verify_by};
use crate::proof::root_from_inclusion;
use crate::tree::root_and_paths;
use crate::{Hash, leaf_hash};

/// First byte of a batch-sealed record: version 4 of the record encoding.
pub const FORMAT_V4: u8 = 4;

/// Domain separation of batch signatures from single seals and every other signature.
const BATCH_CONTEXT: &[u8] = b"qianlian/record-batch-seal/v1\n";

/// A record's place in a signed batch and the batch's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSeal {
    /// Who sealed the record; every record of a batch has the same key, and may speak for
    /// different departments (a node serving several).
    pub originator: Originator,
    /// Records in the batch.
    pub batch_size: u64,
    /// This record's leaf index in the batch.
    pub index: u64,
    /// RFC 6962 inclusion path of this record's leaf in the batch tree.
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
    /// 64-byte Ed25519 signature over [`batch_message`].
    #[serde(with = "super::seal::hex_bytes")]
    pub signature: Vec<u8>,
}

/// A version-1 record sealed as one of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSealedRecord {
    pub record: Record,
    pub seal: BatchSeal,
}

/// The leaf of `record` sealed by `originator` in a batch tree.
pub fn batch_leaf(originator: &Originator, record: &Record) -> Hash {
    leaf_hash(&seal_message(originator, record))
}

/// The bytes a batch signature covers: context, public key, batch size, root.
pub fn batch_message(public_key: &[u8; 32], batch_size: u64, root: &Hash) -> Vec<u8> {
    let mut out = BATCH_CONTEXT.to_vec();
    out.extend(public_key);
    out.extend(batch_size.to_be_bytes());
    out.extend(root);
    out
}

/// A verified batch signature, as a cache key: SHA-256 of the public key, the signed message's
/// root and size, and the signature. Equal keys mean the same signature over the same batch.
pub type BatchKey = [u8; 32];

impl BatchSealedRecord {
    /// Seal `records` (version-1 records, each with the originator it is sealed as) with one
    /// signature by `key`, whose public key replaces each originator's. In order; empty in,
    /// empty out.
    pub fn seal_batch(
        records: Vec<(Record, Originator)>,
        key: &SigningKey,
    ) -> Vec<BatchSealedRecord> {
        let public_key = key.verifying_key().to_bytes();
        let records: Vec<(Record, Originator)> = records
            .into_iter()
            .map(|(r, mut o)| {
                o.public_key = public_key;
                (r, o)
            })
            .collect();
        let leaves: Vec<Hash> = records.iter().map(|(r, o)| batch_leaf(o, r)).collect();
        let (root, paths) = root_and_paths(&leaves);
        let size = leaves.len() as u64;
        let signature = key
            .sign(&batch_message(&public_key, size, &root))
            .to_bytes()
            .to_vec();
        records
            .into_iter()
            .zip(paths)
            .enumerate()
            .map(|(i, ((record, originator), path))| BatchSealedRecord {
                record,
                seal: BatchSeal {
                    originator,
                    batch_size: size,
                    index: i as u64,
                    path,
                    signature: signature.clone(),
                },
            })
            .collect()
    }

    fn bad(&self) -> OriginError {
        OriginError::BadSignature {
            department: self.seal.originator.department.clone(),
            key_id: self.seal.originator.key_id.clone(),
        }
    }

    /// The batch's root as this record's path gives it.
    fn root(&self) -> Result<Hash, OriginError> {
        let s = &self.seal;
        root_from_inclusion(
            &batch_leaf(&s.originator, &self.record),
            s.index,
            s.batch_size,
            &s.path,
        )
        .map_err(|_| self.bad())
    }

    /// What identifies this record's batch signature: equal for every record of one batch.
    /// Fails as the signature check would if the path does not lead to a root.
    pub fn batch_key(&self) -> Result<BatchKey, OriginError> {
        let root = self.root()?;
        let mut h = Sha256::new();
        h.update(self.seal.originator.public_key);
        h.update(self.seal.batch_size.to_be_bytes());
        h.update(root);
        h.update(&self.seal.signature);
        Ok(h.finalize().into())
    }

    /// Check the path and the signature (not whether the key may seal this record:
    /// [`super::OriginKeys`]).
    pub fn verify_signature(&self) -> Result<(), OriginError> {
        let o = &self.seal.originator;
        let root = self.root()?;
        verify_by(
            o,
            &batch_message(&o.public_key, self.seal.batch_size, &root),
            &self.seal.signature,
        )
    }
}

/// Serialises a list of hashes as hex strings in human-readable formats and as raw arrays in
/// postcard.
mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Hash;

    pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(hashes.iter().map(hex::encode))
        } else {
            s.collect_seq(hashes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        if d.is_human_readable() {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|h| {
                    let bytes = hex::decode(h).map_err(serde::de::Error::custom)?;
                    Hash::try_from(bytes.as_slice())
                        .map_err(|_| serde::de::Error::custom("a hash is 32 bytes"))
                })
                .collect()
        } else {
            Vec::<Hash>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests;
