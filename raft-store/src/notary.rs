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

mod error;
pub mod group_commit;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, SnapshotPolicy};
use qianlian_proto::v1::raft_server::RaftServer;
use qianlian_verifier::{Hash, NoteSigner, leaf_hash};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::ClientTlsConfig;

pub use self::error::{LeaderHint, NotaryError, Unavailability, UnavailableReason};
use self::group_commit::{Committer, Limits, Pending};
use crate::audit_query::{AuditPage, AuditQuery};
pub use crate::checkpoint::CosignedCheckpoint;
use crate::checkpoint::{self, CheckpointSigner, CosignRefusal, Cosignature};
use crate::commit_receipts::EarlyReceipts;
use crate::db::{Db, StoreError};
pub use crate::license::{CosignedStatusList, LicenseCurrentStatus, LicenseView};
use crate::log_store::LogStore;
use crate::network::{
    ForwardRefusal, ForwardedReceipt, LocalNode, NetworkFactory, Peers, RaftService,
};
use crate::record::{ConfigKind, ConfigRecord, Record};
pub use crate::state_machine::RangeError;
use crate::state_machine::{
    ConfigPointer, ConfigPointers, StateMachineConfig, StateMachineStore, StateReader,
};
pub use crate::types::DEFAULT_MAX_BATCH;
use crate::types::{NodeId, TypeConfig};

/// Extra time an append waits beyond `commit_timeout`, so that the batcher's own, more precise
/// answer (which is bounded by `commit_timeout`) arrives before the caller gives up.
const ANSWER_GRACE: Duration = Duration::from_millis(250);

/// Pause before asking a member again that has not applied the tree size yet.
const COSIGN_RETRY: Duration = Duration::from_millis(50);

/// Record an append's outcome on its span: the first log index, or the error.
fn record_outcome(result: &Result<Vec<Receipt>, NotaryError>) {
    let span = tracing::Span::current();
    match result {
        Ok(receipts) => {
            if let Some(first) = receipts.first() {
                // As a signed integer: span exporters write u64 as text.
                span.record(
                    "log_index",
                    i64::try_from(first.log_index).unwrap_or(i64::MAX),
                );
            }
        }
        Err(e) => {
            span.record("error", tracing::field::display(e));
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// How a notary node is set up.
#[derive(Debug, Clone)]
pub struct NotaryConfig {
    /// This node's Raft id; stable for the life of the node.
    pub node_id: u64,
    /// The RocksDB database lives in `data_dir/raft`, snapshot files in `data_dir/snapshots`.
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
    /// Default 1: openraft appends and fsyncs entries one after another anyway, so a second
    /// write in flight only splits the waiting requests into smaller entries, each paying its
    /// own append, fsync, replication and apply (measured: 20-30% fewer notarized reads per
    /// second with 4 than with 1, on one node and on three, at 64 clients).
    pub max_in_flight: usize,
    /// Bound on waiting for a commit, and for a leader when opening. Default 10 s.
    pub commit_timeout: Duration,
    /// Raft heartbeat and election timing. Default [`RaftTiming::default`].
    pub raft_timing: RaftTiming,
    /// This node's Ed25519 note key: it signs every tree head the node applies and cosigns
    /// peers' checkpoints. Default `None`: no checkpoints, [`Notary::checkpoint`] fails with
    /// [`NotaryError::NoCheckpoint`] and peers get no cosignature from this node.
    pub signer: Option<NoteSigner>,
    /// The checkpoint origin line, naming the log: default `"gov.example/qianlian"`
    /// ([`checkpoint::DEFAULT_ORIGIN`]). Every node of a cluster must use the same one, or
    /// their signatures cover different bodies and never count as cosignatures. It must be one
    /// line without control characters.
    pub origin: String,
    /// How long [`Notary::checkpoint`] waits for the members' cosignatures (asked in parallel);
    /// a member that has not answered by then is left out. Default 1 s.
    pub cosign_timeout: Duration,
    /// Take a snapshot of the state machine every this many Raft entries (each entry is a batch
    /// of up to `max_batch` records), after which the log before it can be purged. Default 5000.
    pub snapshot_every: u64,
    /// Raft entries kept in the log behind the latest snapshot, so a follower that lags a
    /// little catches up from the log rather than by a snapshot. Default 1000.
    pub log_kept_after_snapshot: u64,
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
            max_batch: DEFAULT_MAX_BATCH,
            max_in_flight: 1,
            commit_timeout: Duration::from_secs(10),
            raft_timing: RaftTiming::default(),
            signer: None,
            origin: checkpoint::DEFAULT_ORIGIN.to_string(),
            cosign_timeout: Duration::from_secs(1),
            snapshot_every: 5000,
            log_kept_after_snapshot: 1000,
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
    /// Time budget for sending one snapshot chunk (3 MiB), and for the last one, installing the
    /// whole snapshot on the receiver, which checks it record by record. 60 s.
    pub snapshot_chunk_timeout: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1250),
            election_max: Duration::from_millis(2500),
            max_entries_per_append: 8,
            snapshot_chunk_timeout: Duration::from_secs(60),
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
}

impl fmt::Debug for Notary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notary")
            .field("node_id", &self.inner.node_id)
            .field("db", &self.inner.db)
            .finish_non_exhaustive()
    }
}

