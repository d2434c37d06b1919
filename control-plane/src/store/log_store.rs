//! The Raft log and vote on RocksDB (openraft's `RaftLogStorage`).
//!
//! Every write that Raft's safety depends on (entries, vote, truncation,
//! purge) is synced before it is reported done: a member must never forget
//! what it acknowledged.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::db::{self, Db, CF_LOGS, CF_RAFT};
use super::error::StoreError;
use super::types::{Entry, LogId, TypeConfig, Vote};

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
    if vote.is_some_and(|v| v.leader_id.term != 0) {
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

/// openraft sees storage failures as I/O errors.
fn io(e: StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        self.entries(start_of(&range), range.end_bound().cloned())
            .map_err(io)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        self.db.get_decoded(CF_RAFT, KEY_VOTE).map_err(io)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let last_purged: Option<LogId> = self.db.get_decoded(CF_RAFT, KEY_PURGED).map_err(io)?;
        Ok(LogState {
            last_purged_log_id: last_purged.clone(),
            last_log_id: last_in_log(&self.db).map_err(io)?.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.put_meta(KEY_VOTE, vote, true).map_err(io)
    }

    /// Saved without fsync: it only lets a restarted member re-apply committed
    /// entries sooner; losing it is harmless.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.put_meta(KEY_COMMITTED, &committed, false).map_err(io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        let committed: Option<Option<LogId>> =
            self.db.get_decoded(CF_RAFT, KEY_COMMITTED).map_err(io)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Written now (openraft reads them at once to replicate), then the WAL
        // is synced on a blocking thread and only then does the callback say
        // they are durable: the leader sends entries to followers while its
        // own fsync runs, and counts itself towards the quorum only after it.
        // The fsync never holds an async worker, where heartbeats run.
        if let Err(e) = self.append_unsynced(entries) {
            let message = e.to_string();
            callback.io_completed(Err(std::io::Error::other(message.clone())));
            return Err(std::io::Error::other(message));
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let synced = db
                .sync_wal()
                .map_err(|e| std::io::Error::other(e.to_string()));
            callback.io_completed(synced);
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), std::io::Error> {
        let from = last.map_or(0, |l| l.index.saturating_add(1));
        self.delete_range(from, u64::MAX, None).map_err(io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let to = log_id.index.saturating_add(1);
        self.delete_range(0, to, Some(&log_id)).map_err(io)
    }
}
