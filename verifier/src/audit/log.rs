//! Verifying a whole log: stream its records in order against trusted checkpoints, and when a
//! root does not match, find the first altered record with a logarithmic number of proofs.
//!
//! [`LogVerifier`] recomputes every leaf hash and the root at each checkpoint's size. A mismatch
//! says only that something among the first `tree_size` records changed; [`locate_first_bad`]
//! then asks the node for inclusion proofs, checks each against the *trusted* root (so the node
//! cannot lie about the committed tree), and compares the committed subtree hashes a proof
//! reveals with the same subtrees recomputed from the streamed records, descending into the
//! leftmost one that differs.

use crate::checkpoint::VerifiedCheckpoint;
use crate::hash::{Hash, empty_root, leaf_hash};
use crate::proof::{ProofError, verify_consistency, verify_inclusion};
use crate::record::{DecodeError, Record};
use crate::tree::{Frontier, mth, split};

/// A tree size and root the caller trusts: from a checkpoint whose signatures it checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedRoot {
    /// Number of leaves the root commits to.
    pub tree_size: u64,
    /// RFC 6962 root of the first `tree_size` leaves.
    pub root: Hash,
}

impl From<&VerifiedCheckpoint> for TrustedRoot {
    fn from(checkpoint: &VerifiedCheckpoint) -> Self {
        Self {
            tree_size: checkpoint.checkpoint.size,
            root: checkpoint.checkpoint.root,
        }
    }
}

impl From<(u64, Hash)> for TrustedRoot {
    fn from((tree_size, root): (u64, Hash)) -> Self {
        Self { tree_size, root }
    }
}

/// A checkpoint the streamed records reproduced: its first `tree_size` records are the ones it
/// committed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMatch {
    pub tree_size: u64,
    pub root: Hash,
}

/// A record whose bytes do not decode. Its leaf hash still counts towards the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableRecord {
    pub log_index: u64,
    pub error: DecodeError,
}

/// Why a log or its checkpoints do not hold. None is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Two trusted checkpoints give the same size different roots: the log forked, or one of
    /// them is not this log's. The signers are at fault.
    #[error(
        "two checkpoints of size {tree_size} have different roots {} and {}: the log forked",
        hex::encode(first),
        hex::encode(second)
    )]
    ConflictingCheckpoints {
        tree_size: u64,
        first: Hash,
        second: Hash,
    },

    /// The streamed records do not give a trusted checkpoint's root: a record among the first
    /// `tree_size` was altered, removed or inserted. [`locate_first_bad`] finds which.
    #[error(
        "the first {tree_size} records give root {}, not the checkpoint's {}: a record was altered, removed or inserted",
        hex::encode(computed),
        hex::encode(trusted)
    )]
    RootMismatch {
        tree_size: u64,
        trusted: Hash,
        computed: Hash,
    },

    /// A newer checkpoint does not extend an older one: the log was rewritten, or the proof is
    /// not the one for these sizes.
    #[error(
        "checkpoint of size {new_size} does not extend checkpoint of size {old_size}: {source}"
    )]
    Inconsistent {
        old_size: u64,
        new_size: u64,
        source: ProofError,
    },
}

/// Streams a log's records in order and checks them against trusted roots.
#[derive(Debug, Clone)]
pub struct LogVerifier {
    /// Sorted by size, without repeats, all of size > 0.
    checkpoints: Vec<TrustedRoot>,
    /// How many of `checkpoints` the stream has reached.
    reached: usize,
    frontier: Frontier,
    leaves: Vec<Hash>,
    matched: Vec<CheckpointMatch>,
    mismatched: Vec<LogError>,
    undecodable: Vec<UndecodableRecord>,
}

/// What a stream of records showed, from [`LogVerifier::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// Records streamed.
    pub size: u64,
    /// Root of all streamed records.
    pub root: Hash,
    /// Every streamed record's leaf hash, by log index: what [`locate_first_bad`] needs.
    pub leaves: Vec<Hash>,
    /// Checkpoints the records reproduced, by size.
    pub matched: Vec<CheckpointMatch>,
    /// [`LogError::RootMismatch`] for each checkpoint they did not, by size.
    pub mismatched: Vec<LogError>,
    /// Checkpoints larger than the stream: records the log committed to are missing (or the
    /// stream stopped early).
    pub unreached: Vec<TrustedRoot>,
    /// Records that do not decode, by log index.
    pub undecodable: Vec<UndecodableRecord>,
}

