//! Checking Merkle proofs against tree heads: RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency), which verify exactly the proofs RFC 6962 §2.1 defines.
//!
//! Each check first compares the proof's length with the length the sizes demand, so a cut or
//! padded proof is named as such instead of surfacing as a root mismatch. Then it runs the RFC's
//! bit-walking algorithm, which recomputes the root(s) from the proof without building a tree.

use crate::hash::{Hash, empty_root, node_hash};

/// Why a proof does not hold. Each variant says who is at fault. None is transient: sending the
/// same proof again gives the same answer, so retry only after fetching fresh evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= tree_size`, so also any index in the empty
    /// tree). Whoever paired this index with this tree head is at fault: usually the proof was
    /// asked against a checkpoint older than the entry.
    #[error(
        "leaf index {index} is outside a tree of size {tree_size}: ask for the proof against a checkpoint with more than {index} entries"
    )]
    IndexOutOfRange {
        /// The 0-based leaf index claimed.
        index: u64,
        /// The tree size claimed.
        tree_size: u64,
    },

    /// A consistency proof was asked from a larger tree to a smaller one. The caller is at fault:
    /// the two tree heads are swapped, or the "newer" one is older.
    #[error(
        "old tree size {old_size} is larger than new tree size {new_size}: a log only grows, so pass the older checkpoint first"
    )]
    SizesOutOfOrder {
        /// Size of the tree that should be the prefix.
        old_size: u64,
        /// Size of the tree that should extend it.
        new_size: u64,
    },

    /// The proof has the wrong number of hashes for these sizes. The prover is at fault, or the
    /// proof was cut or padded in transit, or it belongs to other sizes than the ones given.
    #[error("proof has {got} hashes, but these tree sizes need exactly {expected}")]
    WrongProofLength {
        /// Number of hashes RFC 6962 defines for these sizes.
        expected: usize,
        /// Number of hashes received.
        got: usize,
    },

    /// The root recomputed from the leaf and the proof is not the root of the tree head. The
    /// evidence does not hold: the leaf, index, size, proof or root is wrong. With a signed tree
    /// head this is what tampering looks like; report it, don't retry it.
    #[error(
        "proof leads to root {}, not the checkpoint's root {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    RootMismatch {
        /// Root recomputed from the proof.
        computed: Hash,
        /// Root claimed by the tree head.
        expected: Hash,
    },

    /// A consistency proof does not reproduce the old tree head's root: the proof or the old
    /// root is wrong (or the old root belongs to a tree of another size).
    #[error(
        "consistency proof leads to old root {}, not the old checkpoint's root {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    OldRootMismatch {
        /// Old root recomputed from the proof.
        computed: Hash,
        /// Root claimed by the old tree head.
        expected: Hash,
    },

    /// Two tree heads of the same size have different roots. If both are signed by the log, the
    /// log is at fault: it forked its history, which is exactly what checkpoints exist to expose.
    #[error(
        "two tree heads of size {size} have different roots {} and {}: the log forked its history",
        hex::encode(old_root),
        hex::encode(new_root)
    )]
    SameSizeDifferentRoots {
        /// The common tree size.
        size: u64,
        /// Root of the first tree head.
        old_root: Hash,
        /// Root of the second tree head.
        new_root: Hash,
    },
}

/// Number of hashes in the inclusion proof of leaf `index` in a tree of `tree_size` leaves: the
/// levels below the point where the leaf's path joins the tree's right border, plus one per
/// perfect subtree hanging off that border to its left. 0 when `index >= tree_size` (no proof).
pub fn inclusion_proof_len(index: u64, tree_size: u64) -> usize {
    if index >= tree_size {
        return 0;
    }
    let inner = u64::BITS - (index ^ (tree_size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Number of hashes in the consistency proof between trees of `old_size` and `new_size` leaves:
/// zero when `old_size` is 0 or not below `new_size`, else the length of RFC 6962's
/// `PROOF(m, D[n])`.
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size >= new_size {
        return 0;
    }
    // The proof is the inclusion path of the old tree's last leaf, minus the levels inside the
    // old tree's rightmost perfect subtree, plus that subtree's root unless it is the whole old
    // tree (then the verifier already has it: it is the old root).
    let shift = old_size.trailing_zeros() as usize;
    let seed = usize::from(!old_size.is_power_of_two());
    seed + inclusion_proof_len(old_size - 1, new_size) - shift
}

/// Recomputes the root of a tree of `tree_size` leaves from the hash of leaf `index` and its
/// inclusion proof (RFC 9162 §2.1.3.2). Compare the result with a trusted root, or use
/// [`verify_inclusion`].
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] and [`ProofError::WrongProofLength`].
pub fn root_from_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let expected = inclusion_proof_len(index, tree_size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    // `fn` walks the leaf's position up the tree, `sn` the last leaf's; when they meet, the leaf's
    // path has reached the right border, where levels without a right sibling are skipped.
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    Ok(r)
}

/// Checks that the leaf with hash `leaf_hash` is entry `index` (0-based) of the tree of
/// `tree_size` leaves whose root is `root`.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`], [`ProofError::WrongProofLength`] and
/// [`ProofError::RootMismatch`].
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(leaf_hash, index, tree_size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2): the log only appended.
///
/// Edge cases, where RFC 6962 defines no proof and `proof` must be empty: equal sizes need equal
/// roots; the empty tree (size 0, whose root must be `SHA-256()`) is a prefix of every tree.
///
/// # Errors
/// [`ProofError::SizesOutOfOrder`], [`ProofError::WrongProofLength`],
/// [`ProofError::SameSizeDifferentRoots`], [`ProofError::OldRootMismatch`] and
/// [`ProofError::RootMismatch`] (for the new root).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(ProofError::SameSizeDifferentRoots {
                size: old_size,
                old_root: *old_root,
                new_root: *new_root,
            });
        }
        return Ok(());
    }
    if old_size == 0 {
        let empty = empty_root();
        if *old_root != empty {
            return Err(ProofError::OldRootMismatch {
                computed: empty,
                expected: *old_root,
            });
        }
        return Ok(());
    }

    // When the old tree is a perfect subtree its root is the proof's implicit first hash.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(ProofError::WrongProofLength { expected, got: 0 }),
        }
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // `fr` rebuilds the old root, `sr` the new one, from the same walk up the tree.
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
