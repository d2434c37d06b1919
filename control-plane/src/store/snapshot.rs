//! Snapshot files: building one from a RocksDB snapshot, installing a received
//! one, and keeping the newest as `current.snap` in the snapshot directory.
//!
//! A file is a stream of MessagePack values: a [`Header`] with openraft's
//! metadata, one record per key and per blob chunk (raw stored bytes, so the
//! format never re-encodes values), and an `End` record with the count, so a
//! truncated file is refused. Streaming keeps memory flat however many blobs
//! the store holds; all functions here block and run on a blocking thread.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{IteratorMode, ReadOptions, Snapshot, WriteBatch};
use serde::{Deserialize, Serialize};

use super::db::{self, Db, CF_BLOBS, CF_KV, CF_SM, KEYSPACE_END};
use super::error::StoreError;
use super::kv::{self, KEY_APPLIED, KEY_MEMBERSHIP, KEY_REVISION};
use super::types::{LogId, Revision, SnapshotMeta, StoredMembership};

pub(crate) const FORMAT: u32 = 1;
const CURRENT: &str = "current.snap";

#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub format: u32,
    pub meta: SnapshotMeta,
    /// The store's revision at the snapshot. Absent from files written
    /// before revisions were counted apart from the log.
    #[serde(default)]
    pub revision: Option<Revision>,
}

impl Header {
    pub(crate) fn revision(&self) -> Revision {
        self.revision
            .or(self.meta.last_log_id.as_ref().map(|l| l.index))
            .unwrap_or(0)
    }
}

#[derive(Serialize)]
enum RecordOut<'a> {
    Kv {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    },
    Blob {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    },
    End {
        records: u64,
    },
}

