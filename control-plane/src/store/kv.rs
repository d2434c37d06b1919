//! Reads of the applied key space and blobs, and the on-disk value format.

use rocksdb::{DBAccess, DBIteratorWithThreadMode, Direction, IteratorMode, ReadOptions};
use serde::{Deserialize, Serialize};

use super::db::{self, Db, CF_BLOBS, CF_KV, CF_SM};
use super::error::StoreError;
use super::types::{KeyValue, LogId, Revision};

/// The value of one key in `CF_KV`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredValue {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A stored value's revisions without its bytes: what a transaction's
/// checks and a put's create revision need, decoded without copying the
/// object (the value is skipped in place).
#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) struct StoredRevisions {
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl StoredValue {
    pub(crate) fn revisions(&self) -> StoredRevisions {
        StoredRevisions {
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }

    pub(crate) fn into_kv(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// Key of the last applied log id in `CF_SM`.
pub(crate) const KEY_APPLIED: &[u8] = b"last_applied";
/// Key of the last applied membership in `CF_SM`.
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"last_membership";
/// Key of the store's current revision in `CF_SM`, written with every apply.
pub(crate) const KEY_REVISION: &[u8] = b"revision";

/// The current revision as stored in `CF_SM`, read through `get` (the live
/// database or one RocksDB snapshot of it). A data dir written before
/// revisions were counted apart from the log has none: its revision is its
/// last applied log index, as it was then.
pub(crate) fn stored_revision(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> Result<Revision, StoreError> {
    if let Some(bytes) = get(KEY_REVISION)? {
        return db::decode(&bytes);
    }
    let applied: Option<LogId> = match get(KEY_APPLIED)? {
        Some(bytes) => db::decode(&bytes)?,
        None => None,
    };
    Ok(applied.map_or(0, |l| l.index))
}

/// The current revision of the live database.
pub(crate) fn current_revision(db: &Db) -> Result<Revision, StoreError> {
    let sm = db.cf(CF_SM)?;
    stored_revision(|key| db.raw().get_cf(sm, key))
}

pub(crate) fn get(db: &Db, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let stored: Option<StoredValue> = db.get_decoded(CF_KV, key.as_bytes())?;
    Ok(stored.map(|s| s.into_kv(key.to_owned())))
}

/// Keys under `prefix`, sorted, and the applied revision they reflect: both
/// from one RocksDB snapshot, so the pair is consistent.
pub(crate) fn range(db: &Db, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let snap = db.raw().snapshot();
    let sm = db.cf(CF_SM)?;
    let revision = stored_revision(|key| snap.get_cf(sm, key))?;
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&snap);
    let iter = db.raw().iterator_cf_opt(
        db.cf(CF_KV)?,
        opts,
        IteratorMode::From(prefix.as_bytes(), Direction::Forward),
    );
    let mut out = Vec::new();
    for item in iter {
        let (key, value) = item?;
        if !key.starts_with(prefix.as_bytes()) {
            break;
        }
        let key = String::from_utf8(key.into_vec()).map_err(StoreError::corrupt)?;
        let stored: StoredValue = db::decode(&value)?;
        out.push(stored.into_kv(key));
    }
    Ok((out, revision))
}

/// Iterates `(offset, data)` of one blob's chunks in offset order.
pub(crate) fn blob_chunks<'a, D: DBAccess>(
    iter: DBIteratorWithThreadMode<'a, D>,
    prefix: &'a [u8],
) -> impl Iterator<Item = Result<(u64, Box<[u8]>), StoreError>> + 'a {
    iter.map_while(move |item| match item {
        Err(e) => Some(Err(e.into())),
        Ok((key, value)) if key.starts_with(prefix) => {
            Some(db::blob_chunk_offset(prefix, &key).map(|off| (off, value)))
        }
        Ok(_) => None,
    })
}

/// The blob's bytes; chunks must be contiguous from offset 0.
pub(crate) fn read_blob(db: &Db, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let prefix = db::blob_prefix(digest);
    let iter = db.raw().iterator_cf(
        db.cf(CF_BLOBS)?,
        IteratorMode::From(&prefix, Direction::Forward),
    );
    let mut out: Option<Vec<u8>> = None;
    for chunk in blob_chunks(iter, &prefix) {
        let (offset, data) = chunk?;
        let buf = out.get_or_insert_with(Vec::new);
        if offset != buf.len() as u64 {
            return Err(StoreError::corrupt(format!(
                "blob {digest}: chunk at offset {offset}, expected {}",
                buf.len()
            )));
        }
        buf.extend_from_slice(&data);
    }
    Ok(out)
}

/// The end of the blob's last chunk, without concatenating it.
pub(crate) fn blob_size(db: &Db, digest: &str) -> Result<Option<u64>, StoreError> {
    let prefix = db::blob_prefix(digest);
    let end = db::prefix_end(&prefix);
    let mut iter = db.raw().iterator_cf(
        db.cf(CF_BLOBS)?,
        IteratorMode::From(&end, Direction::Reverse),
    );
    match iter.next() {
        Some(item) => {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                return Ok(None);
            }
            let offset = db::blob_chunk_offset(&prefix, &key)?;
            Ok(Some(offset + value.len() as u64))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_decode_from_a_stored_value_and_skip_its_bytes() {
        let stored = StoredValue {
            value: vec![0xc1; 4096],
            create_revision: 7,
            mod_revision: 42,
        };
        let encoded = db::encode(&stored).expect("encode");
        let revisions: StoredRevisions = db::decode(&encoded).expect("decode");
        assert_eq!((revisions.create_revision, revisions.mod_revision), (7, 42));
    }
}
