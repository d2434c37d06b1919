//! reef's etcd: a Raft-replicated, versioned key-value store with
//! compare-and-swap transactions, watches, and replicated blobs.
//!
//! Every write is a Raft proposal (openraft) applied to RocksDB on every
//! member. Concurrent writes share one entry and one fsync (`proposer`);
//! each write still gets its own revision and its own compare-and-swap
//! outcome.
//! Only this module knows openraft and RocksDB: the rest of the control plane
//! codes against [`Store`].
//!
//! Any member serves the whole store: writes are forwarded to the leader and
//! reads can be made linearizable on any member (`cluster`). Members join as
//! learners, catch up, then vote. Backups stream a consistent snapshot with a
//! checksum; a restore builds a single-voter member that keeps the backup's
//! revisions (`backup`).
//!
//! Layout: [`types`] (public types, Raft type config), `log_store` (Raft log
//! and vote), `state_machine` (apply, snapshots via `snapshot`), `kv` (reads),
//! `watch` (event fan-out and history), `network` / `rpc` (member RPCs over
//! HTTP), `cluster` (forwarding, read index), `proposer` (group commit),
//! `membership` (join, promote, remove), `backup`.

mod backup;
mod campaign;
mod cluster;
mod db;
mod error;
mod kv;
mod log_store;
mod membership;
mod network;
mod proposer;
mod rpc;
mod slow;
mod snapshot;
mod state_machine;
pub mod types;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::InitializeError;
use openraft::{Config, ServerState, SnapshotPolicy};

pub use cluster::MAX_TXN_BYTES;
pub use error::StoreError;
pub use types::{
    BackupInfo, Check, EventKind, KeyValue, MemberInfo, MemberRole, Node, NodeId, Op, Proposal,
    Revision, Txn, TxnOutcome, TypeConfig, WatchEvent,
};

/// The Raft node of this member.
pub(crate) type Raft = openraft::Raft<TypeConfig, StateMachine>;
pub use watch::{Selector, Watch, WatchIndex};

use db::Db;
use log_store::LogStore;
use network::Network;
use proposer::Proposer;
use state_machine::{Shared, StateMachine};
use types::RaftError;

/// Where a member's Raft log and snapshot stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// The last index covered by this member's newest snapshot.
    pub snapshot_index: u64,
    /// The log is compacted (purged) up to and including this index.
    pub purged_index: u64,
}

/// Leader heartbeat by default: openraft sends one every 40–48 ms.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(40);
/// Election timeout by default (the maximum is 4/3 of it): a killed leader
/// is replaced after about 300 ms, and a follower must miss about five
/// heartbeats in a row before it campaigns.
pub const DEFAULT_ELECTION_MIN: Duration = Duration::from_millis(120);

