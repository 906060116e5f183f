//! Merkle trees built in memory, as RFC 6962 §2.1 defines them.
//!
//! - [`MemoryTree`] is the reference: it keeps every leaf hash and computes MTH, PATH and PROOF by
//!   the RFC's recursive definitions, literally. It is slow (O(n) per root) and obviously right,
//!   which is what the storage crate's incremental tree is tested against; it also serves
//!   evidence bundles over small trees.
//! - [`Frontier`] is the compact right edge of a growing tree: one perfect-subtree root per set
//!   bit of the size. Appending costs O(log n) hashes and the root O(log n); the storage crate
//!   persists it as `(size, nodes)` through [`Frontier::from_parts`] / [`Frontier::nodes`].

use crate::hash::{Hash, empty_root, leaf_hash, node_hash};

/// A question the tree cannot answer. The caller is at fault; asking again after the tree has
/// grown can succeed for [`TreeError::SizeBeyondTree`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A tree size larger than the number of leaves held.
    #[error("tree size {size} is beyond the {leaves} leaves held")]
    SizeBeyondTree {
        /// The size asked for.
        size: u64,
        /// Leaves the tree holds.
        leaves: u64,
    },
    /// An inclusion proof for a leaf outside the tree of the given size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The 0-based leaf index asked for.
        index: u64,
        /// The tree size asked for.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder {
        /// The first size asked for.
        old_size: u64,
        /// The second size asked for.
        new_size: u64,
    },
    /// Persisted frontier parts that cannot describe a tree: a frontier of `size` leaves has one
    /// node per set bit of `size`. The store they came from is corrupt or from another format.
    #[error("a frontier of {size} leaves has {expected} nodes, not {got}")]
    FrontierShape {
        /// The persisted size.
        size: u64,
        /// Nodes such a size needs (its number of set bits).
        expected: usize,
        /// Nodes found.
        got: usize,
    },
}

/// An append-only Merkle tree that keeps all leaf hashes in memory and answers for every past
/// size. Leaves are leaf hashes (`SHA-256(0x00 || entry)`), not entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over the given leaf hashes, in log order.
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }

    /// Appends a leaf hash; returns its 0-based index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        self.leaves.push(leaf_hash);
        self.size() - 1
    }

    /// Appends an entry by its canonical bytes (hashed as a leaf); returns its 0-based index.
    pub fn push_entry(&mut self, entry: &[u8]) -> u64 {
        self.push(leaf_hash(entry))
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The leaf hashes, in log order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        &self.leaves
    }

    /// Root of the whole tree (`SHA-256()` when empty).
    pub fn root(&self) -> Hash {
        mth(&self.leaves)
    }

    /// Root of the tree formed by the first `size` leaves: `MTH(D[size])`.
    ///
    /// # Errors
    /// [`TreeError::SizeBeyondTree`].
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        Ok(mth(self.prefix(size)?))
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves:
    /// `PATH(index, D[size])`, ordered from the leaf's sibling up to the root's child.
    ///
    /// # Errors
    /// [`TreeError::SizeBeyondTree`] and [`TreeError::IndexOutOfRange`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        let leaves = self.prefix(size)?;
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        // `index < size`, and `size` leaves fit in memory, so `index` fits a usize.
        path(index as usize, leaves, &mut proof);
        Ok(proof)
    }

    /// Consistency proof between the trees of the first `old_size` and the first `new_size`
    /// leaves: `PROOF(old_size, D[new_size])`. Empty when `old_size` is 0 or equals `new_size`,
    /// where RFC 6962 defines no proof.
    ///
    /// # Errors
    /// [`TreeError::SizeBeyondTree`] and [`TreeError::SizesOutOfOrder`].
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, TreeError> {
        let leaves = self.prefix(new_size)?;
        if old_size > new_size {
            return Err(TreeError::SizesOutOfOrder { old_size, new_size });
        }
        let mut proof = Vec::new();
        if old_size > 0 && old_size < new_size {
            subproof(old_size as usize, leaves, true, &mut proof);
        }
        Ok(proof)
    }

    fn prefix(&self, size: u64) -> Result<&[Hash], TreeError> {
        usize::try_from(size)
            .ok()
            .and_then(|n| self.leaves.get(..n))
            .ok_or(TreeError::SizeBeyondTree {
                size,
                leaves: self.size(),
            })
    }
}

