//! The store's error type: what callers can act on gets its own variant,
//! everything else carries a message.

use super::types::{NodeId, Revision};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `since` is older than the retained event history; relist, then watch from
    /// the list's revision. `oldest` is the smallest `since` still accepted.
    #[error("revision is compacted: the oldest revision still watchable is {oldest}")]
    Compacted { oldest: Revision },
    /// Writes and linearizable reads go to the leader (if one is known).
    #[error("not the leader (leader: {})", leader.map_or("unknown".into(), |l| l.to_string()))]
    NotLeader { leader: Option<NodeId> },
    /// A leader did not appear or an operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The Raft node has stopped (shutdown, or a fatal storage error).
    #[error("raft stopped: {0}")]
    Stopped(String),
    #[error("raft: {0}")]
    Raft(String),
    /// A valid request the store will not carry out (removing the last voter,
    /// re-using a member id at another address).
    #[error("refused: {0}")]
    Refused(String),
    /// A transaction over the store's per-entry byte limit: it was not proposed.
    #[error("{0}")]
    TooLarge(String),
    #[error("invalid store config: {0}")]
    Config(String),
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that do not encode or decode as MessagePack.
    #[error("codec: {0}")]
    Codec(String),
    /// Stored or received data that breaks an invariant (a blob with a gap,
    /// a snapshot whose header does not match its metadata, a missing column family).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(what.to_string())
    }
}
