//! openraft's storage conformance suite against the RocksDB log store and
//! state machine.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use crate::store::db::Db;
use crate::store::log_store::LogStore;
use crate::store::snapshot::SnapshotDir;
use crate::store::state_machine::{Shared, StateMachine};
use crate::store::types::TypeConfig;

struct RocksBuilder;

fn io_error(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
    StorageError::from_io_error(
        ErrorSubject::Store,
        ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let db = Arc::new(Db::open(&dir.path().join("db")).map_err(io_error)?);
        let snapshots = SnapshotDir::open(dir.path().join("snapshots")).map_err(io_error)?;
        let shared = Shared::open(db.clone(), snapshots).map_err(io_error)?;
        Ok((dir, LogStore::new(db), StateMachine::new(shared)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(RocksBuilder).await?;
    Ok(())
}
