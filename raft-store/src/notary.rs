//! The notary: the one handle the gateway holds on the replicated notarization log.
//!
//! It owns the RocksDB database, the openraft node, its gRPC network and the group-commit
//! batcher, and exposes them in the log's own terms (records, log indices, receipts). Nothing
//! outside this module names an openraft type except the storage and network modules it wires
//! together, so a move to openraft 0.10 touches this module and those.
//!
//! Invariants:
//! - [`Notary::append`] answers only after the record is committed on a majority and applied:
//!   the receipt's log index is final;
//! - every wait is bounded ([`NotaryConfig::commit_timeout`]);
//! - reopening a directory reuses its state: a node is initialised once, never again.
//!
//! Raft timing defaults ([`RaftTiming`]) are tuned for links between department data centres,
//! not for a LAN: heartbeat 250 ms, election timeout 1.25–2.5 s. openraft gives each
//! AppendEntries one heartbeat interval to complete, so a full message (8 entries of up to
//! 1024 records, about 3 MB) must cross the link in 250 ms; on slower links lower
//! `max_batch` or raise the heartbeat. A single-voter node restarts as leader at once (its
//! committed vote is restored), so election timeouts do not delay its restart.

mod error;
mod group_commit;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, SnapshotPolicy};
use qianlian_proto::v1::raft_server::RaftServer;
use qianlian_verifier::{Hash, leaf_hash};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::ClientTlsConfig;

pub use self::error::{LeaderHint, NotaryError, Unavailability, UnavailableReason};
use self::group_commit::{Limits, Pending};
use crate::db::{Db, StoreError};
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, RaftService};
use crate::record::Record;
use crate::state_machine::{StateMachineStore, StateReader};
use crate::types::{NodeId, TypeConfig};

/// How a notary node is set up.
#[derive(Debug, Clone)]
pub struct NotaryConfig {
    /// This node's Raft id; stable for the life of the node.
    pub node_id: u64,
    /// The RocksDB database lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    /// How peers reach this node's Raft service, e.g. `https://10.0.0.1:7400`.
    pub advertise_addr: String,
    /// Initialise a single-voter cluster of this node if it was never initialised.
    /// Default `false`: the node waits to be added to a cluster.
    pub bootstrap_single: bool,
    /// TLS (node certificate, cluster CA) for calls to peers; `None` speaks plain HTTP/2 and is
    /// for tests only. Default `None`.
    pub peer_tls: Option<ClientTlsConfig>,
    /// Most records per Raft entry. Default 1024.
    pub max_batch: usize,
    /// Most Raft writes in flight at once; requests arriving meanwhile form the next batch.
    /// Default 4.
    pub max_in_flight: usize,
    /// Bound on waiting for a commit, and for a leader when opening. Default 10 s.
    pub commit_timeout: Duration,
    /// Raft heartbeat and election timing. Default [`RaftTiming::default`].
    pub raft_timing: RaftTiming,
}

impl NotaryConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(
        node_id: u64,
        data_dir: impl Into<PathBuf>,
        advertise_addr: impl Into<String>,
    ) -> Self {
        NotaryConfig {
            node_id,
            data_dir: data_dir.into(),
            advertise_addr: advertise_addr.into(),
            bootstrap_single: false,
            peer_tls: None,
            max_batch: 1024,
            max_in_flight: 4,
            commit_timeout: Duration::from_secs(10),
            raft_timing: RaftTiming::default(),
        }
    }
}

/// Raft timing. The defaults suit links between department data centres (a few ms to tens of
/// ms round trip, ≥ 100 Mbit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    /// How often the leader contacts followers, and each AppendEntries' time budget. 250 ms.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range starts an election.
    /// 1250–2500 ms: five to ten heartbeats, so a few lost packets do not depose a leader.
    pub election_min: Duration,
    pub election_max: Duration,
    /// Most Raft entries per AppendEntries message. 8.
    pub max_entries_per_append: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1250),
            election_max: Duration::from_millis(2500),
            max_entries_per_append: 8,
        }
    }
}

/// Proof of notarization handed to the caller of [`Notary::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The record's position in the notarization log (its Merkle leaf index).
    pub log_index: u64,
    /// RFC 6962 leaf hash of the record's canonical bytes.
    pub record_hash: Hash,
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
}

/// The handle on the notarization log. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Notary {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    commit_timeout: Duration,
    raft: openraft::Raft<TypeConfig>,
    reader: StateReader,
    db: Db,
    queue: mpsc::Sender<Pending>,
    batcher: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Notary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notary")
            .field("node_id", &self.inner.node_id)
            .field("db", &self.inner.db)
            .finish_non_exhaustive()
    }
}

