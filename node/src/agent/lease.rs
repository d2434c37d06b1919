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
            runtimes: vec![RuntimeKind::Wasmtime],
            // Cordoning is the operator's decision: a restarting agent keeps it.
            unschedulable: existing.is_some_and(|n| n.spec.unschedulable),
        },
        status: NodeStatus::default(),
    }
}

fn ready_status() -> NodeStatus {
    let now = now_rfc3339();
    NodeStatus {
        conditions: vec![Condition {
            kind: "Ready".into(),
            status: "True".into(),
            reason: Some("AgentReady".into()),
            last_transition: Some(now.clone()),
        }],
        lease: Some(now),
    }
}

/// Writes this node's spec (creating the object if needed) and a fresh lease.
pub async fn register(client: &Client, config: &AgentConfig) -> Result<(), ClientError> {
    let existing = match client.get(Kind::Node, None, &config.name).await {
        Ok(raw) => raw.typed::<NodeSpec, NodeStatus>().ok(),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let node = node_object(config, existing.as_ref());
    let raw = node
        .to_raw()
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    client.put(&raw, false).await?;
    renew(client, config).await
}

pub async fn renew(client: &Client, config: &AgentConfig) -> Result<(), ClientError> {
    let status =
        serde_json::to_value(ready_status()).map_err(|e| ClientError::Decode(e.to_string()))?;
    client
        .put_status(Kind::Node, None, &config.name, &status, None)
        .await
        .map(drop)
}

/// Registers, then renews the lease every `config.heartbeat` forever; re-registers
/// if the node object was deleted.
pub async fn keep_alive(client: Client, config: AgentConfig) {
    let mut registered = false;
    loop {
        let result = if registered {
            renew(&client, &config).await
        } else {
            register(&client, &config).await
        };
        match result {
            Ok(()) => {
                if !registered {
                    tracing::info!(node = %config.name, "registered with the control plane");
                }
                registered = true;
            }
            Err(e) if e.is_not_found() => registered = false,
            Err(e) => tracing::warn!("lease renewal failed: {e}"),
        }
        let wait = if registered {
            config.heartbeat
        } else {
            Duration::from_millis(500)
        };
        tokio::time::sleep(wait).await;
    }
}
