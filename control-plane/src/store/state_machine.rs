//! The replicated state machine on RocksDB (openraft's `RaftStateMachine`).
//!
//! Each apply batch becomes one RocksDB `WriteBatch` (keys, blob chunks, last
//! applied, last membership together), written without fsync: a lost tail is
//! re-applied from the log, whose synced writes also flush this WAL.
//! An entry carries a [`Proposal`] of many transactions; each one that
//! succeeds takes the next revision, a counter kept beside the applied log
//! id (`KEY_REVISION`), so writes that share an entry never share a revision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::WriteBatch;

use super::db::{self, Db, CF_BLOBS, CF_KV, CF_SM};
use super::error::StoreError;
use super::kv::{self, StoredRevisions, StoredValue, KEY_APPLIED, KEY_MEMBERSHIP, KEY_REVISION};
use super::snapshot::SnapshotDir;
use super::types::{
    Check, Entry, EventKind, LogId, Memo, Op, Revision, Snapshot, SnapshotData, SnapshotMeta,
    StoredMembership, Txn, TxnOutcome, TypeConfig, WatchEvent,
};
use super::watch::{self, SharedHub, WatchHub};

/// What the facade reads and the state machine writes.
pub(crate) struct Shared {
    pub db: Arc<Db>,
    /// The store's current revision: every applied write is at or below it.
    /// Waiters subscribe to it (read-your-writes on a follower).
    pub revision: tokio::sync::watch::Sender<Revision>,
    pub hub: SharedHub,
    pub snapshots: SnapshotDir,
    /// Serialises building and installing snapshots.
    snapshot_lock: Mutex<()>,
}

impl Shared {
    pub(crate) fn open(db: Arc<Db>, snapshots: SnapshotDir) -> Result<Arc<Self>, StoreError> {
        let revision = kv::current_revision(&db)?;
        Ok(Arc::new(Shared {
            db,
            revision: tokio::sync::watch::Sender::new(revision),
            hub: Arc::new(Mutex::new(WatchHub::new(revision))),
            snapshots,
            snapshot_lock: Mutex::new(()),
        }))
    }

    /// A panic elsewhere must not wedge the store: the guarded data stays valid.
    pub(crate) fn hub(&self) -> MutexGuard<'_, WatchHub> {
        watch::lock(&self.hub)
    }

    pub(crate) fn current_revision(&self) -> Revision {
        *self.revision.borrow()
    }

    fn snapshot_guard(&self) -> MutexGuard<'_, ()> {
        self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs blocking RocksDB/file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Stopped(format!("blocking task: {e}")))?
}

pub(crate) struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StateMachine { shared }
    }

    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let applied: Option<LogId> = self.shared.db.get_decoded(CF_SM, KEY_APPLIED)?;
        let membership: Option<StoredMembership> =
            self.shared.db.get_decoded(CF_SM, KEY_MEMBERSHIP)?;
        Ok((applied, membership.unwrap_or_default()))
    }

    /// One outcome list per entry (empty for blank and membership entries).
    fn apply_batch(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Vec<TxnOutcome>>, StoreError> {
        let db = &self.shared.db;
        let mut batch = Batch {
            db,
            write: WriteBatch::default(),
            overlay: HashMap::new(),
            events: Vec::new(),
            revision: self.shared.current_revision(),
        };
        let mut outcomes = Vec::new();
        let mut last: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Normal(proposal) => proposal
                    .txns
                    .into_iter()
                    .map(|txn| batch.apply_txn(txn))
                    .collect::<Result<Vec<_>, _>>()?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    Vec::new()
                }
                EntryPayload::Blank => Vec::new(),
            };
            outcomes.push(outcome);
            last = Some(entry.log_id);
        }
        let Some(last) = last else {
            return Ok(outcomes);
        };
        let sm = db.cf(CF_SM)?;
        batch
            .write
            .put_cf(sm, KEY_APPLIED, db::encode(&Some(last))?);
        batch
            .write
            .put_cf(sm, KEY_REVISION, db::encode(&batch.revision)?);
        if let Some(m) = &membership {
            batch.write.put_cf(sm, KEY_MEMBERSHIP, db::encode(m)?);
        }
        let Batch {
            write,
            events,
            revision,
            ..
        } = batch;
        db.write(write, false)?;

        // Publish under the hub lock so watchers registering now see no gap.
        let mut hub = self.shared.hub();
        self.shared.revision.send_replace(revision);
        hub.publish(events);
        Ok(outcomes)
    }
}

/// One apply batch: the pending writes, and an overlay so later entries in the
/// batch see the keys earlier ones wrote before any of it reaches RocksDB.
struct Batch<'a> {
    db: &'a Db,
    write: WriteBatch,
    overlay: HashMap<String, Option<StoredValue>>,
    events: Vec<WatchEvent>,
    /// The revision of the last transaction applied so far.
    revision: Revision,
}

