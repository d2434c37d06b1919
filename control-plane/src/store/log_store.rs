//! The Raft log and vote on RocksDB (openraft's `RaftLogStorage`).
//!
//! Every write that Raft's safety depends on (entries, vote, truncation,
//! purge) is synced before it is reported done: a member must never forget
//! what it acknowledged.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::db::{self, Db, CF_LOGS, CF_RAFT};
use super::error::StoreError;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Cheap to clone: the clone is the log reader handed to replication tasks.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Db>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        LogStore { db }
    }

    fn entries(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StoreError> {
        let cf = self.db.cf(CF_LOGS)?;
        let from = db::index_key(start);
        let mut out = Vec::new();
        for item in self
            .db
            .raw()
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item?;
            let index = db::index_from_key(&key)?;
            let in_range = match end {
                Bound::Included(e) => index <= e,
                Bound::Excluded(e) => index < e,
                Bound::Unbounded => true,
            };
            if !in_range {
                break;
            }
            out.push(db::decode(&value)?);
        }
        Ok(out)
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_RAFT)?, key, db::encode(value)?);
        self.db.write(batch, sync)
    }

    /// Writes the entries without waiting for the disk: readable at once,
    /// durable once the WAL is synced.
    fn append_unsynced(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let cf = self.db.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, db::index_key(entry.log_id.index), db::encode(&entry)?);
        }
        self.db.write(batch, false)
    }

    /// Deletes `[from, to)` from the log, optionally recording the purge point
    /// in the same synced batch.
    fn delete_range(&self, from: u64, to: u64, purged: Option<&LogId>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(CF_LOGS)?, db::index_key(from), db::index_key(to));
        if let Some(purged) = purged {
            batch.put_cf(self.db.cf(CF_RAFT)?, KEY_PURGED, db::encode(purged)?);
        }
        self.db.write(batch, true)
    }
}

/// The id of the last entry in the log, or of the purge point when the log
/// is empty: what openraft compares when it grants a vote.
pub(crate) fn last_log_id(db: &Db) -> Result<Option<LogId>, StoreError> {
    let purged: Option<LogId> = db.get_decoded(CF_RAFT, KEY_PURGED)?;
    Ok(last_in_log(db)?.or(purged))
}

fn last_in_log(db: &Db) -> Result<Option<LogId>, StoreError> {
    let cf = db.cf(CF_LOGS)?;
    match db.raw().iterator_cf(cf, IteratorMode::End).next() {
        Some(item) => {
            let (_, value) = item?;
            let entry: Entry = db::decode(&value)?;
            Ok(Some(entry.log_id))
        }
        None => Ok(None),
    }
}

/// Whether the database holds any Raft state: a vote, a log entry, a purge
/// point or an applied entry (a restored store has no entries, only the rest).
pub(crate) fn holds_state(db: &Db) -> Result<bool, StoreError> {
    let vote: Option<Vote> = db.get_decoded(CF_RAFT, KEY_VOTE)?;
    if vote.is_some_and(|v| v != Vote::default()) {
        return Ok(true);
    }
    let purged: Option<LogId> = db.get_decoded(CF_RAFT, KEY_PURGED)?;
    if purged.is_some() {
        return Ok(true);
    }
    let cf = db.cf(CF_LOGS)?;
    Ok(db
        .raw()
        .iterator_cf(cf, IteratorMode::Start)
        .next()
        .is_some())
}

/// The log side of a restored store: an empty log purged up to `last` (which
/// is also committed), and `vote`. Added to the caller's batch.
pub(crate) fn restored_meta(
    db: &Db,
    batch: &mut WriteBatch,
    last: &LogId,
    vote: &Vote,
) -> Result<(), StoreError> {
    let cf = db.cf(CF_RAFT)?;
    batch.put_cf(cf, KEY_VOTE, db::encode(vote)?);
    batch.put_cf(cf, KEY_PURGED, db::encode(last)?);
    batch.put_cf(cf, KEY_COMMITTED, db::encode(&Some(*last))?);
    Ok(())
}

fn start_of(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(start_of(&range), range.end_bound().cloned())
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = (|| {
            let last_purged: Option<LogId> = self.db.get_decoded(CF_RAFT, KEY_PURGED)?;
            Ok::<_, StoreError>(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last_in_log(&self.db)?.or(last_purged),
            })
        })();
        state.map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db
            .get_decoded(CF_RAFT, KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Saved without fsync: it only lets a restarted member re-apply committed
    /// entries sooner; losing it is harmless.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(KEY_COMMITTED, &committed, false)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Result<Option<Option<LogId>>, _> =
            self.db.get_decoded(CF_RAFT, KEY_COMMITTED);
        committed
            .map(Option::flatten)
            .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Written now (openraft may read them at once), then the WAL is synced
        // on a blocking thread and only then does the callback say they are
        // durable: the fsync never holds an async worker, where heartbeats and
        // requests run.
        if let Err(e) = self.append_unsynced(entries) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(StorageIOError::write_logs(&e).into());
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let synced = db
                .sync_wal()
                .map_err(|e| std::io::Error::other(e.to_string()));
            callback.log_io_completed(synced);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_range(log_id.index, u64::MAX, None)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let to = log_id.index.saturating_add(1);
        self.delete_range(0, to, Some(&log_id))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
