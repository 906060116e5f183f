//! openraft's storage conformance suite against the RocksDB log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use qianlian_raft_store::db::Db;
use qianlian_raft_store::log_store::LogStore;
use qianlian_raft_store::state_machine::{StateMachineConfig, StateMachineStore};
use qianlian_raft_store::types::{NodeId, TypeConfig};
use tempfile::TempDir;

/// A fresh database in its own temporary directory per test case; the directory goes with the
/// guard.
struct RocksBuilder;

fn setup_error(e: &(dyn std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::from_dyn(e, None)).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new().map_err(|e| setup_error(&e))?;
        let db = Db::open(&dir.path().join("db")).map_err(|e| setup_error(&e))?;
        let config = StateMachineConfig::new(dir.path().join("snapshots"));
        let state_machine = StateMachineStore::new(db.clone(), config)
            .await
            .map_err(|e| setup_error(&e))?;
        Ok((dir, LogStore::new(db), state_machine))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_suite() -> Result<(), Box<dyn std::error::Error>> {
    Suite::test_all(RocksBuilder)?;
    Ok(())
}
