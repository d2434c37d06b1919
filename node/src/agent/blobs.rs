//! Component bytes on the node's disk, fetched from the API by digest (or
//! pulled from an OCI registry by manifest digest) and verified against their
//! digest both when fetched and when read back, so a corrupt file is
//! refetched rather than run.

use reef_api::{digest_of, Client};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static TEMP_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long one pull from a registry may take, manifest and component.
const PULL_DEADLINE: Duration = Duration::from_secs(300);

pub struct BlobCache {
    dir: PathBuf,
    client: Client,
    /// One fetch per digest at a time: replicas starting together share a download.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// How registries are reached for `oci://` components.
    oci: reef_oci::Access,
    max_component: u64,
    /// The content digest of each `oci://` component fetched, which the
    /// runtime knows its compiled code by.
    resolved: Mutex<HashMap<String, String>>,
}

impl BlobCache {
    pub fn new(dir: PathBuf, client: Client, oci: reef_oci::Access) -> BlobCache {
        BlobCache {
            dir,
            client,
            in_flight: Mutex::new(HashMap::new()),
            oci,
            max_component: 64 << 20,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.trim_start_matches("sha256:"))
    }

    async fn one_at_a_time(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// The bytes of `digest` on disk, if they are sound.
    async fn cached(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = tokio::fs::read(self.path(digest)).await.ok()?;
        if digest_of(&bytes) == digest {
            return Some(bytes);
        }
        tracing::warn!(%digest, "cached blob is corrupt; fetching it again");
        None
    }

    async fn write(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        // Unique per write: two writers of one file (a blob fetched by digest
        // while a pull brings the same bytes) never share a temp file.
        let n = TEMP_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, path).await?;
        Ok(())
    }

    /// The verified bytes of `digest`, from disk or else from the API.
    pub async fn get(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let _one_at_a_time = self.one_at_a_time(digest).await;
        if let Some(bytes) = self.cached(digest).await {
            return Ok(bytes);
        }
        let bytes = self.client.get_blob(digest).await?.to_vec();
        let actual = digest_of(&bytes);
        if actual != digest {
            anyhow::bail!("the API served {actual} for {digest}");
        }
        self.write(&self.path(digest), &bytes).await?;
        Ok(bytes)
    }

    /// The content digest of what a spec names (itself unless it is `oci://`).
    pub fn content_digest(&self, component: &str) -> String {
        let resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        resolved
            .get(component)
            .cloned()
            .unwrap_or_else(|| component.to_string())
    }

    /// A pod's component, by what its spec names (a digest of uploaded bytes,
    /// or `oci://…@sha256:…`): its content digest and its verified bytes.
    pub async fn component(&self, component: &str) -> anyhow::Result<(String, Vec<u8>)> {
        if !component.starts_with(reef_oci::reference::SCHEME) {
            return Ok((component.to_string(), self.get(component).await?));
        }
        let reference: reef_oci::ComponentRef = component.parse()?;
        let Some(manifest) = reference.digest.as_deref() else {
            anyhow::bail!("{component} is not pinned to a digest");
        };
        let _one_at_a_time = self.one_at_a_time(component).await;
        let (digest, bytes) = self.pull(&reference, manifest).await?;
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(component.to_string(), digest.clone());
        Ok((digest, bytes))
    }

    /// A component from its registry, or the copy pulled earlier.
    async fn pull(
        &self,
        reference: &reef_oci::ComponentRef,
        manifest: &str,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        // Which layer the pinned manifest names; the manifest cannot change.
        // Keyed by registry and repository too: bytes pulled from one
        // repository are never served for a reference to another, which the
        // node's credentials might not reach.
        debug_assert!(reference.digest.as_deref() == Some(manifest));
        let index = self.dir.join(format!(
            "oci-{}",
            digest_of(reference.to_string().as_bytes()).trim_start_matches("sha256:")
        ));
        if let Ok(layer) = tokio::fs::read_to_string(&index).await {
            if reef_oci::reference::valid_digest(&layer) {
                if let Some(bytes) = self.cached(&layer).await {
                    return Ok((layer, bytes));
                }
            }
        }
        let pulled =
            tokio::time::timeout(PULL_DEADLINE, self.oci.pull(reference, self.max_component))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "pulling {reference} took longer than {}",
                        humantime::format_duration(PULL_DEADLINE)
                    )
                })??;
        self.write(&self.path(&pulled.digest), &pulled.bytes)
            .await?;
        self.write(&index, pulled.digest.as_bytes()).await?;
        Ok((pulled.digest, pulled.bytes))
    }
}
