//! The notarization log's Merkle tree as stored: complete perfect subtrees addressed by
//! `(level, index)`, and RFC 6962 roots and proofs for any past tree size computed from them.
//!
//! Node `(0, i)` is the leaf hash of record `i`; node `(l, j)` is
//! `node_hash((l-1, 2j), (l-1, 2j+1))`, the root of leaves `j·2^l .. (j+1)·2^l`. A node is stored
//! once it is complete and never changes, so every past tree is still there: `MTH(D[a:b])` for any
//! range the RFC's recursion visits is folded from at most `log2(b-a)+1` stored nodes (the binary
//! decomposition of the range), and a proof takes O(log n) lookups in all.
//!
//! This module is pure: the nodes come from a caller-supplied lookup (RocksDB in the state
//! machine, a map in the tests), so it is tested against `qianlian_verifier::MemoryTree` without
//! a database. The proof functions follow RFC 6962 §2.1.1 (`PATH`) and §2.1.2 (`PROOF`,
//! `SUBPROOF`) literally, with each `MTH` replaced by [`range_hash`].

use qianlian_verifier::{Hash, empty_root, node_hash};

/// Where a complete perfect subtree sits: its height and its position at that height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subtree {
    /// Height above the leaves: 0 for a leaf.
    pub level: u8,
    /// Position among the nodes of that level, from 0.
    pub index: u64,
}

impl Subtree {
    /// The node at `level`, position `index`.
    pub fn new(level: u8, index: u64) -> Subtree {
        Subtree { level, index }
    }

    /// The log indices below this node: `index·2^level .. (index+1)·2^level`, saturated at
    /// `u64::MAX` (which no log reaches).
    pub fn leaves(&self) -> std::ops::Range<u64> {
        let start = self
            .index
            .checked_shl(u32::from(self.level))
            .unwrap_or(u64::MAX);
        let width = 1u64.checked_shl(u32::from(self.level)).unwrap_or(u64::MAX);
        start..start.saturating_add(width)
    }
}

/// The perfect subtrees that make up leaves `start..end`, left to right: the binary
/// decomposition of `end - start`, largest first.
///
/// For a range RFC 6962's recursion visits (`start` a multiple of a power of two at least
/// `end - start`), every piece is aligned and so is a stored node; so is any prefix `0..n`.
/// Other ranges are decomposed too, but their pieces may not be nodes of the tree.
pub fn pieces(start: u64, end: u64) -> Vec<Subtree> {
    let mut out = Vec::new();
    let mut pos = start;
    let width = end.saturating_sub(start);
    for level in (0..64u8).rev() {
        let size = 1u64 << level;
        if width & size != 0 {
            out.push(Subtree::new(level, pos >> level));
            pos += size;
        }
    }
    out
}

/// `MTH(D[start:end])` for a range RFC 6962's recursion visits, folded from its
/// [`pieces`] with `node`: the last piece is the rightmost, so the fold runs right to left.
pub fn range_hash<E>(
    start: u64,
    end: u64,
    node: &mut impl FnMut(Subtree) -> Result<Hash, E>,
) -> Result<Hash, E> {
    let pieces = pieces(start, end);
    let mut hashes = Vec::with_capacity(pieces.len());
    for id in pieces {
        hashes.push(node(id)?);
    }
    Ok(fold(&hashes))
}

/// Fold perfect-subtree roots, largest (leftmost) first, into the root over all of them.
fn fold(hashes: &[Hash]) -> Hash {
    let mut rev = hashes.iter().rev();
    let Some(last) = rev.next() else {
        return empty_root();
    };
    rev.fold(*last, |right, left| node_hash(left, &right))
}

/// `MTH(D[0:size])`: the root of the tree of the first `size` leaves.
pub fn root<E>(size: u64, node: &mut impl FnMut(Subtree) -> Result<Hash, E>) -> Result<Hash, E> {
    range_hash(0, size, node)
}

/// The largest power of two smaller than `n` (`n >= 2`): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// `PATH(index, D[0:size])`, bottom-up. The caller checks `index < size`.
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    node: &mut impl FnMut(Subtree) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    let mut out = Vec::new();
    path(index, 0, size, node, &mut out)?;
    Ok(out)
}

fn path<E>(
    m: u64,
    lo: u64,
    hi: u64,
    node: &mut impl FnMut(Subtree) -> Result<Hash, E>,
    out: &mut Vec<Hash>,
) -> Result<(), E> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m - lo < k {
        path(m, lo, lo + k, node, out)?;
        out.push(range_hash(lo + k, hi, node)?);
    } else {
        path(m, lo + k, hi, node, out)?;
        out.push(range_hash(lo, lo + k, node)?);
    }
    Ok(())
}

/// `PROOF(old_size, D[0:new_size])`, bottom-up; empty when `old_size` is 0 or equals
/// `new_size`, where RFC 6962 defines no proof. The caller checks `old_size <= new_size`.
pub fn consistency_proof<E>(
    old_size: u64,
    new_size: u64,
    node: &mut impl FnMut(Subtree) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    let mut out = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(old_size, 0, new_size, true, node, &mut out)?;
    }
    Ok(out)
}

fn subproof<E>(
    m: u64,
    lo: u64,
    hi: u64,
    complete: bool,
    node: &mut impl FnMut(Subtree) -> Result<Hash, E>,
    out: &mut Vec<Hash>,
) -> Result<(), E> {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(range_hash(lo, hi, node)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(m, lo, lo + k, complete, node, out)?;
        out.push(range_hash(lo + k, hi, node)?);
    } else {
        subproof(m - k, lo + k, hi, false, node, out)?;
        out.push(range_hash(lo, lo + k, node)?);
    }
    Ok(())
}

/// The right edge of the growing tree: the roots of the perfect subtrees that make up the
/// current size, largest first (one per set bit of the size): the shape of
/// `qianlian_verifier::Frontier`, which cannot be used here because appending must report every
/// node it completes, and those are what the store writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    size: u64,
    nodes: Vec<Hash>,
}

impl Edge {
    /// The edge of a tree of `size` leaves from its edge nodes, [`pieces`]`(0, size)` in order.
    /// `None` if there is not one node per set bit of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Edge> {
        (nodes.len() == size.count_ones() as usize).then_some(Edge { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append leaf hash `leaf` as leaf `size`; `emit` receives the leaf node and every node the
    /// leaf completes, bottom-up. `None` (nothing appended) if the tree already holds `u64::MAX`
    /// leaves.
    pub fn append(&mut self, leaf: Hash, mut emit: impl FnMut(Subtree, Hash)) -> Option<()> {
        let index = self.size;
        let next = index.checked_add(1)?;
        let mut hash = leaf;
        let mut level = 0u8;
        emit(Subtree::new(0, index), hash);
        // Each trailing 1 bit of the old size is a complete left sibling waiting on the edge.
        let mut carry = index;
        while carry & 1 == 1 {
            let Some(left) = self.nodes.pop() else {
                // Unreachable by the invariant; refuse rather than corrupt the tree.
                return None;
            };
            hash = node_hash(&left, &hash);
            carry >>= 1;
            level += 1;
            emit(Subtree::new(level, carry), hash);
        }
        self.nodes.push(hash);
        self.size = next;
        Some(())
    }

    /// The root of the whole tree (`SHA-256()` when empty).
    pub fn root(&self) -> Hash {
        fold(&self.nodes)
    }
}

#[cfg(test)]
mod tests;
