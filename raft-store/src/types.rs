//! The openraft type configuration of the notarization log: what a Raft entry carries and what
//! applying it answers.
//!
//! Two indices must not be confused:
//! - the **Raft index** numbers Raft entries (blank entries, membership changes and batches of
//!   records alike); it is openraft's business and never leaves this crate's storage modules;
//! - the **log index** is the dense, 0-based position of a record in the notarization log (the
//!   Merkle tree leaf index). A receipt, a proof and a checkpoint speak only of log indices.
//!
//! One Raft entry carries a whole batch of records (group commit), so the two diverge at once.

use std::sync::Arc;

use openraft::BasicNode;
use qianlian_verifier::Hash;
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// Node ids are the operator-assigned numbers of the department gateways; they never change.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The notarization log's Raft types. `Node` is a [`BasicNode`] whose `addr` is the peer's
    /// gRPC endpoint, `https://host:port`. Snapshots are files (see `state_machine`), streamed
    /// by openraft in chunks.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft entry of ours, as stored and replicated.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log id (term, leader, Raft index).
pub type LogId = openraft::LogId<NodeId>;
/// Cluster membership as it was when a given Raft entry was applied.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
/// openraft's storage error for our node id type.
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// Records per Raft entry unless the notary is configured otherwise (`NotaryConfig::max_batch`).
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// What one Raft entry asks the state machine to do.
///
/// Variants are only ever added at the end: entries are stored and replicated in postcard, where
/// the variant number is the encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Append these records, in this order, at the end of the notarization log.
    ///
    /// Shared, not copied, between the log store's cache of recent entries, replication, the
    /// apply and the early receipts.
    Append { records: Arc<[Record]> },
}

/// What applying one Raft entry answered.
///
/// Blank and membership entries answer an empty `hashes` with `first_index` equal to the tree
/// size at that point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Log index assigned to the first record of the batch; record `i` got `first_index + i`.
    pub first_index: u64,
    /// RFC 6962 leaf hash of each appended record's canonical bytes, in batch order: record
    /// `i` of those appended got `first_index + i`.
    pub hashes: Vec<Hash>,
    /// Records of the batch the origin check refused (not appended), by position in the batch,
    /// ascending. Empty for blank and membership entries.
    #[serde(default)]
    pub refused: Vec<Refused>,
}

/// A record of a batch that the state machine refused to append, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Position of the record in its batch (0-based).
    pub position: u32,
    pub reason: String,
}
