//! How a notary node is set up: its configuration with the defaults, the Raft timing, and the
//! checks and the openraft configuration derived from them when it opens.

use std::path::PathBuf;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use qianlian_verifier::NoteSigner;
use tonic::transport::ClientTlsConfig;

use super::error::NotaryError;
use crate::checkpoint;
use crate::types::DEFAULT_MAX_BATCH;

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
    ///
    /// [`Notary::checkpoint`]: super::Notary::checkpoint
    pub signer: Option<NoteSigner>,
    /// The checkpoint origin line, naming the log: default `"gov.example/qianlian"`
    /// ([`checkpoint::DEFAULT_ORIGIN`]). Every node of a cluster must use the same one, or
    /// their signatures cover different bodies and never count as cosignatures. It must be one
    /// line without control characters.
    pub origin: String,
    /// How long [`Notary::checkpoint`] waits for the members' cosignatures (asked in parallel);
    /// a member that has not answered by then is left out. Default 1 s.
    ///
    /// [`Notary::checkpoint`]: super::Notary::checkpoint
    pub cosign_timeout: Duration,
    /// How stale a cosigned head the calls open to anyone may be handed (checkpoints, proofs
    /// against the latest head, license watches and trust bundles; see
    /// [`Notary::shared_checkpoint`]). Such a head is never older than this, unless the log has
    /// not grown since and every member cosigned it; a caller that needs a record covered gets
    /// a newer head at once. Default 1 s.
    ///
    /// [`Notary::shared_checkpoint`]: super::Notary::shared_checkpoint
    pub checkpoint_max_age: Duration,
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
            checkpoint_max_age: Duration::from_secs(1),
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

pub(super) fn raft_config(config: &NotaryConfig) -> Result<Config, NotaryError> {
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

pub(super) fn validate(config: &NotaryConfig) -> Result<(), NotaryError> {
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
