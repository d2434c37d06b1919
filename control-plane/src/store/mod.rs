//! reef's etcd: a Raft-replicated, versioned key-value store with
//! compare-and-swap transactions, watches, and replicated blobs.
//!
//! Every write is a Raft proposal (openraft) applied to RocksDB on every
//! member; a key's revision is the log index of the entry that wrote it.
//! Only this module knows openraft and RocksDB: the rest of the control plane
//! codes against [`Store`].
//!
//! Layout: [`types`] (public types, Raft type config), `log_store` (Raft log
//! and vote), `state_machine` (apply, snapshots via `snapshot`), `kv` (reads),
//! `watch` (event fan-out and history), `network` / `rpc` (Raft over HTTP).

mod db;
mod error;
mod kv;
mod log_store;
mod network;
mod rpc;
mod snapshot;
mod state_machine;
pub mod types;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError};
use openraft::{Config, ServerState, SnapshotPolicy};

pub use error::StoreError;
pub use types::{
    Check, EventKind, KeyValue, Node, NodeId, Op, Raft, Revision, Txn, TxnOutcome, TypeConfig,
    WatchEvent,
};

use db::Db;
use log_store::LogStore;
use network::Network;
use state_machine::{Shared, StateMachine};
use types::RaftError;

/// How a member is identified, reached and tuned.
#[derive(Clone)]
pub struct StoreConfig {
    /// This member's Raft id (`--id`); unique in the cluster, never reused.
    pub id: NodeId,
    /// Holds `db/` (RocksDB) and `snapshots/`.
    pub data_dir: PathBuf,
    /// "host:port" where other members reach this member's HTTP server.
    pub advertise: String,
    /// Bearer token members present on `/raft/*`; must not be empty.
    pub secret: String,
    /// Leader heartbeat. openraft's 50 ms default is too tight for a loaded 2-core box.
    pub heartbeat: Duration,
    /// A follower campaigns after a random timeout in `[election_min, election_max)`.
    pub election_min: Duration,
    pub election_max: Duration,
    /// Per-chunk deadline when sending a snapshot.
    pub install_snapshot_timeout: Duration,
    /// Take a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot, so slightly lagging followers catch up
    /// from the log rather than from a (blob-laden) snapshot. Disk use of the
    /// log is bounded by about `snapshot_every + keep_logs` entries.
    pub keep_logs: u64,
    /// Most entries per AppendEntries RPC. Batches over 4 MiB are split
    /// further (openraft allows one heartbeat interval per RPC), so blob chunks
    /// should stay around 1 MiB.
    pub max_payload_entries: u64,
}

impl StoreConfig {
    /// A config with the timer and log defaults described on each field.
    pub fn new(
        id: NodeId,
        data_dir: impl Into<PathBuf>,
        advertise: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        StoreConfig {
            id,
            data_dir: data_dir.into(),
            advertise: advertise.into(),
            secret: secret.into(),
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            install_snapshot_timeout: Duration::from_secs(5),
            snapshot_every: 1000,
            keep_logs: 200,
            max_payload_entries: 300,
        }
    }

    fn raft_config(&self) -> Result<Config, StoreError> {
        if self.secret.is_empty() {
            return Err(StoreError::Config("the member secret is empty".into()));
        }
        if self.advertise.is_empty() {
            return Err(StoreError::Config("the advertise address is empty".into()));
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: "reef".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            install_snapshot_timeout: ms(self.install_snapshot_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.keep_logs,
            max_payload_entries: self.max_payload_entries.max(1),
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| StoreError::Config(e.to_string()))
    }
}

/// The secret stays out of logs.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("id", &self.id)
            .field("data_dir", &self.data_dir)
            .field("advertise", &self.advertise)
            .field("secret", &"<redacted>")
            .field("heartbeat", &self.heartbeat)
            .field("election_min", &self.election_min)
            .field("election_max", &self.election_max)
            .field("install_snapshot_timeout", &self.install_snapshot_timeout)
            .field("snapshot_every", &self.snapshot_every)
            .field("keep_logs", &self.keep_logs)
            .field("max_payload_entries", &self.max_payload_entries)
            .finish()
    }
}

/// One member of the store. Share it as `Arc<Store>`; call [`Store::shutdown`]
/// before dropping it, or Raft keeps running in the background.
pub struct Store {
    id: NodeId,
    advertise: String,
    secret: Arc<str>,
    raft: Raft,
    shared: Arc<Shared>,
    /// How long a write or read barrier waits for a leader to be elected.
    leader_wait: Duration,
}

