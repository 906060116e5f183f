//! What the parts of the state machine share: its configuration, the applied state in memory
//! with the channels that announce it, the generation lock, and the bookkeeping of snapshot files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::meta::{Applied, ConfigPointers};
use crate::checkpoint::{self, CheckpointSigner, SignedCheckpoint};

/// How the state machine is set up.
#[derive(Debug, Clone)]
pub struct StateMachineConfig {
    /// Where snapshot files live (built, received and current). Created if missing.
    pub snapshot_dir: PathBuf,
    /// This node's checkpoint key and the log's origin line.
    pub signer: CheckpointSigner,
}

impl StateMachineConfig {
    /// Snapshots in `snapshot_dir`; no checkpoint key, the default origin.
    pub fn new(snapshot_dir: impl Into<PathBuf>) -> StateMachineConfig {
        StateMachineConfig {
            snapshot_dir: snapshot_dir.into(),
            signer: match CheckpointSigner::new(None, checkpoint::DEFAULT_ORIGIN) {
                Ok(signer) => signer,
                // The default origin is a valid line; `new` only fails on a bad one.
                Err(e) => unreachable!("{e}"),
            },
        }
    }
}

/// The state machine's state, shared by the store, its readers and its snapshot builder.
#[derive(Debug)]
pub(super) struct Shared {
    // Updated only after the write that it mirrors returned.
    pub(super) applied: Mutex<Applied>,
    // The tree size, for those who wait for the log to grow.
    pub(super) tree_size: watch::Sender<u64>,
    // The configuration in force, for those who follow its changes.
    pub(super) config_pointers: watch::Sender<ConfigPointers>,
    // The largest tree size whose records callers were told are committed before this node
    // applied them (see `crate::commit_receipts`): readers wait until the tree has grown to it.
    pub(super) promised: AtomicU64,
    // Records refused by the origin check since this process started (see `origin`).
    pub(super) refused: AtomicU64,
    // Shared by every read of generation data, exclusive while an install switches generations.
    pub(super) generation_lock: RwLock<()>,
    // The newest head signed on a reader's demand, newer than the stored checkpoint.
    pub(super) on_demand: Mutex<Option<SignedCheckpoint>>,
    // Snapshots refused because they did not extend a tree this node signed.
    pub(super) snapshots_refused: AtomicU64,
    // Batch signatures this node has verified, so that each is verified once.
    pub(super) verified_batches: super::origin::VerifiedBatches,
    pub(super) config: StateMachineConfig,
    pub(super) files: Files,
}

impl Shared {
    pub(super) fn applied(&self) -> MutexGuard<'_, Applied> {
        // Poisoned only by a panic between two plain assignments: the value is still whole.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn read_generation(&self) -> RwLockReadGuard<'_, ()> {
        self.generation_lock
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self, applied: Applied) {
        let size = applied.tree_size;
        let config = applied.config;
        *self.applied() = applied;
        // Configuration first: whoever wakes on the new tree size (an operator's config change
        // waiting for this node to apply it) must find the configuration of that size in force.
        self.config_pointers.send_if_modified(|c| {
            let changed = *c != config;
            *c = config;
            changed
        });
        self.tree_size.send_replace(size);
    }
}

/// Snapshot bookkeeping shared by the builder and the state machine.
#[derive(Debug, Default)]
pub(super) struct Files {
    // Serialises switching `snapshot/current`, so an older build finishing late cannot replace
    // a newer install.
    pub(super) current: Mutex<()>,
    // The file `begin_receiving_snapshot` created last, deleted once installed.
    pub(super) receiving: Mutex<Option<PathBuf>>,
    sequence: AtomicU64,
}

impl Files {
    pub(super) fn unique(&self, prefix: &str, suffix: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{nanos}-{n}{suffix}")
    }
}
