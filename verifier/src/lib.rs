//! Pure verification of Qianlian evidence.
//!
//! Everything here is a plain function over bytes: no async runtime, no storage, no network, so
//! that a citizen's phone (or a wasm page) can link it and check evidence offline.
//!
//! - [`hash`]: RFC 6962 / RFC 9162 Merkle tree hashing (SHA-256, leaf prefix `0x00`, node `0x01`).
//! - [`proof`]: checking inclusion (RFC 9162 §2.1.3.2) and consistency (§2.1.4.2) proofs.
//! - [`tree`]: Merkle trees in memory: the RFC 6962 reference tree that makes proofs, and the
//!   compact frontier a growing log keeps to compute its root.
//! - [`note`]: C2SP signed notes with Ed25519 keys: verifier and signer keys in the standard
//!   text forms, signing, opening with k-of-n trusted signers.
//! - [`checkpoint`]: C2SP `tlog-checkpoint` tree heads carried in signed notes.
//! - [`license`]: e-licenses (电子证照): COSE_Sign1/CBOR documents signed by departments, their
//!   QR payload and JSON view, the cluster-signed status list, trust bundles, and the offline
//!   verdict.
//! - [`audit`]: audit evidence: self-contained evidence bundles of records with proofs, and
//!   streaming a whole log against checkpoints down to the first altered record.
//! - [`record`]: typed, versioned notarization records and their canonical bytes
//!   (`FORMAT_V1 ++ postcard`, frozen per version), so that evidence is decoded offline exactly
//!   as the log wrote it.
//!
//! Invariant: nothing here trusts its input. Every parser refuses what the specs do not allow,
//! and every error names who is at fault.

#![forbid(unsafe_code)]

pub mod audit;
pub mod checkpoint;
pub mod hash;
pub mod license;
pub mod note;
pub mod proof;
pub mod record;
pub mod tree;

#[cfg(test)]
mod test_vectors;

/// The Ed25519 crate whose key types appear in [`note`]'s API, so callers need no version match.
pub use ed25519_dalek;

pub use checkpoint::{Checkpoint, CheckpointError, VerifiedCheckpoint, open_checkpoint};
pub use hash::{Hash, empty_root, leaf_hash, node_hash};
pub use note::{NoteError, NoteSigner, NoteVerifier, OpenedNote, SignedNote, open_note, sign_note};
pub use proof::{ProofError, root_from_inclusion, verify_consistency, verify_inclusion};
pub use tree::{Frontier, MemoryTree, TreeError};