impl Store {
    pub async fn open(config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        let raft_config = Arc::new(config.raft_config()?);
        let data_dir = config.data_dir.clone();
        let (db, snapshots) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&data_dir)?;
            let db = Db::open(&data_dir.join("db"))?;
            let snapshots = snapshot::SnapshotDir::open(data_dir.join("snapshots"))?;
            Ok::<_, StoreError>((db, snapshots))
        })
        .await
        .map_err(|e| StoreError::Stopped(format!("open: {e}")))??;
        let db = Arc::new(db);
        let shared = Shared::open(db.clone(), snapshots)?;
        let secret: Arc<str> = config.secret.as_str().into();
        let network = Network::new(config.id, secret.clone())
            .map_err(|e| StoreError::Config(format!("http client: {e}")))?;
        let raft = Raft::new(
            config.id,
            raft_config,
            network,
            LogStore::new(db),
            StateMachine::new(shared.clone()),
        )
        .await
        .map_err(|e| StoreError::Stopped(e.to_string()))?;
        Ok(Arc::new(Store {
            id: config.id,
            advertise: config.advertise,
            secret,
            raft,
            shared,
            leader_wait: config.election_max * 3,
        }))
    }

    /// Makes this member a single-voter cluster if the data dir holds no state
    /// yet, and waits until it leads; a no-op otherwise.
    pub async fn initialize_single(&self) -> Result<(), StoreError> {
        if self.raft.is_initialized().await.map_err(stopped)? {
            return Ok(());
        }
        let members = BTreeMap::from([(
            self.id,
            Node {
                addr: self.advertise.clone(),
            },
        )]);
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(RaftError::APIError(e)) => return Err(StoreError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => return Err(StoreError::Stopped(e.to_string())),
        }
        self.raft
            .wait(Some(self.leader_wait))
            .current_leader(self.id, "single member leads")
            .await
            .map_err(|e| StoreError::Timeout(e.to_string()))?;
        Ok(())
    }

    /// Proposes through Raft; returns once committed (fsynced on a majority)
    /// and applied locally.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.wait_for_leader().await?;
        match self.raft.client_write(txn).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(StoreError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(StoreError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(StoreError::Stopped(e.to_string())),
        }
    }

    /// Linearizable read barrier (read-index on the leader): once it returns,
    /// local reads reflect every write committed before it was called.
    /// Followers get `NotLeader` for now.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        self.wait_for_leader().await?;
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(StoreError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(StoreError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(StoreError::Stopped(e.to_string())),
        }
    }

    /// Right after start no leader is known for an election timeout or two;
    /// waiting here spares every caller a retry loop.
    async fn wait_for_leader(&self) -> Result<(), StoreError> {
        if self.raft.metrics().borrow().current_leader.is_some() {
            return Ok(());
        }
        self.raft
            .wait(Some(self.leader_wait))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::NotLeader { leader: None })
    }

    /// The key from local applied state (not a linearizable read by itself).
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        kv::get(&self.shared.db, key)
    }

    /// Keys under `prefix`, sorted by key, from one consistent RocksDB
    /// snapshot, with the applied revision they reflect.
    pub fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        kv::range(&self.shared.db, prefix)
    }

    /// Last applied log index.
    pub fn revision(&self) -> Revision {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// Events with revision > `since` for keys under `prefix`, in order, then
    /// live ones. `Compacted` when `since` is older than retained history.
    /// The receiver closes if the watcher falls behind or a snapshot replaces
    /// the state; the caller then relists.
    pub fn watch(
        &self,
        prefix: &str,
        since: Revision,
    ) -> Result<tokio::sync::mpsc::Receiver<WatchEvent>, StoreError> {
        self.shared.hub().watch(prefix, since)
    }

    /// The blob's chunks concatenated; `Corrupt` if they leave a gap.
    pub fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        kv::read_blob(&self.shared.db, digest)
    }

    /// End of the blob's last chunk.
    pub fn blob_size(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        kv::blob_size(&self.shared.db, digest)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle, for membership changes and metrics (joining
    /// members, `reef admin members`).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Routes for the Raft RPCs (`POST /raft/append`, `/raft/vote`,
    /// `/raft/snapshot`), to be mounted by the API server on its port.
    pub fn raft_router(self: &Arc<Self>) -> axum::Router {
        rpc::router(self.raft.clone(), self.secret.clone())
    }

    /// Stops Raft and waits until its tasks have let go of the database, so
    /// the data dir can be reopened once this `Store` is dropped.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| StoreError::Stopped(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.shared) > 1 || Arc::strong_count(&self.shared.db) > 1 {
            if Instant::now() > deadline {
                return Err(StoreError::Timeout(
                    "raft tasks still hold the database".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.db.raw().flush_wal(true)?;
        Ok(())
    }
}

fn stopped(e: openraft::error::Fatal<NodeId>) -> StoreError {
    StoreError::Stopped(e.to_string())
}