fn raft_config(config: &NotaryConfig) -> Result<Config, NotaryError> {
    let timing = &config.raft_timing;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = Config {
        cluster_name: "qianlian".into(),
        heartbeat_interval: ms(timing.heartbeat),
        election_timeout_min: ms(timing.election_min),
        election_timeout_max: ms(timing.election_max),
        max_payload_entries: timing.max_entries_per_append,
        // Snapshots are files streamed in chunks, so they can be taken on a schedule and the
        // log purged behind them.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.log_kept_after_snapshot,
        // A follower further behind than the log kept catches up by snapshot.
        replication_lag_threshold: config
            .snapshot_every
            .saturating_add(config.log_kept_after_snapshot),
        install_snapshot_timeout: ms(timing.snapshot_chunk_timeout),
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
    if config.cosign_timeout.is_zero() {
        return Err(NotaryError::Config(
            "cosign_timeout must be positive".into(),
        ));
    }
    if config.snapshot_every == 0 {
        return Err(NotaryError::Config(
            "snapshot_every must be at least 1".into(),
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
    /// Open (or create) the node's database, check it, start its Raft node and the batcher.
    ///
    /// Before anything starts, every stored record's leaf hash is recomputed and checked against
    /// the stored tree, every tree node against its children, and the root at the size of the
    /// last stored checkpoint against that checkpoint, whose signature is verified with this
    /// node's own key. Any difference fails with [`NotaryError::Integrity`] naming the first
    /// inconsistent log index; the time the check took is logged (`integrity_ms`).
    ///
    /// With `bootstrap_single`, a node that was never initialised becomes a one-voter cluster;
    /// a reopened node keeps its state and is not initialised again. If this node is the only
    /// voter, waits (at most `commit_timeout`) until it leads; a member of a larger cluster
    /// returns at once, because peers can only elect a leader once the gateway serves
    /// [`Notary::raft_service`] (use [`Notary::wait_for_leader`] after that).
    pub async fn open(config: NotaryConfig) -> Result<Notary, NotaryError> {
        let started = Instant::now();
        validate(&config)?;
        let raft_config = Arc::new(raft_config(&config)?);
        let signer = CheckpointSigner::new(config.signer.clone(), &config.origin)
            .map_err(|e| NotaryError::Config(format!("origin: {e}")))?;
        let dir = config.data_dir.join("raft");
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            NotaryError::Config(format!("data_dir {}: {e}", config.data_dir.display()))
        })?;
        let db = tokio::task::spawn_blocking(move || Db::open(&dir))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let sm_config = StateMachineConfig {
            snapshot_dir: config.data_dir.join("snapshots"),
            signer,
        };
        let state_machine = match StateMachineStore::new(db.clone(), sm_config).await {
            Ok(sm) => sm,
            Err(e) => {
                close(&db).await;
                return Err(match e {
                    // Stored state that contradicts itself is an integrity failure.
                    StoreError::Corrupt { what, detail } => NotaryError::Integrity {
                        first_bad_index: None,
                        detail: format!("corrupt {what}: {detail}"),
                    },
                    e => e.into(),
                });
            }
        };
        let report = match state_machine.check_integrity().await {
            Ok(report) => report,
            Err(e) => {
                close(&db).await;
                let e = NotaryError::from(e);
                tracing::error!(node_id = config.node_id, error = %e, "integrity check failed");
                return Err(e);
            }
        };
        let reader = state_machine.reader();
        let early = EarlyReceipts::new(reader.clone());
        let peers = Peers::new(config.peer_tls.clone());
        let network = NetworkFactory::with_peers(config.node_id, peers.clone());
        let raft = match openraft::Raft::new(
            config.node_id,
            raft_config,
            network,
            LogStore::with_early_receipts(db.clone(), early.clone()),
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
        let batch_stats = Arc::new(group_commit::BatchStats::default());
        let committer = Committer {
            stats: batch_stats.clone(),
            node_id: config.node_id,
            raft: raft.clone(),
            early,
            peers: peers.clone(),
            limits: Limits {
                max_batch: config.max_batch,
                max_in_flight: config.max_in_flight,
                commit_timeout: config.commit_timeout,
            },
        };
        let batcher = tokio::spawn(group_commit::run(committer, receiver));
        let notary = Notary {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                commit_timeout: config.commit_timeout,
                cosign_timeout: config.cosign_timeout,
                max_batch: config.max_batch,
                raft,
                reader,
                peers,
                db,
                queue,
                batcher: Mutex::new(Some(batcher)),
                batch_stats,
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
            integrity_ms = report.elapsed.as_millis() as u64,
            checked_records = report.records,
            checkpoint_size = report.checkpoint_size,
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

    /// Append `record` to the notarization log. Returns once it is committed on a majority, with
    /// its log index and leaf hash: a small batch as soon as the commit is known
    /// ([`crate::commit_receipts`]), a larger one once the leader applied it. Reads through this notary
    /// wait until the node applied what it answered, so they see the record. Any node takes
    /// appends: a follower forwards them to the leader.
    ///
    /// Errors: [`NotaryError::InvalidRecord`] for a record that breaks [`Record::check`]
    /// (nothing was recorded); [`NotaryError::Unavailable`] when there is no leader or it
    /// cannot be reached within `commit_timeout` (nothing was recorded), or when the commit
    /// takes longer than `commit_timeout` (`CommitTimedOut`: the outcome is unknown);
    /// [`NotaryError::Storage`] and [`NotaryError::ShutDown`] as documented there.
    #[tracing::instrument(
        name = "notary.append",
        level = "info",
        skip_all,
        fields(
            records = 1,
            log_index = tracing::field::Empty,
            error = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    )]
    pub async fn append(&self, record: Record) -> Result<Receipt, NotaryError> {
        let receipts = self.submit(vec![vec![record]]).await;
        record_outcome(&receipts);
        receipts?
            .pop()
            .ok_or_else(|| NotaryError::Internal("an append was answered without a receipt".into()))
    }

    /// Append `records`, in order, and return their receipts in the same order. Up to
    /// `max_batch` records share one Raft entry and get consecutive log indices; a longer list
    /// is split into such entries. Errors as [`Notary::append`]; on an error some entries of a
    /// long list may have been committed.
    #[tracing::instrument(
        name = "notary.append_batch",
        level = "info",
        skip_all,
        fields(
            records = records.len(),
            log_index = tracing::field::Empty,
            error = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    )]
    pub async fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Receipt>, NotaryError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let chunks = records
            .chunks(self.inner.max_batch)
            .map(<[Record]>::to_vec)
            .collect();
        let receipts = self.submit(chunks).await;
        record_outcome(&receipts);
        receipts
    }

    /// Queue each chunk as one group-commit request and collect the receipts in order.
    async fn submit(&self, chunks: Vec<Vec<Record>>) -> Result<Vec<Receipt>, NotaryError> {
        // Refuse before anything is queued: a record in the log stays there for good.
        for (i, record) in chunks.iter().flatten().enumerate() {
            record
                .check()
                .map_err(|e| NotaryError::InvalidRecord(format!("record {i} of the batch: {e}")))?;
        }
        let timeout = self.inner.commit_timeout;
        let waited = tokio::time::timeout(timeout + ANSWER_GRACE, async {
            let mut answers = Vec::with_capacity(chunks.len());
            for records in chunks {
                let (reply, answer) = oneshot::channel();
                self.inner
                    .queue
                    .send(Pending {
                        records,
                        reply,
                        forwarded: false,
                    })
                    .await
                    .map_err(|_| NotaryError::ShutDown)?;
                answers.push(answer);
            }
            let mut receipts = Vec::new();
            for answer in answers {
                receipts.extend(answer.await.map_err(|_| NotaryError::ShutDown)??);
            }
            Ok(receipts)
        })
        .await;
        waited.unwrap_or(Err(NotaryError::commit_timed_out(timeout)))
    }

    /// The record at `log_index` as applied on this node: its canonical bytes and leaf hash.
    /// `None` at or beyond the tree size. A stored value that is not a record is
    /// [`NotaryError::Storage`] ([`StoreError::Corrupt`]).
    pub async fn entry(&self, log_index: u64) -> Result<Option<(Vec<u8>, Hash)>, NotaryError> {
        self.settled().await?;
        let bytes = self.inner.reader.record(log_index).await?;
        Ok(bytes.map(|bytes| {
            let hash = leaf_hash(&bytes);
            (bytes, hash)
        }))
    }

    /// The cluster configuration of `kind` in force on this node: its version, log index and
    /// record; `None` before the first record of the kind.
    pub async fn config(
        &self,
        kind: ConfigKind,
    ) -> Result<Option<(ConfigPointer, ConfigRecord)>, NotaryError> {
        self.settled().await?;
        let Some(pointer) = self.inner.reader.config_pointers().get(kind) else {
            return Ok(None);
        };
        let bytes = self.inner.reader.record(pointer.log_index).await?;
        match bytes.map(|b| Record::decode(&b)) {
            Some(Ok(Record::Config(c))) if c.change.kind() == kind => Ok(Some((pointer, c))),
            _ => Err(NotaryError::Storage(StoreError::corrupt(
                format!("record {}", pointer.log_index),
                format!(
                    "the {} in force points here, but this is not one",
                    kind.as_str()
                ),
            ))),
        }
    }

    /// Every config record of `kind` applied on this node, in log order, with its log index and
    /// version (1 for the first): the history of the policy or of the directory. Read from the
    /// audit index; each record is checked to be of that kind ([`NotaryError::Storage`] if not).
    pub async fn config_history(
        &self,
        kind: ConfigKind,
    ) -> Result<Vec<ConfigPointer>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.config_history(kind).await?)
    }

    /// One page of the access records applied on this node that match `query` (see
    /// [`crate::audit_query`] for the semantics and the cost). Pass the page's `next` as the next
    /// query's `after` to continue: every page is read at the first page's tree size.
    /// [`NotaryError::Range`] for a cursor beyond this node's tree (issued by a node further
    /// ahead; retry once this one caught up), [`NotaryError::Storage`] if a record the index
    /// lists is missing or is not what the index says.
    pub async fn audit_query(&self, query: AuditQuery) -> Result<AuditPage, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.audit_query(query).await?)
    }

    /// Canonical bytes of the records at log indices `start..min(start + max, tree_size)`, in
    /// order (empty from the tree size on), read with one iterator: the log streamed to an
    /// integrity verifier page by page. `max` bounds the memory a call takes.
    pub async fn entries(&self, start: u64, max: usize) -> Result<Vec<Vec<u8>>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.entries(start, max).await?)
    }

    /// Follow changes of the cluster configuration in force on this node: the receiver sees a
    /// new value when a config record is applied or a snapshot installed.
    pub fn watch_config(&self) -> tokio::sync::watch::Receiver<ConfigPointers> {
        self.inner.reader.watch_config()
    }

    /// Number of records on this node's log: those applied, and those a caller already holds a
    /// receipt for while this node is applying them (see [`crate::commit_receipts`]). The next record
    /// gets at least this log index; every read here waits until these records are applied.
    pub fn tree_size(&self) -> u64 {
        self.inner.reader.known_size()
    }

    /// Wait until every record this node answered at commit is applied here, so that reads
    /// see a caller's own writes. Immediate unless an answer is only microseconds old.
    async fn settled(&self) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        self.inner.reader.settle(timeout).await.map_err(|applied| {
            NotaryError::Internal(format!(
                "this node committed records it has not applied within {timeout:?} \
                 (applied: {applied}); its state machine is stuck, see its log"
            ))
        })
    }

    /// The RFC 6962 root `MTH(D[0:tree_size])` of this node's log, for any `tree_size` up to
    /// the applied size (the empty tree's root, `SHA-256()`, for 0). [`NotaryError::Range`]
    /// beyond it.
    pub async fn root_at(&self, tree_size: u64) -> Result<Hash, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.root_at(tree_size).await?)
    }

    /// The RFC 6962 inclusion proof `PATH(log_index, D[0:tree_size])`, bottom-up: check it with
    /// `qianlian_verifier::verify_inclusion`. [`NotaryError::Range`] if `tree_size` is beyond
    /// the applied tree or `log_index >= tree_size`.
    pub async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: u64,
    ) -> Result<Vec<Hash>, NotaryError> {
        self.settled().await?;
        Ok(self
            .inner
            .reader
            .inclusion_proof(log_index, tree_size)
            .await?)
    }

    /// The RFC 6962 consistency proof `PROOF(old_size, D[0:new_size])`, bottom-up (empty when
    /// `old_size` is 0 or equals `new_size`): check it with
    /// `qianlian_verifier::verify_consistency`. [`NotaryError::Range`] if `new_size` is beyond
    /// the applied tree or `old_size > new_size`.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, NotaryError> {
        self.settled().await?;
        Ok(self
            .inner
            .reader
            .consistency_proof(old_size, new_size)
            .await?)
    }

    /// The log index of the first record whose leaf hash (its [`Receipt::record_hash`]) is
    /// `record_hash`, or `None` if this node has applied no such record.
    pub async fn index_of(&self, record_hash: &Hash) -> Result<Option<u64>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.index_of(*record_hash).await?)
    }

    /// The e-license whose hash (SHA-256 of its COSE_Sign1 bytes) is `license_hash`, as of the
    /// records applied on this node: its first issuance record and log index, its current
    /// status and every status record of it. `None` if no applied record issues it. A status
    /// record committed on the leader shows here once this node applied it (a heartbeat later
    /// on a follower; wait with [`Notary::wait_for_tree_size`] for a known log index).
    ///
    /// Rules (see [`crate::license`]): the first issuance counts; a status record of a license
    /// not issued before it is ignored; `Revoked` is final; `Suspended` lasts until a later
    /// `Reinstated`. A stored state that contradicts the records is
    /// [`NotaryError::Storage`] ([`StoreError::Corrupt`]).
    pub async fn license(&self, license_hash: &Hash) -> Result<Option<LicenseView>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.license(*license_hash).await?)
    }

    /// Log indices, ascending, of every record about holder `holder_hash` (the keyed hash of
    /// the holder's identifier) applied on this node: each issuance record naming it (a
    /// repeated issuance too) and each status record of a license first issued to it, whether
    /// or not it changed the status. Empty for an unknown holder.
    pub async fn holder_records(&self, holder_hash: &Hash) -> Result<Vec<u64>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.holder_records(*holder_hash).await?)
    }

    /// The license status list as of the tree size of this node's latest checkpoint (see
    /// [`Notary::status_list_at`]); the applied size on a node whose key came after its last
    /// apply. [`NotaryError::NoCheckpoint`] without a signing key.
    pub async fn status_list(&self) -> Result<CosignedStatusList, NotaryError> {
        self.settled().await?;
        let size = match self.inner.reader.checkpoint() {
            Some(own) => own.size,
            None => self.tree_size(),
        };
        self.status_list_at(size).await
    }

    /// The license status list as of the first `tree_size` records, signed by this node and
    /// cosigned by every other member that computes the identical body within
    /// `cosign_timeout` (asked in parallel, again while a member has not applied that size, as
    /// for [`Notary::checkpoint`]).
    ///
    /// The body (`qianlian_verifier::license::StatusList`): this node's origin; the tree head
    /// (size, root) at `tree_size`; `time`, the time of the last record below `tree_size`
    /// (`time_unix_ms / 1000` of record `tree_size - 1`, 0 for the empty tree); and every
    /// license suspended or revoked by the status records below `tree_size`, with the time and
    /// reason of the record that did it. The time comes from the replicated record, not a
    /// node's clock, so every node computes the same body for the same size; it is the time
    /// the gateway that wrote that record decided, so it is as true as that gateway's clock.
    /// Any size up to the applied one can be listed: later changes are left out.
    ///
    /// [`NotaryError::Range`] beyond the applied tree, [`NotaryError::NoCheckpoint`] without a
    /// signing key.
    pub async fn status_list_at(&self, tree_size: u64) -> Result<CosignedStatusList, NotaryError> {
        self.settled().await?;
        let list = self.inner.reader.status_list(tree_size).await?;
        let own = self
            .inner
            .reader
            .signer()
            .sign_status_list(&list)
            .map_err(|e| NotaryError::Internal(e.to_string()))?
            .ok_or_else(|| {
                NotaryError::NoCheckpoint(
                    "this node has no checkpoint signing key configured".into(),
                )
            })?;
        let cosignatures = self.cosignatures(Cosigned::StatusList, tree_size).await;
        let (note, signers) = checkpoint::add_cosignatures(&own, cosignatures)
            .map_err(|e| NotaryError::Internal(e.to_string()))?;
        Ok(CosignedStatusList {
            note,
            tree_size,
            signers,
        })
    }

    /// The latest checkpoint this node applied, as a signed note carrying this node's signature
    /// and the cosignatures of every other current member (voters and learners) that answers
    /// within `cosign_timeout` (asked in parallel) having computed the same root. A member that
    /// has not applied that size yet is asked again while the timeout lasts (followers apply a
    /// commit a heartbeat after the leader). Members that do not answer in time or sign another
    /// root are left out: the verifier demands k of n with the keys it trusts.
    ///
    /// [`NotaryError::NoCheckpoint`] if this node has no signing key.
    pub async fn checkpoint(&self) -> Result<CosignedCheckpoint, NotaryError> {
        self.settled().await?;
        match self.inner.reader.checkpoint() {
            Some(own) => {
                let cosignatures = self.cosignatures(Cosigned::Checkpoint, own.size).await;
                checkpoint::cosigned(&own, cosignatures)
                    .map_err(|e| NotaryError::Internal(e.to_string()))
            }
            // A key configured after the last apply: sign the applied head now.
            None => self.checkpoint_at(self.tree_size()).await,
        }
    }

    /// The checkpoint of the first `tree_size` records, signed now by this node and cosigned as
    /// [`Notary::checkpoint`] is. [`NotaryError::Range`] beyond the applied tree,
    /// [`NotaryError::NoCheckpoint`] without a signing key.
    pub async fn checkpoint_at(&self, tree_size: u64) -> Result<CosignedCheckpoint, NotaryError> {
        let root = self.root_at(tree_size).await?;
        let own = self
            .inner
            .reader
            .signer()
            .sign(tree_size, root)
            .map_err(|e| NotaryError::Internal(e.to_string()))?
            .ok_or_else(|| {
                NotaryError::NoCheckpoint(
                    "this node has no checkpoint signing key configured".into(),
                )
            })?;
        let cosignatures = self.cosignatures(Cosigned::Checkpoint, tree_size).await;
        checkpoint::cosigned(&own, cosignatures).map_err(|e| NotaryError::Internal(e.to_string()))
    }

    /// Ask every other member to cosign `what` at `tree_size`, in parallel, each within
    /// `cosign_timeout`; returns the answers that came.
    async fn cosignatures(&self, what: Cosigned, tree_size: u64) -> Vec<Cosignature> {
        let status = self.status();
        let timeout = self.inner.cosign_timeout;
        let mut asked = JoinSet::new();
        for (id, addr) in status.voters.into_iter().chain(status.learners) {
            if id == self.inner.node_id || addr.is_empty() {
                continue;
            }
            let peers = self.inner.peers.clone();
            asked.spawn(async move {
                let deadline = tokio::time::Instant::now() + timeout;
                let cosignature = loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let asked = async {
                        match what {
                            Cosigned::Checkpoint => peers.cosign(&addr, tree_size, left).await,
                            Cosigned::StatusList => {
                                peers.cosign_status(&addr, tree_size, left).await
                            }
                        }
                    };
                    let answer = tokio::time::timeout(left, asked).await;
                    match answer {
                        Ok(Ok(Ok(cosignature))) => break Some(cosignature),
                        // A follower learns of a commit a moment after the leader: ask again
                        // while the budget lasts.
                        Ok(Ok(Err(CosignRefusal::NotYet { .. })))
                            if tokio::time::Instant::now() + COSIGN_RETRY < deadline =>
                        {
                            tokio::time::sleep(COSIGN_RETRY).await;
                        }
                        Ok(Ok(Err(refusal))) => {
                            tracing::debug!(member = id, ?what, %refusal, "no cosignature");
                            break None;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(member = id, ?what, error = %e, "no cosignature");
                            break None;
                        }
                        Err(_) => break None,
                    }
                };
                (id, cosignature)
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = asked.join_next().await {
            if let Ok((id, Some(cosignature))) = answer {
                answers.push((id, cosignature));
            }
        }
        // In member order, so the same members give the same note.
        answers.sort_by_key(|(id, _)| *id);
        answers.into_iter().map(|(_, c)| c).collect()
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

    /// The gRPC service peers call (Raft, Forward, Cosign, CosignStatus), with message size
    /// limits set.
    /// Mount it on the node's TLS server and admit node certificates only: Forward appends
    /// records as this node. Set TCP_NODELAY on the accepted sockets: without it, small replies
    /// wait for delayed ACKs and forwarded appends ran five times slower in the cluster test.
    pub fn raft_service(&self) -> RaftServer<RaftService> {
        let node = Arc::new(NodeCalls {
            queue: self.inner.queue.clone(),
            reader: self.inner.reader.clone(),
            commit_timeout: self.inner.commit_timeout,
        });
        RaftService::with_node(self.inner.raft.clone(), node).into_server()
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
            snapshot_raft_index: metrics.snapshot.map(|id| id.index),
            purged_raft_index: metrics.purged.map(|id| id.index),
            millis_since_quorum_ack: metrics.millis_since_quorum_ack,
            replication: metrics
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
            election_timeout_max_ms: self.inner.raft.config().election_timeout_max,
        }
    }

    /// Counters of the group-commit batches this node formed (for metrics).
    pub fn batch_stats(&self) -> &group_commit::BatchStats {
        &self.inner.batch_stats
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

    /// On the leader: remove node `node_id` from the cluster, voter or learner; it no longer
    /// receives the log. Returns once the change is committed. Removing a voter changes the
    /// majority; removing the last voter is refused by openraft ([`NotaryError::Membership`]).
    pub async fn remove_node(&self, node_id: u64) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        let is_voter = self.status().voters.contains_key(&node_id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        // `retain = false`: a removed voter does not stay on as a learner.
        let changed =
            tokio::time::timeout(timeout, self.inner.raft.change_membership(change, false))
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
        if let Err(e) = self.inner.reader.seal().await {
            tracing::warn!(error = %e, "storing the checkpoint of the last applied head");
        }
        close(&self.inner.db).await;
        stopped.map_err(|e| NotaryError::Internal(format!("raft task: {e}")))
    }
}

/// What a member is asked to cosign.
#[derive(Debug, Clone, Copy)]
enum Cosigned {
    Checkpoint,
    StatusList,
}

/// What this node serves to its peers besides Raft: forwarded appends go through its own group
/// commit (marked, so they are never forwarded again), cosignatures come from its own state.
struct NodeCalls {
    queue: mpsc::Sender<Pending>,
    reader: StateReader,
    commit_timeout: Duration,
}

#[tonic::async_trait]
impl LocalNode for NodeCalls {
    async fn forwarded(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<ForwardedReceipt>, ForwardRefusal> {
        let timeout = self.commit_timeout;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            records,
            reply,
            forwarded: true,
        };
        let waited = tokio::time::timeout(timeout + ANSWER_GRACE, async {
            self.queue
                .send(pending)
                .await
                .map_err(|_| NotaryError::ShutDown)?;
            answer.await.map_err(|_| NotaryError::ShutDown)?
        })
        .await
        .unwrap_or(Err(NotaryError::commit_timed_out(timeout)));
        match waited {
            Ok(receipts) => Ok(receipts
                .into_iter()
                .map(|r| ForwardedReceipt {
                    log_index: r.log_index,
                    record_hash: r.record_hash,
                })
                .collect()),
            Err(NotaryError::Unavailable(Unavailability {
                reason: UnavailableReason::CommitTimedOut(after),
                ..
            })) => Err(ForwardRefusal::TimedOut {
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            }),
            // Nothing was recorded: the sender retries at the leader it learns of.
            Err(NotaryError::Unavailable(u)) => Err(ForwardRefusal::NotLeader {
                leader: u.leader.map(|l| l.node_id),
            }),
            Err(e) => Err(ForwardRefusal::Failed {
                reason: e.to_string(),
            }),
        }
    }

    async fn cosign(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        self.reader.cosign(tree_size).await
    }

    async fn cosign_status(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        self.reader.cosign_status(tree_size).await
    }
}

async fn close(db: &Db) {
    let db = db.clone();
    // `close` waits for running storage calls; a panic there leaves nothing more to close.
    let _ = tokio::task::spawn_blocking(move || db.close()).await;
}
