//! Read access to a stopped node's notarization log, for verifying it offline
//! (`qianlian audit verify --data-dir`).
//!
//! The database is opened read-only and *without* the integrity check a node runs on open: the
//! point is to read a database that may have been altered and let the verifier say where. So
//! nothing here trusts the stored data: records come back as the bytes stored, leaf hashes and
//! proofs as the tree nodes stored, and the verifier compares them.

use std::fmt;
use std::path::{Path, PathBuf};

use qianlian_verifier::Hash;
use rocksdb::{ColumnFamilyDescriptor, DB, Options};

use crate::db::{self, CF_SM_META, StoreError, get_value};
use crate::merkle::{self, Subtree};
use crate::state_machine::audit_index;
use crate::state_machine::error::{RangeError, ReadError};
use crate::state_machine::meta::{KEY_CHECKPOINT, KEY_GENERATION, KEY_TREE_SIZE};
use crate::state_machine::tree::read_node;

/// A stopped node's log, opened read-only.
pub struct OfflineLog {
    db: DB,
    path: PathBuf,
    generation: u32,
    tree_size: u64,
    checkpoint: Option<String>,
}

impl fmt::Debug for OfflineLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineLog")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .field("tree_size", &self.tree_size)
            .finish()
    }
}

impl OfflineLog {
    /// Open the database of the node whose data directory is `data_dir` (the database is
    /// `data_dir/raft`) read-only. Fails with [`StoreError::Io`] if there is none, with
    /// [`StoreError::Rocks`] if RocksDB cannot open it, and with [`StoreError::Corrupt`] or
    /// [`StoreError::UnknownFormat`] if its applied state does not decode. Blocking.
    pub fn open(data_dir: &Path) -> Result<OfflineLog, StoreError> {
        let path = data_dir.join("raft");
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::Io(format!(
                "no notarization log database at {}",
                path.display()
            )));
        }
        let opts = Options::default();
        // Whatever column families the node had: one written before a newer layout lacks some.
        let cfs = DB::list_cf(&opts, &path)?.into_iter().map(|name| {
            let cf_opts = db::cf_options(&name);
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = DB::open_cf_descriptors_read_only(&opts, &path, cfs, false)?;
        let generation: u32 =
            get_value(&db, CF_SM_META, KEY_GENERATION, "generation")?.unwrap_or(0);
        let tree_size: u64 = get_value(&db, CF_SM_META, KEY_TREE_SIZE, "tree size")?.unwrap_or(0);
        let checkpoint: Option<String> = get_value(&db, CF_SM_META, KEY_CHECKPOINT, "checkpoint")?;
        Ok(OfflineLog {
            db,
            path,
            generation,
            tree_size,
            checkpoint,
        })
    }

    /// The tree size the node last applied.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The stored bytes of records `start..min(start + max, tree_size)`, as stored (not
    /// decoded or checked). [`StoreError::Corrupt`] if one is missing.
    pub fn records(&self, start: u64, max: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        audit_index::entries(&self.db, self.generation, self.tree_size, start, max)
    }

    /// This node's stored signed checkpoint note, if it has one.
    pub fn checkpoint_note(&self) -> Option<String> {
        self.checkpoint.clone()
    }

    /// The stored leaf hash of record `index` and its inclusion proof in the tree of
    /// `tree_size`, from the stored tree nodes (bottom-up, as
    /// `qianlian_verifier::verify_inclusion` takes it). [`RangeError`] beyond the stored tree.
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<(Hash, Vec<Hash>), ReadError> {
        if tree_size > self.tree_size {
            return Err(RangeError::TreeSize {
                size: tree_size,
                applied: self.tree_size,
            }
            .into());
        }
        if index >= tree_size {
            return Err(RangeError::LogIndex {
                index,
                size: tree_size,
            }
            .into());
        }
        let generation = self.generation;
        let leaf = read_node(&self.db, generation, Subtree::new(0, index))?;
        let proof = merkle::inclusion_proof(index, tree_size, &mut |id| {
            read_node(&self.db, generation, id)
        })?;
        Ok((leaf, proof))
    }
}