impl LogSummary {
    /// Whether every checkpoint was reached and reproduced and every record decoded.
    pub fn is_intact(&self) -> bool {
        self.mismatched.is_empty() && self.unreached.is_empty() && self.undecodable.is_empty()
    }
}

impl LogVerifier {
    /// A verifier for a log streamed from index 0, checked against `checkpoints` (in any order;
    /// the same checkpoint may appear twice).
    ///
    /// # Errors
    /// [`LogError::ConflictingCheckpoints`] for one size with two roots, and
    /// [`LogError::RootMismatch`] for a size-0 checkpoint whose root is not the empty tree's.
    pub fn new(mut checkpoints: Vec<TrustedRoot>) -> Result<Self, LogError> {
        checkpoints.sort_by_key(|c| c.tree_size);
        checkpoints.dedup();
        if let Some(pair) = checkpoints
            .windows(2)
            .find(|w| w[0].tree_size == w[1].tree_size)
        {
            return Err(LogError::ConflictingCheckpoints {
                tree_size: pair[0].tree_size,
                first: pair[0].root,
                second: pair[1].root,
            });
        }
        if let Some(empty) = checkpoints.first().filter(|c| c.tree_size == 0) {
            if empty.root != empty_root() {
                return Err(LogError::RootMismatch {
                    tree_size: 0,
                    trusted: empty.root,
                    computed: empty_root(),
                });
            }
            checkpoints.remove(0);
        }
        Ok(Self {
            checkpoints,
            reached: 0,
            frontier: Frontier::new(),
            leaves: Vec::new(),
            matched: Vec::new(),
            mismatched: Vec::new(),
            undecodable: Vec::new(),
        })
    }

    /// Feeds the next record's canonical bytes. When the log reaches a checkpoint's size, says
    /// whether the root matches. A record that does not decode is noted (see
    /// [`LogVerifier::undecodable`]) and still hashed.
    ///
    /// # Errors
    /// [`LogError::RootMismatch`] when the log reaches a checkpoint's size with another root.
    /// The verifier stays usable: keep streaming to check later checkpoints, and pass
    /// [`LogVerifier::leaves`] to [`locate_first_bad`].
    pub fn push(&mut self, record_bytes: &[u8]) -> Result<Option<CheckpointMatch>, LogError> {
        let log_index = self.frontier.size();
        if let Err(error) = Record::decode(record_bytes) {
            self.undecodable
                .push(UndecodableRecord { log_index, error });
        }
        let leaf = leaf_hash(record_bytes);
        self.frontier.append(leaf);
        self.leaves.push(leaf);
        let Some(&trusted) = self
            .checkpoints
            .get(self.reached)
            .filter(|c| c.tree_size == self.frontier.size())
        else {
            return Ok(None);
        };
        self.reached += 1;
        let computed = self.frontier.root();
        if computed == trusted.root {
            let matched = CheckpointMatch {
                tree_size: trusted.tree_size,
                root: computed,
            };
            self.matched.push(matched);
            return Ok(Some(matched));
        }
        let mismatch = LogError::RootMismatch {
            tree_size: trusted.tree_size,
            trusted: trusted.root,
            computed,
        };
        self.mismatched.push(mismatch.clone());
        Err(mismatch)
    }

    /// Records streamed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Leaf hashes of the records streamed so far, by log index.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    /// Records so far that do not decode.
    pub fn undecodable(&self) -> &[UndecodableRecord] {
        &self.undecodable
    }

    /// Ends the stream.
    pub fn finish(self) -> LogSummary {
        LogSummary {
            size: self.frontier.size(),
            root: self.frontier.root(),
            leaves: self.leaves,
            matched: self.matched,
            mismatched: self.mismatched,
            unreached: self.checkpoints[self.reached..].to_vec(),
            undecodable: self.undecodable,
        }
    }
}

