//! Backups of a live member and offline restores from them.
//!
//! A backup file is `MAGIC`, then a snapshot stream (the format of
//! `snapshot.rs`: header with the last applied log id and membership, every
//! key and blob chunk, an `End` record with the count) taken from one RocksDB
//! snapshot, then 64 lowercase hex characters: the SHA-256 of every byte
//! before them. It is produced and consumed as a stream, never held in memory.
//!
//! A restore verifies the checksum before it creates anything, then builds a
//! store that is a single-voter cluster of the new member and keeps the
//! backup's revisions: an empty log purged up to the backup's last log id
//! (also its applied and committed point), a single-voter membership, a vote
//! in the backup's term, and a current snapshot so later members can join by
//! snapshot. `Raft::initialize` cannot do this: it would restart indexes at 1.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use openraft::Membership;
use rocksdb::WriteBatch;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::db::{self, Db, CF_BLOBS, CF_KV, CF_SM};
use super::error::StoreError;
use super::kv::{StoredValue, KEY_APPLIED, KEY_MEMBERSHIP, KEY_REVISION};
use super::log_store;
use super::snapshot::{self, RecordIn, SnapshotDir, StreamReader};
use super::types::{BackupInfo, Node, NodeId, SnapshotMeta, StoredMembership, Vote};

/// Identifies a reef backup (format 1).
const MAGIC: &[u8; 8] = b"reefbak1";
/// Hex SHA-256 trailer.
const TRAILER: u64 = 64;
/// Bytes handed from the RocksDB reader thread to the async writer at a time.
const CHUNK: usize = 256 * 1024;
/// Restore writes the key space in batches of about this many bytes.
const RESTORE_BATCH: usize = 32 * 1024 * 1024;

/// Streams a backup of `db`'s applied state into `out`.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    db: Arc<Db>,
    out: &mut W,
) -> Result<BackupInfo, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let producer = tokio::task::spawn_blocking(move || {
        let mut w = BufWriter::with_capacity(CHUNK, ChannelWriter { tx });
        w.write_all(MAGIC)?;
        let snap = db.raw().snapshot();
        let meta = snapshot::meta_at(&db, &snap)?;
        if meta.last_log_id.is_none() {
            return Err(StoreError::Refused(
                "this member has applied nothing yet: nothing to back up".into(),
            ));
        }
        let revision = snapshot::write_stream(&db, &snap, &meta, &mut w)?;
        w.flush()?;
        Ok(revision)
    });

    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut write_error = None;
    while let Some(chunk) = rx.recv().await {
        hasher.update(&chunk);
        if let Err(e) = out.write_all(&chunk).await {
            write_error = Some(e);
            break;
        }
        bytes += chunk.len() as u64;
    }
    // Unblocks the producer if we stopped reading early.
    drop(rx);
    let produced = producer
        .await
        .map_err(|e| StoreError::Stopped(format!("backup task: {e}")))?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let revision = produced?;
    let checksum = hex::encode(hasher.finalize());
    out.write_all(checksum.as_bytes()).await?;
    out.flush().await?;
    Ok(BackupInfo {
        revision,
        bytes: bytes + TRAILER,
        checksum,
    })
}