fn raft_config(timing: &RaftTiming) -> Result<Config, NotaryError> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = Config {
        cluster_name: "qianlian".into(),
        heartbeat_interval: ms(timing.heartbeat),
        election_timeout_min: ms(timing.election_min),
        election_timeout_max: ms(timing.election_max),
        max_payload_entries: timing.max_entries_per_append,
        // A snapshot is the whole log for now, held in memory: do not take them on a schedule.
        // The Raft log is kept whole and a new node catches up from it.
        snapshot_policy: SnapshotPolicy::Never,
        // Per snapshot chunk (3 MiB by default) over an inter-department link.
        install_snapshot_timeout: 10_000,
        ..Config::default()
    };
    config
        .validate()
        .map_err(|e| NotaryError::Config(format!("raft_timing: {e}")))
}

fn validate(config: &NotaryConfig) -> Result<(), NotaryError> {
    if config.max_batch == 0 {
        return Err(NotaryError::Config("max_batch must be at least 1".into()));
    }
    if config.max_in_flight == 0 {
        return Err(NotaryError::Config(
            "max_in_flight must be at least 1".into(),
        ));
    }
    if config.commit_timeout.is_zero() {
        return Err(NotaryError::Config(
            "commit_timeout must be positive".into(),
        ));
    }
    let addr = &config.advertise_addr;
    let scheme_ok = addr.starts_with("https://") || addr.starts_with("http://");
    if !scheme_ok || addr.parse::<tonic::codegen::http::Uri>().is_err() {
        return Err(NotaryError::Config(format!(
            "advertise_addr {addr:?} is not a URL like https://host:port"
        )));
    }
    Ok(())
}

