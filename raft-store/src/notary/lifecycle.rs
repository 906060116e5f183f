//! Opening a notary (checking its stored state, starting Raft and the batcher) and shutting it
//! down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use tokio::sync::mpsc;

use super::config::{NotaryConfig, raft_config, validate};
use super::error::NotaryError;
use super::group_commit::{self, Committer, Limits};
use super::head_cache::HeadCache;
use super::{CosignStats, Inner, Notary};
use crate::checkpoint::CheckpointSigner;
use crate::commit_receipts::EarlyReceipts;
use crate::db::{Db, StoreError};
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, Peers};
use crate::state_machine::integrity;
use crate::state_machine::{StateMachineConfig, StateMachineStore, StateReader};
use crate::types::TypeConfig;

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
        let (db, state_machine, report) = open_checked_state(&config, signer).await?;
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

        let notary = with_batcher(&config, raft, reader, peers, db, early);
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

/// Open the database under `data_dir`, load the state machine and check the whole stored state.
/// On an error the database is closed again, leaving the directory free.
async fn open_checked_state(
    config: &NotaryConfig,
    signer: CheckpointSigner,
) -> Result<(Db, StateMachineStore, integrity::Report), NotaryError> {
    let dir = config.data_dir.join("raft");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| NotaryError::Config(format!("data_dir {}: {e}", config.data_dir.display())))?;
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
    Ok((db, state_machine, report))
}

/// Start the group-commit batcher in front of `raft` and wrap the running parts in the handle.
fn with_batcher(
    config: &NotaryConfig,
    raft: openraft::Raft<TypeConfig>,
    reader: StateReader,
    peers: Peers,
    db: Db,
    early: Arc<EarlyReceipts>,
) -> Notary {
    let (queue, receiver) =
        mpsc::channel(config.max_batch.saturating_mul(config.max_in_flight + 1));
    let batch_stats = Arc::new(group_commit::BatchStats::default());
    let authority_stats = Arc::new(crate::network::AuthorityStats::default());
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
        reader: reader.clone(),
    };
    let batcher = tokio::spawn(group_commit::run(committer, receiver));
    Notary {
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
            head_max_age: config.checkpoint_max_age,
            checkpoints: HeadCache::default(),
            status_lists: HeadCache::default(),
            cosign_stats: Arc::new(CosignStats::default()),
            authority_stats,
        }),
    }
}

async fn close(db: &Db) {
    let db = db.clone();
    // `close` waits for running storage calls; a panic there leaves nothing more to close.
    let _ = tokio::task::spawn_blocking(move || db.close()).await;
}
