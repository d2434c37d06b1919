//! The one RocksDB instance a member keeps, its column families, and the
//! byte encodings of keys and values.
//!
//! Log and state machine share one DB (and so one WAL): a synced log append
//! also makes every earlier unsynced state-machine write durable.

use std::path::Path;
use std::time::Instant;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StoreError;
use super::slow;

/// Raft log entries, keyed by big-endian index.
pub(crate) const CF_LOGS: &str = "logs";
/// Vote, last purged log id, committed log id.
pub(crate) const CF_RAFT: &str = "raft_meta";
/// The key space: key bytes → [`StoredValue`].
pub(crate) const CF_KV: &str = "kv";
/// Blob chunks, keyed by [`blob_chunk_key`].
pub(crate) const CF_BLOBS: &str = "blobs";
/// State-machine metadata: last applied log id, last membership.
pub(crate) const CF_SM: &str = "sm_meta";

const ALL_CFS: [&str; 5] = [CF_LOGS, CF_RAFT, CF_KV, CF_BLOBS, CF_SM];

/// Sorts after every key of `kv` (UTF-8 never contains 0xFF) and of `blobs`
/// (a 0xFFFF length prefix is followed by UTF-8): the end of a full `delete_range`.
pub(crate) const KEYSPACE_END: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF];

pub(crate) struct Db {
    inner: DB,
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let inner = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Db { inner })
    }

    /// Opens an existing database for reading only (no lock, no writes), so
    /// a stopped member's data can be inspected.
    pub(crate) fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        if !path.is_dir() {
            return Err(StoreError::Config(format!(
                "no store database at {}",
                path.display()
            )));
        }
        let inner = DB::open_cf_for_read_only(&Options::default(), path, ALL_CFS, false)?;
        Ok(Db { inner })
    }

    pub(crate) fn raw(&self) -> &DB {
        &self.inner
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        self.inner
            .cf_handle(name)
            .ok_or_else(|| StoreError::corrupt(format!("column family {name} is missing")))
    }

    /// Writes a batch; `sync` fsyncs the WAL before returning.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let started = Instant::now();
        self.inner.write_opt(batch, &wo)?;
        slow::note_io(if sync { "synced batch" } else { "batch" }, started);
        Ok(())
    }

    /// Makes every write so far durable.
    pub(crate) fn sync_wal(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        self.inner.flush_wal(true)?;
        slow::note_io("WAL sync", started);
        Ok(())
    }

    pub(crate) fn get_decoded<T: DeserializeOwned>(
        &self,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.inner.get_pinned_cf(self.cf(cf)?, key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// MessagePack with field names: compact for byte payloads (they are `bin`),
/// and tolerant of fields added later.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Codec(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Codec(e.to_string()))
}

/// Big-endian so RocksDB's byte order is index order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn index_from_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// `[len u16 BE][digest][offset u64 BE]`: the length prefix keeps one digest's
/// chunks from interleaving with a longer digest that starts the same way.
pub(crate) fn blob_prefix(digest: &str) -> Vec<u8> {
    let bytes = digest.as_bytes();
    // Digests are short ("sha256:" + 64 hex); clamp rather than panic on abuse.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + bytes.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
    key
}

pub(crate) fn blob_chunk_key(digest: &str, offset: u64) -> Vec<u8> {
    let mut key = blob_prefix(digest);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The chunk offset of a key that starts with `prefix`.
pub(crate) fn blob_chunk_offset(prefix: &[u8], key: &[u8]) -> Result<u64, StoreError> {
    let rest = key.get(prefix.len()..).unwrap_or_default();
    let bytes: [u8; 8] = rest
        .try_into()
        .map_err(|_| StoreError::corrupt("blob chunk key without an offset"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    KEYSPACE_END.to_vec()
}
