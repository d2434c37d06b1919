//! The store's public data types and the one openraft type-config declaration.
//!
//! Everything Raft-generic is named through the short aliases at the bottom, so
//! no `<TypeConfig as RaftTypeConfig>::…` soup leaks into the rest of the crate.

use serde::{Deserialize, Serialize};

/// A point in the store's history. Every transaction that succeeds gets the
/// next one, so a revision names exactly one write (several writes may share
/// a Raft entry; revisions are counted by the state machine, not the log).
pub type Revision = u64;

/// One write inside a [`Txn`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Deleting a missing key is a no-op (and produces no watch event).
    Delete { key: String },
    /// Component bytes travel through the log in chunks so every member holds them.
    /// Writing the same offset again replaces that chunk.
    PutBlobChunk {
        digest: String,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Removes every chunk of the blob; a missing blob is a no-op.
    DeleteBlob { digest: String },
}

/// A precondition of a [`Txn`], evaluated against the state just before the entry applies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Check {
    /// The key does not exist.
    Absent { key: String },
    /// The key's `mod_revision` equals `revision`. As in etcd, `revision: 0`
    /// matches a missing key, so "create only" can be written either way.
    ModRevision { key: String, revision: Revision },
}

/// All checks pass → all ops are applied atomically at one revision; else none is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Txn {
    pub checks: Vec<Check>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// Bytes of keys and values, plus a little per op: close to the encoded
    /// size without encoding.
    pub fn approximate_size(&self) -> usize {
        let checks: usize = self
            .checks
            .iter()
            .map(|c| match c {
                Check::Absent { key } | Check::ModRevision { key, .. } => key.len() + 16,
            })
            .sum();
        let ops: usize = self
            .ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value } => key.len() + value.len() + 16,
                Op::Delete { key } => key.len() + 8,
                Op::PutBlobChunk { digest, data, .. } => digest.len() + data.len() + 24,
                Op::DeleteBlob { digest } => digest.len() + 8,
            })
            .sum();
        checks + ops
    }
}

/// What one Raft entry carries: the transactions of one group commit,
/// applied in order, each with its own checks, its own outcome and (when it
/// succeeds) its own revision. Many writes share one entry and one fsync.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub txns: Vec<Txn>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} transaction(s)", self.txns.len())
    }
}

/// What a committed [`Txn`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    /// The revision the transaction wrote at when it succeeded; when a check
    /// failed, the store's revision at that point (nothing was written).
    pub revision: Revision,
    pub succeeded: bool,
    /// Index into `Txn::checks` of the first check that failed.
    pub failed_check: Option<usize>,
}

/// A key as read from the applied state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the put that created the key; kept across later puts.
    pub create_revision: Revision,
    /// Revision of the last put.
    pub mod_revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. For `Delete`, `kv` holds the value before deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: Revision,
    pub kind: EventKind,
    pub kv: KeyValue,
    /// What readers derive from the event, made once: every watcher shares
    /// one `Arc` of the event, so a thousand watchers decode it once.
    pub memo: Memo,
}

/// A value computed once per event by whoever reads it first (the registry
/// keeps the decoded object here). Ignored by comparisons and `Debug`.
#[derive(Clone, Default)]
pub struct Memo(std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl Memo {
    /// The memo of type `T`, made by `make` the first time; `None` if an
    /// other type was stored first.
    pub fn get_or_init<T: Send + Sync + 'static>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Option<std::sync::Arc<T>> {
        self.0
            .get_or_init(|| std::sync::Arc::new(make()))
            .clone()
            .downcast::<T>()
            .ok()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// What a member does in the cluster, as one member sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// The voter that currently leads.
    Leader,
    /// A voter that does not lead.
    Follower,
    /// Receives the log but does not vote (a member still catching up).
    Learner,
}

/// One member of the current membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    /// "host:port" where members reach it.
    pub address: String,
    pub role: MemberRole,
}

/// What [`Store::backup`](super::Store::backup) wrote or
/// [`Store::restore`](super::Store::restore) read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The revision (last applied log index) the backup reflects.
    pub revision: Revision,
    /// Size of the backup file.
    pub bytes: u64,
    /// SHA-256 (lowercase hex) of every byte of the file before the checksum,
    /// which is the file's last 64 bytes.
    pub checksum: String,
}

openraft::declare_raft_types!(
    /// The store's Raft type configuration: one entry carries a
    /// [`Proposal`] and answers with one outcome per transaction.
    pub TypeConfig:
        D = Proposal,
        R = Vec<TxnOutcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
/// Snapshots are files on disk (they carry every blob).
pub type SnapshotData = tokio::fs::File;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
pub type RpcError<E = openraft::errors::Infallible> = openraft::errors::RPCError<TypeConfig, E>;