/// The largest power of two smaller than `n` (`n >= 2`): where RFC 6962 splits a tree of `n`
/// leaves into a perfect left subtree and the rest.
pub(crate) fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// `MTH(D[n])` of RFC 6962 §2.1.
/// RFC 6962 root (`MTH`) of `leaves`, in order (`SHA-256()` when empty).
pub fn root_of(leaves: &[Hash]) -> Hash {
    mth(leaves)
}

pub(crate) fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let k = split(leaves.len());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// `MTH(D[n])` and `PATH(m, D[n])` for every leaf `m`, in order: what
/// [`MemoryTree::root`] and [`MemoryTree::inclusion_proof`] give one by one, in O(n log n)
/// hashes instead of O(n) per path.
pub fn root_and_paths(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    match leaves {
        [] => (empty_root(), Vec::new()),
        [leaf] => (*leaf, vec![Vec::new()]),
        _ => {
            let k = split(leaves.len());
            let (left_root, mut paths) = root_and_paths(&leaves[..k]);
            let (right_root, right) = root_and_paths(&leaves[k..]);
            for p in &mut paths {
                p.push(right_root);
            }
            paths.extend(right.into_iter().map(|mut p| {
                p.push(left_root);
                p
            }));
            (node_hash(&left_root, &right_root), paths)
        }
    }
}

/// `PATH(m, D[n])` of RFC 6962 §2.1.1, appended to `out` bottom-up (`m < n`).
fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &leaves[..k], out);
        out.push(mth(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(mth(&leaves[..k]));
    }
}

/// `SUBPROOF(m, D[n], b)` of RFC 6962 §2.1.2, appended to `out` bottom-up (`0 < m <= n`).
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(mth(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(mth(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(mth(&leaves[..k]));
    }
}

/// The right edge of an append-only Merkle tree: enough to append and to compute the root, but
/// not to prove anything about past leaves.
///
/// Invariant: `nodes` holds the roots of the perfect subtrees that make up the tree, largest
/// (leftmost) first, one per set bit of `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from persisted parts (see [`Frontier::nodes`]).
    ///
    /// # Errors
    /// [`TreeError::FrontierShape`] when `nodes` has not one hash per set bit of `size`. The node
    /// values themselves cannot be checked here: compare the root with a trusted checkpoint.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, TreeError> {
        let expected = size.count_ones() as usize;
        if nodes.len() != expected {
            return Err(TreeError::FrontierShape {
                size,
                expected,
                got: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first: what to persist with the size.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash; returns its 0-based index.
    ///
    /// # Panics
    /// If the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.size;
        let mut hash = leaf_hash;
        // Each trailing 1 bit of the old size is a perfect subtree of the new leaf's height:
        // merge it, like a carry in binary addition.
        let mut carry = index;
        while carry & 1 == 1 {
            let left = self
                .nodes
                .pop()
                .expect("frontier invariant: one node per set bit of size");
            hash = node_hash(&left, &hash);
            carry >>= 1;
        }
        self.nodes.push(hash);
        self.size = index.checked_add(1).expect("a log never holds 2^64 leaves");
        index
    }

    /// Appends an entry by its canonical bytes (hashed as a leaf); returns its 0-based index.
    ///
    /// # Panics
    /// If the tree already holds `u64::MAX` leaves.
    pub fn append_entry(&mut self, entry: &[u8]) -> u64 {
        self.append(leaf_hash(entry))
    }

    /// Root of the tree: the subtree roots folded from the right (`SHA-256()` when empty).
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests;
