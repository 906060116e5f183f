//! The Qianlian notarization log: an append-only log of typed records, replicated by Raft
//! (openraft 0.9) between department gateways and stored in RocksDB.
//!
//! Layout:
//! - [`record`]: typed, versioned records and their canonical bytes (frozen per version),
//!   re-exported from the verifier so that offline checkers decode the same bytes;
//! - [`license`]: the e-license rules (status from issuance and status records) and the views
//!   the notary answers with;
//! - [`notary`]: the handle the gateway uses: append with group commit (on any node), read
//!   entries, roots, proofs, cosigned checkpoints, license state and cosigned status lists,
//!   audit queries and configuration history, membership;
//! - [`audit_query`]: audit queries (filters, time range, order, pages bound to a tree size)
//!   over the access records, answered from the state machine's audit index;
//! - [`offline`]: read access to a stopped node's database, for offline verification;
//! - [`merkle`]: the pure RFC 6962 tree as stored (complete subtrees) and proofs from it;
//! - [`checkpoint`]: signing tree heads, collecting cosignatures;
//! - [`types`]: openraft's type configuration (what an entry carries, what applying answers);
//! - [`db`]: the RocksDB database: column families, key layouts, opening and closing;
//! - [`log_store`]: the Raft log and vote (every append one synced write batch);
//! - [`commit_receipts`]: receipts for small batches as soon as their entry is committed, before
//!   the apply (registered by the batcher, told of appends and commits by the log store);
//! - [`state_machine`]: applying batches of records (with their tree nodes and a signed
//!   checkpoint) and the license state and audit index they derive, reads, the integrity
//!   check, file-backed snapshots;
//! - [`network`]: Raft, Forward, Cosign and CosignStatus messages over gRPC (client and
//!   service);
//! - [`membership_rule`]: which Raft membership changes (log entries, snapshots) a node lets
//!   in: the steps of the last change the operators signed.
//!
//! Invariants: a record's log index is its dense 0-based position in the notarization log and
//! never changes once a receipt was given; its leaf hash is the RFC 6962 hash of its canonical
//! bytes; the tree stored beside the records is the RFC 6962 tree of those leaf hashes, and this
//! node's stored checkpoint signs a root of it; the license state and the audit index stored
//! beside them are exactly what the records give; an acknowledged append is on disk (fsync) on
//! a majority of nodes.

pub mod audit_query;
pub mod checkpoint;
pub mod commit_receipts;
pub mod db;
pub mod license;
pub mod log_store;
pub mod membership_rule;
pub mod merkle;
pub mod network;
pub mod notary;
pub mod offline;
pub mod record;
pub mod state_machine;
pub mod types;

pub use audit_query::{
    AuditCursor, AuditFilter, AuditHit, AuditOrder, AuditPage, AuditQuery, CursorError,
};
pub use db::StoreError;
pub use notary::{
    CosignedCheckpoint, CosignedStatusList, LeaderHint, LicenseCurrentStatus, LicenseView, Notary,
    NotaryConfig, NotaryError, NotaryStatus, RaftTiming, RangeError, Receipt, Unavailability,
    UnavailableReason,
};
pub use offline::OfflineLog;
pub use record::Record;
