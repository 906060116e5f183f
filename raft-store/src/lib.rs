//! The Qianlian notarization log: an append-only log of typed records, replicated by Raft
//! (openraft 0.9) between department gateways and stored in RocksDB.
//!
//! Layout:
//! - [`record`]: typed, versioned records and their canonical bytes (frozen per version);
//! - [`notary`]: the handle the gateway uses: append with group commit, read entries, membership;
//! - [`types`]: openraft's type configuration (what an entry carries, what applying answers);
//! - [`db`]: the RocksDB database: column families, encodings, opening and closing;
//! - [`log_store`]: the Raft log and vote (every append one synced write batch);
//! - [`state_machine`]: applying batches of records, snapshots, reads of the applied log;
//! - [`network`]: Raft messages over gRPC (client and service).
//!
//! Invariants: a record's log index is its dense 0-based position in the notarization log and
//! never changes once a receipt was given; its leaf hash is the RFC 6962 hash of its canonical
//! bytes; an acknowledged append is on disk (fsync) on a majority of nodes.

pub mod db;
pub mod log_store;
pub mod network;
pub mod notary;
pub mod record;
pub mod state_machine;
pub mod types;

pub use db::StoreError;
pub use notary::{
    LeaderHint, Notary, NotaryConfig, NotaryError, NotaryStatus, RaftTiming, Receipt,
    Unavailability, UnavailableReason,
};
pub use record::Record;