/// The shortest default request timeout. Short Raft timers make failover
/// fast, but a write must not fail merely because one fsync or snapshot on a
/// busy machine took longer than a few election timeouts (CI saw a 504 at
/// 480 ms on one member); etcd's server waits 5 s plus two elections.
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Leader heartbeat (openraft sends one at the first tick at or after
    /// this interval) and the deadline of one heartbeat RPC.
    pub heartbeat: Duration,
    /// A follower campaigns once it has heard no leader for `election_max`
    /// (openraft's leader lease, during which it also refuses votes) plus a
    /// random timeout in `[election_min, election_max)`. Failover takes
    /// about that long; a follower that misses heartbeats for as long starts
    /// a spurious election.
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
    /// How long a write or read barrier may take, retries across leader
    /// changes included, before it fails with `NotLeader` or `Timeout`.
    /// `None`: [`MIN_REQUEST_TIMEOUT`] or three times `election_max`,
    /// whichever is longer.
    pub request_timeout: Option<Duration>,
    /// How long a joining member may take to catch up before `add_member`
    /// gives up (it then stays a learner).
    pub join_timeout: Duration,
    /// The cluster CA (PEM) members trust when they call each other over
    /// HTTPS (an `https://` advertise address).
    pub ca_pem: Option<String>,
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
            heartbeat: DEFAULT_HEARTBEAT,
            election_min: DEFAULT_ELECTION_MIN,
            election_max: DEFAULT_ELECTION_MIN * 4 / 3,
            install_snapshot_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
            keep_logs: 200,
            max_payload_entries: 300,
            request_timeout: None,
            join_timeout: Duration::from_secs(60),
            ca_pem: None,
        }
    }

    fn request_timeout(&self) -> Duration {
        self.request_timeout
            .unwrap_or((self.election_max * 3).max(MIN_REQUEST_TIMEOUT))
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
            // A member whose data dir was wiped and that comes back under its
            // id must not make the leader panic (openraft asserts that a
            // follower log never goes back); add_member takes such a member
            // out and back in as a learner if it is still empty by then.
            allow_log_reversion: Some(true),
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
            .field("request_timeout", &self.request_timeout)
            .field("join_timeout", &self.join_timeout)
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
    /// How long `initialize_single` waits to lead.
    leader_wait: Duration,
    /// Deadline of one write, read barrier or membership RPC, retries included.
    request_timeout: Duration,
    join_timeout: Duration,
    heartbeat: Duration,
    /// Calls to other members (forwarded writes, read indexes, membership).
    http: reqwest::Client,
    /// Batches this member's writes into entries while it leads.
    proposer: Proposer,
    /// One read barrier at a time; holds when the last completed one began.
    barrier: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Membership changes on the leader happen one at a time.
    membership_lock: tokio::sync::Mutex<()>,
    /// When this member last heard a leader, for the election watchdog.
    contact: Arc<campaign::Contact>,
    /// Set when `shutdown` begins: requests are refused as "not leader".
    stopped: AtomicBool,
    /// The data dir held Raft state when opened.
    initialized_at_open: bool,
}

impl Store {
    pub async fn open(config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        let raft_config = Arc::new(config.raft_config()?);
        let request_timeout = config.request_timeout();
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
        let initialized_at_open = log_store::holds_state(&db)?;
        let shared = Shared::open(db.clone(), snapshots)?;
        let secret: Arc<str> = config.secret.as_str().into();
        let http = network::http_client(config.ca_pem.as_deref())
            .map_err(|e| StoreError::Config(format!("http client: {e}")))?;
        let network = Network::new(config.id, secret.clone(), http.clone());
        let raft = Raft::new(
            config.id,
            raft_config,
            network,
            LogStore::new(db),
            StateMachine::new(shared.clone()),
        )
        .await
        .map_err(|e| StoreError::Stopped(e.to_string()))?;
        let proposer = Proposer::start(raft.clone(), config.id, cluster::MAX_PROPOSAL_BYTES);
        let contact = Arc::new(campaign::Contact::default());
        let store = Arc::new(Store {
            id: config.id,
            advertise: config.advertise,
            secret,
            raft,
            shared,
            leader_wait: config.election_max * 3,
            request_timeout,
            join_timeout: config.join_timeout,
            heartbeat: config.heartbeat,
            http,
            proposer,
            barrier: tokio::sync::Mutex::new(None),
            membership_lock: tokio::sync::Mutex::new(()),
            contact: contact.clone(),
            stopped: AtomicBool::new(false),
            initialized_at_open,
        });
        campaign::watch_for_a_lost_leader(Arc::downgrade(&store), contact, config.election_max);
        slow::watch_runtime(Arc::downgrade(&store));
        Ok(store)
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

    /// The key from local applied state (not a linearizable read by itself).
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        kv::get(&self.shared.db, key)
    }