/// Why [`locate_first_bad`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError<E> {
    /// Fewer leaf hashes were given than the tree size. The caller is at fault.
    #[error("{leaves} leaf hashes given for a tree of {tree_size}")]
    TooFewLeaves { leaves: u64, tree_size: u64 },

    /// A checkpoint of the empty tree whose root is not `SHA-256()`: no leaf can be at fault,
    /// the checkpoint is.
    #[error(
        "a checkpoint of the empty tree has root {}, not SHA-256()",
        hex::encode(trusted_root)
    )]
    EmptyTree { trusted_root: Hash },

    /// Fetching the proof of a leaf failed (node unreachable, storage error).
    #[error("fetching the proof of leaf {leaf_index} failed: {error}")]
    Fetch { leaf_index: u64, error: E },

    /// The node's proof for a leaf does not lead to the trusted root: its stored tree does not
    /// match the checkpoint either, so it cannot point to the altered record.
    #[error(
        "the node's proof of leaf {leaf_index} does not match the trusted checkpoint, so its stored tree was altered too: {source}"
    )]
    Proof { leaf_index: u64, source: ProofError },
}

/// Finds the smallest log index among the first `tree_size` whose recomputed leaf hash (from
/// `leaves`) differs from the one committed to by `trusted_root`; `None` if the leaves give
/// that root.
///
/// `fetch(i)` returns the node's claimed leaf hash for index `i` and its inclusion proof against
/// `tree_size`. Each proof is checked against `trusted_root` before it is used. The search
/// fetches the last leaf of the current subtree: its proof reveals the committed hashes of the
/// left subtrees along that subtree's right edge. Each fetch descends at least one level, so
/// there are at most `ceil(log2(tree_size))` fetches.
///
/// # Errors
/// [`LocateError::TooFewLeaves`], [`LocateError::EmptyTree`], [`LocateError::Fetch`] and
/// [`LocateError::Proof`].
pub fn locate_first_bad<E>(
    leaves: &[Hash],
    tree_size: u64,
    trusted_root: Hash,
    mut fetch: impl FnMut(u64) -> Result<(Hash, Vec<Hash>), E>,
) -> Result<Option<u64>, LocateError<E>> {
    let too_few = LocateError::TooFewLeaves {
        leaves: leaves.len() as u64,
        tree_size,
    };
    let Some(leaves) = usize::try_from(tree_size)
        .ok()
        .and_then(|n| leaves.get(..n))
    else {
        return Err(too_few);
    };
    if mth(leaves) == trusted_root {
        return Ok(None);
    }
    if leaves.is_empty() {
        return Err(LocateError::EmptyTree { trusted_root });
    }
    // Invariant: [lo, hi) is a node of the tree whose committed hash differs from the
    // recomputed one, and every leaf before `lo` is as committed.
    let (mut lo, mut hi) = (0, leaves.len());
    while hi - lo > 1 {
        let leaf_index = (hi - 1) as u64;
        let (claimed, proof) =
            fetch(leaf_index).map_err(|error| LocateError::Fetch { leaf_index, error })?;
        verify_inclusion(&claimed, leaf_index, tree_size, &proof, &trusted_root)
            .map_err(|source| LocateError::Proof { leaf_index, source })?;
        let node = (lo, hi);
        // Top-down, the siblings inside [lo, hi) are the left children along its right edge.
        let inside = sibling_ranges(hi - 1, leaves.len())
            .into_iter()
            .zip(proof.iter().rev())
            .filter(move |&((a, b), _)| node.0 <= a && b <= node.1);
        for ((a, b), committed) in inside {
            if mth(&leaves[a..b]) != *committed {
                (lo, hi) = (a, b);
                break;
            }
            // The left child is as committed, so the right child differs.
            lo = b;
        }
    }
    Ok(Some(lo as u64))
}

/// The leaf ranges of the siblings along leaf `index`'s path in a tree of `size` leaves,
/// top-down: the reverse of the order of its inclusion proof.
fn sibling_ranges(index: usize, size: usize) -> Vec<(usize, usize)> {
    let (mut lo, mut hi) = (0, size);
    let mut out = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split(hi - lo);
        if index < mid {
            out.push((mid, hi));
            hi = mid;
        } else {
            out.push((lo, mid));
            lo = mid;
        }
    }
    out
}

/// Checks that the tree `new` extends the tree `old` (both `(size, root)`), with the node's
/// consistency proof: the log only appended between the two checkpoints.
///
/// # Errors
/// [`LogError::Inconsistent`], wrapping the [`ProofError`].
pub fn check_consistency(
    old: (u64, Hash),
    new: (u64, Hash),
    proof: &[Hash],
) -> Result<(), LogError> {
    verify_consistency(old.0, new.0, &old.1, &new.1, proof).map_err(|source| {
        LogError::Inconsistent {
            old_size: old.0,
            new_size: new.0,
            source,
        }
    })
}

#[cfg(test)]
mod tests;