impl Batch<'_> {
    fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        match self.overlay.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.db.get_decoded(CF_KV, key.as_bytes()),
        }
    }

    /// As `get`, without reading the value: checks and puts need only this.
    fn revisions(&self, key: &str) -> Result<Option<StoredRevisions>, StoreError> {
        match self.overlay.get(key) {
            Some(pending) => Ok(pending.as_ref().map(StoredValue::revisions)),
            None => self.db.get_decoded(CF_KV, key.as_bytes()),
        }
    }

    fn check(&self, check: &Check) -> Result<bool, StoreError> {
        Ok(match check {
            Check::Absent { key } => self.revisions(key)?.is_none(),
            Check::ModRevision { key, revision } => {
                self.revisions(key)?.map_or(0, |v| v.mod_revision) == *revision
            }
        })
    }

    /// A transaction whose checks hold takes the next revision; one whose
    /// check fails writes nothing and takes none.
    fn apply_txn(&mut self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        for (i, check) in txn.checks.iter().enumerate() {
            if !self.check(check)? {
                return Ok(TxnOutcome {
                    revision: self.revision,
                    succeeded: false,
                    failed_check: Some(i),
                });
            }
        }
        self.revision += 1;
        let revision = self.revision;
        for op in txn.ops {
            self.apply_op(revision, op)?;
        }
        Ok(TxnOutcome {
            revision,
            succeeded: true,
            failed_check: None,
        })
    }

    fn apply_op(&mut self, revision: Revision, op: Op) -> Result<(), StoreError> {
        match op {
            Op::Put { key, value } => {
                let create_revision = self
                    .revisions(&key)?
                    .map_or(revision, |v| v.create_revision);
                let stored = StoredValue {
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                self.write
                    .put_cf(self.db.cf(CF_KV)?, key.as_bytes(), db::encode(&stored)?);
                self.events.push(WatchEvent {
                    revision,
                    kind: EventKind::Put,
                    kv: stored.clone().into_kv(key.clone()),
                    memo: Memo::default(),
                });
                self.overlay.insert(key, Some(stored));
            }
            Op::Delete { key } => {
                if let Some(prev) = self.get(&key)? {
                    self.write.delete_cf(self.db.cf(CF_KV)?, key.as_bytes());
                    self.events.push(WatchEvent {
                        revision,
                        kind: EventKind::Delete,
                        kv: prev.into_kv(key.clone()),
                        memo: Memo::default(),
                    });
                    self.overlay.insert(key, None);
                }
            }
            Op::PutBlobChunk {
                digest,
                offset,
                data,
            } => {
                self.write.put_cf(
                    self.db.cf(CF_BLOBS)?,
                    db::blob_chunk_key(&digest, offset),
                    data,
                );
            }
            Op::DeleteBlob { digest } => {
                let prefix = db::blob_prefix(&digest);
                let end = db::prefix_end(&prefix);
                self.write
                    .delete_range_cf(self.db.cf(CF_BLOBS)?, prefix, end);
            }
        }
        Ok(())
    }
}

/// Entries applied in one RocksDB batch at most, so a long replay after a
/// restart does not gather the whole log in memory first.
const APPLY_CHUNK: usize = 512;

/// openraft sees storage failures as I/O errors.
fn io(e: StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        StateMachine::applied_state(self).map_err(io)
    }

    /// Writers are answered only after their entry's batch is written and its
    /// events published, so a reply never runs ahead of a read or a watch.
    async fn apply<S>(&mut self, entries: S) -> Result<(), std::io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>> + Unpin + OptionalSend,
    {
        let mut chunks = entries.ready_chunks(APPLY_CHUNK);
        while let Some(chunk) = chunks.next().await {
            let mut batch = Vec::with_capacity(chunk.len());
            let mut responders = Vec::with_capacity(chunk.len());
            for item in chunk {
                let (entry, responder) = item?;
                batch.push(entry);
                responders.push(responder);
            }
            let outcomes = self.apply_batch(batch).map_err(io)?;
            for (responder, outcome) in responders.into_iter().zip(outcomes) {
                if let Some(responder) = responder {
                    responder.send(outcome);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), std::io::Error> {
        let shared = self.shared.clone();
        let owned_meta = meta.clone();
        let file = snapshot.into_std().await;
        blocking(move || {
            let _guard = shared.snapshot_guard();
            let revision = shared.snapshots.install(&shared.db, &owned_meta, file)?;
            // Close every watcher: no event stream describes a wholesale replacement.
            let mut hub = shared.hub();
            shared.revision.send_replace(revision);
            hub.reset(revision);
            Ok(())
        })
        .await
        .map_err(io)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, std::io::Error> {
        let current = self.shared.snapshots.current().map_err(io)?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        }))
    }
}

impl StateMachine {
    /// A file to receive a snapshot from the leader into.
    pub(crate) fn scratch_file(shared: &Shared) -> Result<tokio::fs::File, StoreError> {
        Ok(tokio::fs::File::from_std(shared.snapshots.scratch()?))
    }
}

pub(crate) struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let shared = self.shared.clone();
        let (meta, file) = blocking(move || {
            let _guard = shared.snapshot_guard();
            shared.snapshots.build(&shared.db)
        })
        .await
        .map_err(io)?;
        Ok(Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        })
    }
}