    /// Keys under `prefix`, sorted by key, from one consistent RocksDB
    /// snapshot, with the applied revision they reflect.
    pub fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        kv::range(&self.shared.db, prefix)
    }

    /// The store's current revision on this member: every write applied here
    /// is at or below it.
    pub fn revision(&self) -> Revision {
        self.shared.current_revision()
    }

    /// A revision whose events are all in the watch history (the state
    /// machine raises the revision and publishes under one lock), so a
    /// watcher that reads everything after this call has seen every write
    /// applied before it.
    pub fn published_revision(&self) -> Revision {
        let _hub = self.shared.hub();
        self.shared.current_revision()
    }

    /// Waits until this member has applied every write up to `revision`.
    pub async fn wait_for_revision(
        &self,
        revision: Revision,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.wait_applied(revision, tokio::time::Instant::now() + timeout)
            .await
    }

    /// Events with revision > `since` for keys under `prefix`, in order, then
    /// live ones. `Compacted` when `since` is older than retained history.
    /// The watch closes if the history drops an event it has not read or a
    /// snapshot replaces the state; the caller then relists.
    pub fn watch(&self, prefix: &str, since: Revision) -> Result<Watch, StoreError> {
        watch::watch(&self.shared.hub, prefix, None, since)
    }

    /// As [`Store::watch`], of the events `selector` picks: a watcher of one
    /// value is woken by its own events only.
    pub fn watch_selected(
        &self,
        prefix: &str,
        selector: Selector,
        since: Revision,
    ) -> Result<Watch, StoreError> {
        watch::watch(&self.shared.hub, prefix, Some(selector), since)
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
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where this member's log and snapshot stand, for metrics and tests.
    pub fn progress(&self) -> Progress {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let index = |id: Option<types::LogId>| id.map_or(0, |l| l.index);
        Progress {
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: index(m.last_applied),
            snapshot_index: index(m.snapshot),
            purged_index: index(m.purged),
        }
    }

    /// The openraft handle, for metrics (prefer [`Store::members`],
    /// [`Store::add_member`] and [`Store::remove_member`] for membership).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    fn secret(&self) -> Arc<str> {
        self.secret.clone()
    }

    /// Routes for the member RPCs under `/raft/` (Raft itself, forwarded
    /// writes, read indexes, membership, status), authenticated with the
    /// member secret, to be mounted by the API server on its port.
    pub fn raft_router(self: &Arc<Self>) -> axum::Router {
        rpc::router(self)
    }

    /// Streams a backup of this member's applied state (every key and blob
    /// chunk, the last applied log id and membership, from one RocksDB
    /// snapshot) into `out`, ending with a SHA-256 checksum. It reflects
    /// this member's applied state: call [`Store::read_barrier`] first for
    /// one that includes every write acknowledged before the call.
    pub async fn backup(
        &self,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<BackupInfo, StoreError> {
        backup::write(self.shared.db.clone(), out).await
    }

    /// Offline: builds in `data_dir` (a [`StoreConfig::data_dir`] that is
    /// empty or missing) a store that, opened with [`Store::open`] as member
    /// `id` at `advertise`, is a single-voter cluster holding the backup's
    /// state at the backup's revision; new writes get higher revisions.
    /// Verifies the checksum before writing anything; on any error leaves
    /// `data_dir` as it was. Blocks: call it outside async code or in
    /// `spawn_blocking`.
    pub fn restore(
        backup: &Path,
        data_dir: &Path,
        id: NodeId,
        advertise: &str,
    ) -> Result<BackupInfo, StoreError> {
        backup::restore(backup, data_dir, id, advertise)
    }

    /// Offline: one key's value from the store in `data_dir` (a stopped
    /// member's [`StoreConfig::data_dir`], e.g. right after a restore).
    pub fn read_offline(data_dir: &Path, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        backup::read_offline(data_dir, key)
    }

    /// Stops Raft and waits until its tasks have let go of the database, so
    /// the data dir can be reopened once this `Store` is dropped.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.stopped.store(true, Ordering::Release);
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
        self.shared.db.sync_wal()
    }
}

fn stopped(e: openraft::error::Fatal<TypeConfig>) -> StoreError {
    StoreError::Stopped(e.to_string())
}