/// Sends what the blocking producer writes to the async side.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "backup writer went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the trailer against the SHA-256 of the rest; returns the checksum
/// and the length of the part before the trailer.
fn verify(file: &mut File) -> Result<(String, u64), StoreError> {
    let len = file.metadata()?.len();
    if len < MAGIC.len() as u64 + TRAILER {
        return Err(StoreError::corrupt(format!(
            "backup file of {len} bytes is too short to be a backup"
        )));
    }
    let body = len - TRAILER;
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = HashWriter(Sha256::new());
    let copied = io::copy(&mut (&mut *file).take(body), &mut hasher)?;
    if copied != body {
        return Err(StoreError::corrupt("backup file changed while being read"));
    }
    let mut trailer = [0u8; TRAILER as usize];
    file.read_exact(&mut trailer)?;
    let computed = hex::encode(hasher.0.finalize());
    if trailer != computed.as_bytes() {
        return Err(StoreError::corrupt(format!(
            "backup checksum mismatch (file says {}, content hashes to {computed}): \
             the file is corrupt or truncated",
            String::from_utf8_lossy(&trailer)
        )));
    }
    Ok((computed, body))
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Builds a restored store in `data_dir` (which must be empty or missing).
pub(crate) fn restore(
    backup: &Path,
    data_dir: &Path,
    id: NodeId,
    advertise: &str,
) -> Result<BackupInfo, StoreError> {
    if advertise.is_empty() {
        return Err(StoreError::Config("the advertise address is empty".into()));
    }
    let existed = match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::Config(format!(
                    "{} is not empty: restore builds a new store in an empty directory",
                    data_dir.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };

    let mut file = File::open(backup)?;
    let (checksum, body) = verify(&mut file)?;
    let bytes = body + TRAILER;

    file.seek(SeekFrom::Start(0))?;
    let mut src = BufReader::new(file.take(body));
    let mut magic = [0u8; 8];
    src.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(StoreError::corrupt("not a reef backup (bad magic)"));
    }
    let (stream, header) = StreamReader::new(src)?;
    let last = header
        .meta
        .last_log_id
        .ok_or_else(|| StoreError::corrupt("the backup has no applied log id"))?;

    let revision = header.revision();
    let built = build(data_dir, stream, last, revision, id, advertise);
    if let Err(e) = built {
        // Leave the directory as we found it.
        let cleanup = if existed {
            fs::remove_dir_all(data_dir.join("db"))
                .or_else(ignore_missing)
                .and_then(|()| fs::remove_dir_all(data_dir.join("snapshots")))
                .or_else(ignore_missing)
        } else {
            fs::remove_dir_all(data_dir).or_else(ignore_missing)
        };
        if let Err(c) = cleanup {
            tracing::warn!("cleaning up after a failed restore: {c}");
        }
        return Err(e);
    }
    Ok(BackupInfo {
        revision,
        bytes,
        checksum,
    })
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn build<R: Read>(
    data_dir: &Path,
    mut stream: StreamReader<R>,
    last: super::types::LogId,
    revision: super::types::Revision,
    id: NodeId,
    advertise: &str,
) -> Result<(), StoreError> {
    fs::create_dir_all(data_dir)?;
    let db = Db::open(&data_dir.join("db"))?;
    let snapshots = SnapshotDir::open(data_dir.join("snapshots"))?;

    let membership = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(
            id,
            Node {
                addr: advertise.to_owned(),
            },
        )]),
    )
    .map_err(|e| StoreError::Config(format!("a membership of member {id}: {e}")))?;
    let membership = StoredMembership::new(Some(last), membership);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership.clone(),
    };

    // The current snapshot, written alongside the key space: joining members
    // need one, since the log before `last` is gone.
    let tmp = snapshots.tmp_path("restore");
    let mut snap = BufWriter::new(File::create(&tmp)?);
    snapshot::write_header(&mut snap, &meta, revision)?;
    let (kv, blobs) = (db.cf(CF_KV)?, db.cf(CF_BLOBS)?);
    let mut batch = WriteBatch::default();
    while let Some(record) = stream.next_record()? {
        snapshot::copy_record(&mut snap, &record)?;
        match record {
            RecordIn::Kv { key, value } => {
                // Refuse a record that would make every later read fail.
                db::decode::<StoredValue>(&value)?;
                batch.put_cf(kv, key, value);
            }
            RecordIn::Blob { key, value } => batch.put_cf(blobs, key, value),
            RecordIn::End { .. } => {}
        }
        if batch.size_in_bytes() > RESTORE_BATCH {
            db.write(std::mem::take(&mut batch), false)?;
        }
    }
    let records = stream.records();
    stream.finish()?;
    snapshot::copy_record(&mut snap, &RecordIn::End { records })?;
    let snap = snap.into_inner().map_err(|e| e.into_error())?;
    snap.sync_all()?;
    drop(snap);
    snapshots.publish(&tmp, &meta)?;

    // Raft state last, synced: until it is written the directory is no store.
    let sm = db.cf(CF_SM)?;
    batch.put_cf(sm, KEY_APPLIED, db::encode(&Some(last))?);
    batch.put_cf(sm, KEY_MEMBERSHIP, db::encode(&membership)?);
    batch.put_cf(sm, KEY_REVISION, db::encode(&revision)?);
    // A vote in the backup's term, not yet granted to anyone who leads: the
    // member elects itself (term + 1) as the only voter when it starts.
    let vote = Vote::new(last.leader_id.term, id);
    log_store::restored_meta(&db, &mut batch, &last, &vote)?;
    db.write(batch, true)?;
    db.raw().flush()?;
    Ok(())
}

/// One key's value from a stopped member's data dir.
pub(crate) fn read_offline(data_dir: &Path, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let db = Db::open_read_only(&data_dir.join("db"))?;
    let stored: Option<StoredValue> = db.get_decoded(CF_KV, key.as_bytes())?;
    Ok(stored.map(|s| s.value))
}
