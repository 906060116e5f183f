//! The errors of the state machine's reads and of its integrity check, raised in several of its
//! files (the audit index and the license state report what their checks find as
//! [`IntegrityError`]).

use crate::db::StoreError;

/// A tree size or log index this node cannot answer for. The caller is at fault, or asked a
/// node that has not caught up: for [`RangeError::TreeSize`] a retry after the tree has grown
/// may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// A tree size beyond what this node applied.
    #[error("tree size {size} is beyond this node's log: valid tree sizes are 0..={applied}")]
    TreeSize { size: u64, applied: u64 },
    /// A log index outside the tree size asked about.
    #[error("log index {index} is not in a tree of size {size}: valid log indices are 0..{size}")]
    LogIndex { index: u64, size: u64 },
    /// A consistency proof from a larger tree to a smaller one.
    #[error(
        "old tree size {old_size} is larger than new tree size {new_size}: valid old sizes are 0..={new_size}"
    )]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
}

/// Why a read of the applied tree failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The question is out of range; see [`RangeError`].
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Storage failed or holds damaged data.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rocksdb::Error> for ReadError {
    fn from(e: rocksdb::Error) -> ReadError {
        ReadError::Store(e.into())
    }
}

/// Why the integrity check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// Stored data contradicts itself or this node's signature: the files were altered or
    /// damaged. No retry helps; the operator restores the node from its peers.
    #[error("{detail}")]
    Damaged {
        /// The first log index whose record, leaf or tree node is inconsistent, when the check
        /// can tell.
        first_bad_index: Option<u64>,
        /// What disagrees, starting with that log index.
        detail: String,
    },
    /// The audit index differs from what the records give: an entry was removed, added or
    /// altered, while the records, the tree and the license state are intact. No retry helps;
    /// the operator restores the node from its peers (the index answers inspectors' queries,
    /// so a node must not serve from an altered one).
    #[error(
        "the audit index does not match the records: {stored_entries} entries are stored and \
         the records give {expected_entries}, and their digests differ (an entry was removed, \
         added or altered)"
    )]
    AuditIndex {
        expected_entries: u64,
        stored_entries: u64,
    },
    /// Storage failed during the check (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rocksdb::Error> for IntegrityError {
    fn from(e: rocksdb::Error) -> IntegrityError {
        IntegrityError::Store(e.into())
    }
}