#[derive(Deserialize)]
pub(crate) enum RecordIn {
    Kv {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Blob {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    End {
        records: u64,
    },
}

fn codec(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

fn write_value<T: Serialize>(w: &mut impl Write, value: &T) -> Result<(), StoreError> {
    rmp_serde::encode::write_named(w, value).map_err(codec)
}

type Reader<R> = rmp_serde::Deserializer<rmp_serde::decode::ReadReader<R>>;

fn read_value<T: for<'de> Deserialize<'de>, R: Read>(r: &mut Reader<R>) -> Result<T, StoreError> {
    T::deserialize(r).map_err(codec)
}

/// Writes a record read from one stream into another.
pub(crate) fn copy_record(out: &mut impl Write, record: &RecordIn) -> Result<(), StoreError> {
    match record {
        RecordIn::Kv { key, value } => write_value(out, &RecordOut::Kv { key, value }),
        RecordIn::Blob { key, value } => write_value(out, &RecordOut::Blob { key, value }),
        RecordIn::End { records } => write_value(out, &RecordOut::End { records: *records }),
    }
}

pub(crate) fn write_header(
    out: &mut impl Write,
    meta: &SnapshotMeta,
    revision: Revision,
) -> Result<(), StoreError> {
    write_value(
        out,
        &Header {
            format: FORMAT,
            meta: meta.clone(),
            revision: Some(revision),
        },
    )
}

/// Reads a snapshot stream: the header first, then records until `End`,
/// whose count is checked.
pub(crate) struct StreamReader<R: Read> {
    reader: Reader<R>,
    records: u64,
    done: bool,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header.
    pub(crate) fn new(src: R) -> Result<(Self, Header), StoreError> {
        let mut reader = rmp_serde::Deserializer::new(src);
        let header: Header = read_value(&mut reader)?;
        if header.format != FORMAT {
            return Err(StoreError::corrupt(format!(
                "snapshot format {}",
                header.format
            )));
        }
        let stream = StreamReader {
            reader,
            records: 0,
            done: false,
        };
        Ok((stream, header))
    }

    /// The next key or blob record; `None` once `End` was read and matched.
    pub(crate) fn next_record(&mut self) -> Result<Option<RecordIn>, StoreError> {
        if self.done {
            return Ok(None);
        }
        match read_value::<RecordIn, R>(&mut self.reader)? {
            RecordIn::End { records } => {
                if records != self.records {
                    return Err(StoreError::corrupt(format!(
                        "snapshot has {} records, its end says {records}",
                        self.records
                    )));
                }
                self.done = true;
                Ok(None)
            }
            record => {
                self.records += 1;
                Ok(Some(record))
            }
        }
    }

    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Checks that nothing follows the `End` record.
    pub(crate) fn finish(self) -> Result<(), StoreError> {
        if !self.done {
            return Err(StoreError::corrupt("snapshot stream ends early"));
        }
        let mut rest = self.reader.into_inner();
        let mut byte = [0u8; 1];
        if rest.read(&mut byte)? != 0 {
            return Err(StoreError::corrupt("data after the end of the snapshot"));
        }
        Ok(())
    }
}

/// The snapshot metadata of the state machine as of `snap`.
pub(crate) fn meta_at(db: &Db, snap: &Snapshot<'_>) -> Result<SnapshotMeta, StoreError> {
    let applied: Option<LogId> = match snap.get_cf(db.cf(CF_SM)?, KEY_APPLIED)? {
        Some(bytes) => db::decode(&bytes)?,
        None => None,
    };
    let membership: StoredMembership = match snap.get_cf(db.cf(CF_SM)?, KEY_MEMBERSHIP)? {
        Some(bytes) => db::decode(&bytes)?,
        None => StoredMembership::default(),
    };
    Ok(SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
    })
}

/// Writes a whole snapshot stream (header, every key and blob chunk as of
/// `snap`, `End`) and returns the revision it reflects.
pub(crate) fn write_stream(
    db: &Db,
    snap: &Snapshot<'_>,
    meta: &SnapshotMeta,
    out: &mut impl Write,
) -> Result<Revision, StoreError> {
    let sm = db.cf(CF_SM)?;
    let revision = kv::stored_revision(|key| snap.get_cf(sm, key))?;
    write_header(out, meta, revision)?;
    let mut records = 0u64;
    for cf_name in [CF_KV, CF_BLOBS] {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(snap);
        for item in db
            .raw()
            .iterator_cf_opt(db.cf(cf_name)?, opts, IteratorMode::Start)
        {
            let (key, value) = item?;
            let record = if cf_name == CF_KV {
                RecordOut::Kv {
                    key: &key,
                    value: &value,
                }
            } else {
                RecordOut::Blob {
                    key: &key,
                    value: &value,
                }
            };
            write_value(out, &record)?;
            records += 1;
        }
    }
    write_value(out, &RecordOut::End { records })?;
    Ok(revision)
}

/// The directory's snapshot files; one instance per member.
pub(crate) struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// Creates the directory and removes half-written files a crash left behind.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        Ok(SnapshotDir { dir })
    }

    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.dir.join(format!("{what}-{nanos}.tmp"))
    }

    /// An unnamed scratch file for an incoming snapshot: unlinked at once, so
    /// an abandoned transfer leaves nothing behind.
    pub(crate) fn scratch(&self) -> Result<File, StoreError> {
        let path = self.tmp_path("recv");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        fs::remove_file(&path)?;
        Ok(file)
    }

    /// The newest snapshot, positioned at its start.
    pub(crate) fn current(&self) -> Result<Option<(SnapshotMeta, File)>, StoreError> {
        let path = self.dir.join(CURRENT);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut reader = rmp_serde::Deserializer::new(BufReader::new(file));
        let header: Header = read_value(&mut reader)?;
        let mut file = reader.into_inner().into_inner();
        file.seek(SeekFrom::Start(0))?;
        Ok(Some((header.meta, file)))
    }

    /// Makes a finished, fsynced file `current.snap` unless a newer one is already there.
    pub(crate) fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> Result<(), StoreError> {
        // An unreadable current file is simply replaced.
        if let Ok(Some((current, _))) = self.current() {
            if current.last_log_id > meta.last_log_id {
                fs::remove_file(tmp)?;
                return Ok(());
            }
        }
        fs::rename(tmp, self.dir.join(CURRENT))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Writes the state machine, as of one RocksDB snapshot, to a new current
    /// snapshot and returns its metadata and the file (open for reading, valid
    /// even if a newer snapshot has since taken its place).
    pub(crate) fn build(&self, db: &Db) -> Result<(SnapshotMeta, File), StoreError> {
        let snap = db.raw().snapshot();
        let meta = meta_at(db, &snap)?;
        let tmp = self.tmp_path("build");
        let mut out = BufWriter::new(File::create(&tmp)?);
        write_stream(db, &snap, &meta, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let reader = File::open(&tmp)?;
        self.publish(&tmp, &meta)?;
        Ok((meta, reader))
    }

    /// Replaces the state machine with the snapshot in `src` (which must carry
    /// `meta`) in one synced batch, and keeps a copy as the current snapshot.
    /// Returns the revision it installed.
    pub(crate) fn install(
        &self,
        db: &Db,
        meta: &SnapshotMeta,
        mut src: File,
    ) -> Result<Revision, StoreError> {
        src.seek(SeekFrom::Start(0))?;
        let (mut stream, header) = StreamReader::new(BufReader::new(src))?;
        if header.meta != *meta {
            return Err(StoreError::corrupt(format!(
                "snapshot data is of {:?}, metadata says {:?}",
                header.meta.last_log_id, meta.last_log_id
            )));
        }

        let (kv, blobs, sm) = (db.cf(CF_KV)?, db.cf(CF_BLOBS)?, db.cf(CF_SM)?);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(kv, &[][..], KEYSPACE_END);
        batch.delete_range_cf(blobs, &[][..], KEYSPACE_END);

        // Copy the stream to our own file while loading it: the received data
        // lives in an unnamed scratch file that cannot be renamed into place.
        let tmp = self.tmp_path("install");
        let mut copy = BufWriter::new(File::create(&tmp)?);
        write_value(&mut copy, &header)?;
        while let Some(record) = stream.next_record()? {
            copy_record(&mut copy, &record)?;
            match record {
                RecordIn::Kv { key, value } => batch.put_cf(kv, key, value),
                RecordIn::Blob { key, value } => batch.put_cf(blobs, key, value),
                RecordIn::End { .. } => {}
            }
        }
        write_value(
            &mut copy,
            &RecordOut::End {
                records: stream.records(),
            },
        )?;
        let file = copy.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        self.publish(&tmp, meta)?;

        let revision = header.revision();
        batch.put_cf(sm, KEY_APPLIED, db::encode(&meta.last_log_id)?);
        batch.put_cf(sm, KEY_MEMBERSHIP, db::encode(&meta.last_membership)?);
        batch.put_cf(sm, KEY_REVISION, db::encode(&revision)?);
        // Synced: once installed, Raft may purge the log this state replaces.
        db.write(batch, true)?;
        Ok(revision)
    }
}
