//! Component bytes on the node's disk, fetched from the API by digest and verified
//! against it both when fetched and when read back, so a corrupt file is refetched
//! rather than run.

use reef_api::{digest_of, Client};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct BlobCache {
    dir: PathBuf,
    client: Client,
    /// One fetch per digest at a time: replicas starting together share a download.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl BlobCache {
    pub fn new(dir: PathBuf, client: Client) -> BlobCache {
        BlobCache {
            dir,
            client,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.trim_start_matches("sha256:"))
    }

    /// The verified bytes of `digest`, from disk or else from the API.
    pub async fn get(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let lock = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        let path = self.path(digest);
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if digest_of(&bytes) == digest {
                return Ok(bytes);
            }
            tracing::warn!(%digest, "cached blob is corrupt; fetching it again");
        }
        let bytes = self.client.get_blob(digest).await?.to_vec();
        let actual = digest_of(&bytes);
        if actual != digest {
            anyhow::bail!("the API served {actual} for {digest}");
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(bytes)
    }
}
