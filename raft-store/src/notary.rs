//! The notary: the one handle the gateway holds on the replicated notarization log.
//!
//! It owns the RocksDB database, the openraft node, its gRPC network and the group-commit
//! batcher, and exposes them in the log's own terms (records, log indices, receipts). Nothing
//! outside this module names an openraft type except the storage and network modules it wires
//! together, so a move to openraft 0.10 touches this module and those.
//!
//! Invariants:
//! - [`Notary::append`] answers only after the record is committed on a majority and applied:
//!   the receipt's log index is final. Any node takes appends: a follower forwards them to the
//!   leader (see `group_commit`);
//! - every wait is bounded: an append by [`NotaryConfig::commit_timeout`] (plus 250 ms for the
//!   answer to travel), a checkpoint's cosignatures by [`NotaryConfig::cosign_timeout`];
//! - reopening a directory reuses its state: a node is initialised once, never again, and is
//!   checked whole before it serves (see [`Notary::open`]);
//! - roots, proofs and checkpoints are of this node's applied tree: a follower answers for the
//!   sizes it has applied and refuses larger ones with [`NotaryError::Range`];
//! - the shared heads for public calls ([`Notary::shared_checkpoint`]) lag the applied tree by
//!   at most [`NotaryConfig::checkpoint_max_age`] (unless nothing was applied since), and cost
//!   each member at most ten cosignature requests a second from this node, whatever the load;
//! - license state ([`Notary::license`], [`Notary::holder_records`]) is that of the records this
//!   node applied: on every node as soon as it applied the commit (a follower a heartbeat after
//!   the leader). The signed status list ([`Notary::status_list`]) is of an exact tree size, so
//!   every member that applied that size computes and cosigns the same body.
//!
//! Disk layout under `data_dir`: `raft/` is the RocksDB database (see `db`), `snapshots/` the
//! snapshot files (see `state_machine`).
//!
//! Raft timing defaults ([`RaftTiming`]) are tuned for links between department data centres,
//! not for a LAN: heartbeat 250 ms, election timeout 1.25–2.5 s. openraft gives each
//! AppendEntries one heartbeat interval to complete, so a full message (8 entries of up to
//! 1024 records, about 3 MB) must cross the link in 250 ms; on slower links lower
//! `max_batch` or raise the heartbeat. A single-voter node restarts as leader at once (its
//! committed vote is restored), so election timeouts do not delay its restart.
//!
//! Layout: this file holds the handle ([`Notary`]) and its view of the cluster
//! ([`NotaryStatus`]); the handle's methods are split by concern, one `impl Notary` per file:
//! `lifecycle` (open, shutdown), `append` (appends through group commit), `reads` (records,
//! configuration, audit queries, roots, proofs, license state), `checkpoints` (checkpoints and
//! status lists, cosigned by the members), `membership` (cluster status and changes) and
//! `peer_service` (what this node serves its peers). Those files import this one; this one
//! imports only `config` (the configuration), `receipt`, `error`, `group_commit` (the
//! batcher) and `head_cache` (the cosigned heads kept for public calls), which import none of
//! them.

mod append;
mod checkpoints;
mod config;
mod error;
pub mod group_commit;
mod head_cache;
mod lifecycle;
mod membership;
mod peer_service;
mod reads;
mod receipt;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use self::config::{NotaryConfig, RaftTiming};
pub use self::error::{LeaderHint, NotaryError, Unavailability, UnavailableReason};
use self::group_commit::Pending;
pub use self::head_cache::CosignStats;
use self::head_cache::HeadCache;
pub use self::receipt::Receipt;
pub use crate::checkpoint::CosignedCheckpoint;
use crate::db::Db;
pub use crate::license::{CosignedStatusList, LicenseCurrentStatus, LicenseView};
use crate::network::Peers;
pub use crate::state_machine::RangeError;
use crate::state_machine::StateReader;
pub use crate::types::DEFAULT_MAX_BATCH;
use crate::types::{NodeId, TypeConfig};

/// The handle on the notarization log. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Notary {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    commit_timeout: Duration,
    cosign_timeout: Duration,
    max_batch: usize,
    raft: openraft::Raft<TypeConfig>,
    reader: StateReader,
    peers: Peers,
    db: Db,
    queue: mpsc::Sender<Pending>,
    batcher: Mutex<Option<JoinHandle<()>>>,
    batch_stats: Arc<group_commit::BatchStats>,
    /// How stale a head the public calls may be handed (see `checkpoints`).
    head_max_age: Duration,
    checkpoints: HeadCache<CosignedCheckpoint>,
    status_lists: HeadCache<CosignedStatusList>,
    cosign_stats: Arc<CosignStats>,
    authority_stats: Arc<crate::network::AuthorityStats>,
}

impl fmt::Debug for Notary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notary")
            .field("node_id", &self.inner.node_id)
            .field("db", &self.inner.db)
            .finish_non_exhaustive()
    }
}

/// A snapshot of this node's view of the cluster, for health checks, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotaryStatus {
    pub node_id: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    pub term: u64,
    /// Index of the last Raft entry (not a log index: one entry holds a batch of records).
    pub last_raft_index: Option<u64>,
    /// Index of the last Raft entry applied to the notarization log.
    pub applied_raft_index: Option<u64>,
    /// Number of records applied on this node.
    pub tree_size: u64,
    /// Voters and learners with their advertised addresses.
    pub voters: BTreeMap<u64, String>,
    pub learners: BTreeMap<u64, String>,
    /// Last Raft index in this node's latest snapshot, if any.
    pub snapshot_raft_index: Option<u64>,
    /// Last Raft index purged from this node's log, if any.
    pub purged_raft_index: Option<u64>,
    /// On the leader: milliseconds since a quorum last acknowledged it (`None` elsewhere). A
    /// leader cut off from its majority keeps naming itself; this says it has lost its quorum.
    pub millis_since_quorum_ack: Option<u64>,
    /// The longest election timeout, in milliseconds: a quorum ack older than this is lost.
    pub election_timeout_max_ms: u64,
    /// On the leader: the last Raft index each member has matched (`None`: nothing yet).
    pub replication: BTreeMap<u64, Option<u64>>,
}
