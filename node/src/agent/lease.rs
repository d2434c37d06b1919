//! Registration and the lease: the node object says what this node offers, and the
//! agent renews `status.lease` so the control plane knows it is alive.

use super::AgentConfig;
use reef_api::*;
use std::time::Duration;

fn node_object(config: &AgentConfig, existing: Option<&Node>) -> Node {
    Object {
        kind: Kind::Node,
        metadata: Metadata {
            name: config.name.clone(),
            labels: config.labels.clone(),
            ..Metadata::default()
        },
        spec: NodeSpec {
            address: config.address.clone(),
            ingress: config.ingress.clone(),
            capacity: config.capacity,
            allocatable: config.capacity,
            runtimes: config.runtimes.clone(),
            // Cordoning is the operator's decision: a restarting agent keeps it.
            unschedulable: existing.is_some_and(|n| n.spec.unschedulable),
            draining: existing.is_some_and(|n| n.spec.draining),
        },
        status: NodeStatus::default(),
    }
}

/// `Ready` since `since`, with the lease renewed now.
fn ready_status(since: &str) -> NodeStatus {
    NodeStatus {
        conditions: vec![Condition {
            kind: "Ready".into(),
            status: "True".into(),
            reason: Some("AgentReady".into()),
            last_transition: Some(since.to_string()),
        }],
        lease: Some(now_rfc3339()),
    }
}

/// Writes this node's spec (creating the object if needed), compare-and-swap on the
/// version it read so a concurrent cordon is never lost, then a fresh lease.
/// Returns when the node became Ready, for later renewals to keep.
pub async fn register(client: &Client, config: &AgentConfig) -> Result<String, ClientError> {
    let existing = match client.get(Kind::Node, None, &config.name).await {
        Ok(raw) => Some(raw),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let typed = existing
        .as_ref()
        .and_then(|raw| raw.typed::<NodeSpec, NodeStatus>().ok());
    let mut raw = node_object(config, typed.as_ref())
        .to_raw()
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    // 0 = create only; otherwise only over the version just read.
    raw.metadata.resource_version = existing.map_or(0, |e| e.metadata.resource_version);
    client.put(&raw, true).await?;
    let since = now_rfc3339();
    renew(client, config, &since).await?;
    Ok(since)
}

pub async fn renew(client: &Client, config: &AgentConfig, since: &str) -> Result<(), ClientError> {
    let status = serde_json::to_value(ready_status(since))
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    client
        .put_status(Kind::Node, None, &config.name, &status, None)
        .await
        .map(drop)
}

/// Registers, then renews the lease every `config.heartbeat` forever; registers
/// again if the node object was deleted or a registration raced another writer.
pub async fn keep_alive(client: Client, config: AgentConfig) {
    let mut ready_since: Option<String> = None;
    loop {
        let result = match &ready_since {
            Some(since) => renew(&client, &config, since).await,
            None => register(&client, &config).await.map(|since| {
                tracing::info!(node = %config.name, "registered with the control plane");
                ready_since = Some(since);
            }),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => ready_since = None,
            Err(e) => tracing::warn!("lease renewal failed: {e}"),
        }
        let wait = if ready_since.is_some() {
            config.heartbeat
        } else {
            Duration::from_millis(500)
        };
        tokio::time::sleep(wait).await;
    }
}
