//! Store tests on real RocksDB in temp dirs; the cluster test runs real HTTP
//! on loopback. Waits poll Raft metrics with a deadline, never sleep.

mod backup;
mod cluster;
mod harness;
mod members;
mod single;
mod suite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Op, Store, StoreConfig, Txn};

/// Generous: the test box has 2 cores and is usually compiling something.
pub(super) const WAIT: Duration = Duration::from_secs(60);
pub(super) const SECRET: &str = "test-secret";

pub(super) fn config(id: u64, root: &Path, advertise: &str) -> StoreConfig {
    StoreConfig::new(id, root.join(format!("member-{id}")), advertise, SECRET)
}

/// A single-member store that leads. Its advertise address is never dialled.
pub(super) async fn single(root: &Path) -> anyhow::Result<Arc<Store>> {
    let store = Store::open(config(1, root, "127.0.0.1:9")).await?;
    store.initialize_single().await?;
    Ok(store)
}

pub(super) fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

pub(super) fn ops(ops: Vec<Op>) -> Txn {
    Txn {
        checks: vec![],
        ops,
    }
}