impl Notary {
    /// Open (or create) the node's database, start its Raft node and the batcher.
    ///
    /// With `bootstrap_single`, a node that was never initialised becomes a one-voter cluster;
    /// a reopened node keeps its state and is not initialised again. If this node is the only
    /// voter, waits (at most `commit_timeout`) until it leads; a member of a larger cluster
    /// returns at once, because peers can only elect a leader once the gateway serves
    /// [`Notary::raft_service`] (use [`Notary::wait_for_leader`] after that).
    pub async fn open(config: NotaryConfig) -> Result<Notary, NotaryError> {
        let started = Instant::now();
        validate(&config)?;
        let raft_config = Arc::new(raft_config(&config.raft_timing)?);
        let dir = config.data_dir.join("raft");
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            NotaryError::Config(format!("data_dir {}: {e}", config.data_dir.display()))
        })?;
        let db = tokio::task::spawn_blocking(move || Db::open(&dir))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let state_machine = match StateMachineStore::new(db.clone()).await {
            Ok(sm) => sm,
            Err(e) => {
                close(&db).await;
                return Err(e.into());
            }
        };
        let reader = state_machine.reader();
        let network = NetworkFactory::new(config.node_id, config.peer_tls.clone());
        let raft = match openraft::Raft::new(
            config.node_id,
            raft_config,
            network,
            LogStore::new(db.clone()),
            state_machine,
        )
        .await
        {
            Ok(raft) => raft,
            Err(e) => {
                close(&db).await;
                return Err(e.into());
            }
        };

        let (queue, receiver) =
            mpsc::channel(config.max_batch.saturating_mul(config.max_in_flight + 1));
        let limits = Limits {
            max_batch: config.max_batch,
            max_in_flight: config.max_in_flight,
            commit_timeout: config.commit_timeout,
        };
        let batcher = tokio::spawn(group_commit::run(raft.clone(), receiver, limits));
        let notary = Notary {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                commit_timeout: config.commit_timeout,
                raft,
                reader,
                db,
                queue,
                batcher: Mutex::new(Some(batcher)),
            }),
        };
        if let Err(e) = notary.start(&config).await {
            // Leave the directory free for another attempt.
            let _ = notary.shutdown().await;
            return Err(e);
        }
        tracing::info!(
            node_id = config.node_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            tree_size = notary.tree_size(),
            leader = ?notary.status().leader,
            "notary open"
        );
        Ok(notary)
    }

    async fn start(&self, config: &NotaryConfig) -> Result<(), NotaryError> {
        let raft = &self.inner.raft;
        if config.bootstrap_single && !raft.is_initialized().await? {
            let members =
                BTreeMap::from([(config.node_id, BasicNode::new(&config.advertise_addr))]);
            match raft.initialize(members).await {
                // Initialised meanwhile: that is the goal.
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(RaftError::APIError(e)) => return Err(NotaryError::Membership(e.to_string())),
                Err(RaftError::Fatal(f)) => return Err(f.into()),
            }
        }
        // Ask the Raft core itself: the metrics may not show a membership set a moment ago.
        let voters: Vec<u64> = raft
            .with_raft_state(|st| st.membership_state.effective().voter_ids().collect())
            .await?;
        if voters == [config.node_id] {
            let leader = self.wait_for_leader(config.commit_timeout).await?;
            if leader != config.node_id {
                return Err(NotaryError::Internal(format!(
                    "sole voter {} sees node {leader} as leader",
                    config.node_id
                )));
            }
        }
        Ok(())
    }

    /// Append `record` to the notarization log. Returns once it is committed on a majority and
    /// applied, with its log index and leaf hash.
    ///
    /// Errors: [`NotaryError::Unavailable`] when this node is not the leader (naming the leader
    /// if known), when there is no leader, or when the commit takes longer than
    /// `commit_timeout` (outcome unknown); [`NotaryError::Storage`] and
    /// [`NotaryError::ShutDown`] as documented there.
    pub async fn append(&self, record: Record) -> Result<Receipt, NotaryError> {
        let timeout = self.inner.commit_timeout;
        let (reply, answer) = oneshot::channel();
        let waited = tokio::time::timeout(timeout, async {
            self.inner
                .queue
                .send(Pending { record, reply })
                .await
                .map_err(|_| NotaryError::ShutDown)?;
            answer.await.map_err(|_| NotaryError::ShutDown)?
        })
        .await;
        waited.unwrap_or(Err(NotaryError::commit_timed_out(timeout)))
    }

    /// The record at `log_index` as applied on this node: its canonical bytes and leaf hash.
    /// `None` at or beyond the tree size. A stored value that is not a record is
    /// [`NotaryError::Storage`] ([`StoreError::Corrupt`]).
    pub async fn entry(&self, log_index: u64) -> Result<Option<(Vec<u8>, Hash)>, NotaryError> {
        let bytes = self.inner.reader.record(log_index).await?;
        Ok(bytes.map(|bytes| {
            let hash = leaf_hash(&bytes);
            (bytes, hash)
        }))
    }

    /// Number of records applied on this node: the next record gets this log index.
    pub fn tree_size(&self) -> u64 {
        self.inner.reader.tree_size()
    }

    /// Wait until this node has applied at least `at_least` records; returns the tree size.
    /// [`NotaryError::Unavailable`] (`CommitTimedOut`) if it has not within `timeout`.
    pub async fn wait_for_tree_size(
        &self,
        at_least: u64,
        timeout: Duration,
    ) -> Result<u64, NotaryError> {
        self.inner
            .reader
            .wait_for_tree_size(at_least, timeout)
            .await
            .map_err(|_| NotaryError::commit_timed_out(timeout))
    }

    /// The gRPC service peers call, with message size limits set. Mount it on the node's TLS
    /// server and admit node certificates only.
    pub fn raft_service(&self) -> RaftServer<RaftService> {
        RaftService::new(self.inner.raft.clone()).into_server()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NotaryStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let addr = |id: u64| {
            membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        NotaryStatus {
            node_id: self.inner.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_raft_index: metrics.last_log_index,
            applied_raft_index: metrics.last_applied.map(|id| id.index),
            tree_size: self.tree_size(),
            voters: membership.voter_ids().map(|id| (id, addr(id))).collect(),
            learners: membership.learner_ids().map(|id| (id, addr(id))).collect(),
        }
    }

    /// Wait until a leader is known; returns its id. `Unavailable` (`NoLeader`) after `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, NotaryError> {
        let waited = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        match waited {
            Ok(metrics) => metrics.current_leader.ok_or_else(NotaryError::no_leader),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(NotaryError::ShutDown),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(NotaryError::no_leader()),
        }
    }

    /// Form a new cluster of `members` (node id → advertised address) on a node that was never
    /// initialised. Call it on one node; the others join by election.
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<(), NotaryError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => Err(NotaryError::Membership(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(f.into()),
        }
    }

    /// On the leader: add node `node_id` at `addr` as a learner (it receives the log but does
    /// not vote). Returns once the change is committed, not when the learner has caught up.
    pub async fn add_learner(
        &self,
        node_id: u64,
        addr: impl Into<String>,
    ) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        let added = tokio::time::timeout(
            timeout,
            self.inner
                .raft
                .add_learner(node_id, BasicNode::new(addr.into()), false),
        )
        .await
        .map_err(|_| NotaryError::commit_timed_out(timeout))?;
        added.map(|_| ()).map_err(NotaryError::from)
    }

    /// On the leader: make exactly `voters` the voting members (each must already be a member
    /// or learner); nodes dropped from the voters stay as learners. Returns once committed.
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        let changed = tokio::time::timeout(
            timeout,
            self.inner
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(voters), true),
        )
        .await
        .map_err(|_| NotaryError::commit_timed_out(timeout))?;
        changed.map(|_| ()).map_err(NotaryError::from)
    }

    /// Stop the batcher and the Raft node and close the database, so the directory can be
    /// opened again. Appends waiting meanwhile fail with [`NotaryError::ShutDown`]. Idempotent.
    pub async fn shutdown(&self) -> Result<(), NotaryError> {
        let batcher = self
            .inner
            .batcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(batcher) = batcher {
            batcher.abort();
        }
        let stopped = self.inner.raft.shutdown().await;
        close(&self.inner.db).await;
        stopped.map_err(|e| NotaryError::Internal(format!("raft task: {e}")))
    }
}

async fn close(db: &Db) {
    let db = db.clone();
    // `close` waits for running storage calls; a panic there leaves nothing more to close.
    let _ = tokio::task::spawn_blocking(move || db.close()).await;
}
