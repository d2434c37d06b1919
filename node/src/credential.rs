//! The node's own credential. The join token is exchanged once, at first
//! registration, for a token bound to this node's name, which the node keeps in
//! its data dir (`node.credential`) and uses for everything after: it can read
//! what this node needs and write only this node and the status of its pods.

use anyhow::{bail, Context};
use reef_api::Client;
use std::path::Path;
use std::time::Duration;

const FILE: &str = "node.credential";

/// The credential from `data_dir`, or a new one obtained with `client` (which
/// holds the join token), waiting for the control plane to come up if need be.
pub async fn obtain(client: Client, node: &str, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if !text.trim().is_empty() {
            return Ok(text.trim().to_string());
        }
    }
    let mut wait = Duration::from_millis(200);
    loop {
        match client.node_credential(node).await {
            Ok(token) => {
                reef_api::config::write_private(&path, format!("{token}\n").as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(%node, "exchanged the join token for this node's credential");
                return Ok(token);
            }
            // The name is taken, or the join token is wrong: only the operator can fix that.
            Err(e) if matches!(e.status(), Some(400..=499)) => {
                bail!("registering node {node:?}: {e}")
            }
            Err(e) => {
                tracing::warn!("cannot register node {node:?} yet, retrying: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
