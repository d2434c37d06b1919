//! Component bytes: content-addressed by sha256, replicated through the Raft
//! log in chunks so every member holds them before the Blob object commits, and
//! claimed per namespace (a tenant runs only components uploaded to it).

use super::admission::blob_claim_key;
use super::{key, Precondition, Registry, RegistryError, Result, DEFAULT_NAMESPACE};
use crate::store::{Check, Op, Txn};
use reef_api::validate::{self, FieldError};
use reef_api::{BlobSpec, Kind, Metadata, Object, RawObject};

/// One Raft entry per chunk keeps entries small enough to replicate smoothly.
const CHUNK: usize = 1 << 20;

impl Registry {
    /// Stores `bytes` under `digest` (verified) and claims it for `namespace`
    /// (none, or `default`: the cluster admin's, which needs no claim).
    pub async fn put_blob(
        &self,
        digest: &str,
        bytes: &[u8],
        namespace: Option<&str>,
    ) -> Result<RawObject> {
        validate::digest(digest)
            .map_err(|m| RegistryError::Invalid(FieldError::new("metadata.name", m)))?;
        let actual = reef_api::digest_of(bytes);
        if actual != digest {
            return Err(RegistryError::Invalid(FieldError::new(
                "body",
                format!("the body hashes to {actual}, not {digest}"),
            )));
        }
        let namespace = namespace.filter(|ns| *ns != DEFAULT_NAMESPACE);
        if let Some(existing) = self.try_get(Kind::Blob, None, digest)? {
            self.claim_blob(digest, namespace).await?;
            return Ok(existing);
        }
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            let txn = Txn {
                checks: vec![],
                ops: vec![Op::PutBlobChunk {
                    digest: digest.to_string(),
                    offset: (i * CHUNK) as u64,
                    data: chunk.to_vec(),
                }],
            };
            self.store.txn(txn).await?;
        }
        let blob = Object {
            kind: Kind::Blob,
            metadata: Metadata {
                name: digest.to_string(),
                ..Metadata::default()
            },
            spec: BlobSpec {
                size: bytes.len() as u64,
            },
            status: serde_json::Value::Null,
        };
        let stored = match self.put(&blob.to_raw()?, Precondition::CreateOnly).await {
            Ok(stored) => stored,
            // A concurrent upload of the same bytes won: same content, same answer.
            Err(RegistryError::Conflict(_)) => self.get(Kind::Blob, None, digest)?,
            Err(e) => return Err(e),
        };
        self.claim_blob(digest, namespace).await?;
        Ok(stored)
    }

    /// Records that `namespace` holds the bytes of `digest` (idempotent).
    async fn claim_blob(&self, digest: &str, namespace: Option<&str>) -> Result<()> {
        let Some(namespace) = namespace else {
            return Ok(());
        };
        let claim = blob_claim_key(namespace, digest);
        if self.store.get(&claim)?.is_some() {
            return Ok(());
        }
        let tenant_key = key(Kind::Tenant, None, namespace);
        let Some(tenant) = self.store.get(&tenant_key)? else {
            return Err(RegistryError::NotFound {
                kind: Kind::Tenant,
                name: namespace.to_string(),
            });
        };
        // Not for a tenant being deleted meanwhile.
        let outcome = self
            .store
            .txn(Txn {
                checks: vec![Check::ModRevision {
                    key: tenant_key,
                    revision: tenant.mod_revision,
                }],
                ops: vec![Op::Put {
                    key: claim,
                    value: Vec::new(),
                }],
            })
            .await?;
        if !outcome.succeeded {
            return Err(RegistryError::Conflict(format!(
                "tenant {namespace:?} changed during the upload; upload again"
            )));
        }
        Ok(())
    }

    /// The Blob object if its bytes are complete and, for a namespace other
    /// than `default`, claimed by it.
    pub fn blob_in(&self, digest: &str, namespace: Option<&str>) -> Result<Option<RawObject>> {
        let Some(blob) = self.try_get(Kind::Blob, None, digest)? else {
            return Ok(None);
        };
        match namespace.filter(|ns| *ns != DEFAULT_NAMESPACE) {
            Some(ns) if self.store.get(&blob_claim_key(ns, digest))?.is_none() => Ok(None),
            _ => Ok(Some(blob)),
        }
    }

    /// The bytes of a complete blob (read off the async workers by the caller).
    pub fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        // The Blob object commits after the last chunk, so its presence means complete bytes.
        if self.try_get(Kind::Blob, None, digest)?.is_none() {
            return Ok(None);
        }
        Ok(self.store.read_blob(digest)?)
    }
}
