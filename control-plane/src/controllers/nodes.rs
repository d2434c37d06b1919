//! Node lifecycle: a node whose lease stops being renewed for the grace period is
//! NotReady, and its pods are marked Failed with reason NodeLost so their
//! deployments replace them elsewhere.
//!
//! Lease age is measured on this member's monotonic clock from when it first saw
//! the current lease value, never by comparing wall clocks; and a member that
//! becomes leader (or a control plane back from an outage) starts every node's
//! grace period afresh, so a control-plane outage never evicts healthy nodes.

use crate::events::{self, Occurrence};
use crate::registry::{BatchWrite, Registry, RegistryError, Result};
use reef_api::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Ready condition's status: what a node's own writes change besides its lease.
pub(crate) fn ready_of(node: &RawObject) -> serde_json::Value {
    node.status
        .get("conditions")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|c| c.get("type") == Some(&"Ready".into())))
        .and_then(|c| c.get("status"))
        .cloned()
        .unwrap_or_default()
}

/// What of a node wakes this loop early: its spec and readiness. Lease renewals
/// do not (the one-second timer reads them).
pub fn lifecycle_projection(node: &RawObject) -> serde_json::Value {
    serde_json::json!([node.spec, ready_of(node)])
}

pub struct NodeLifecycle {
    grace: Duration,
    state: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// The Raft term these observations belong to.
    term: u64,
    /// Node → (lease value, when this member first saw it).
    leases: HashMap<String, (String, Instant)>,
}

impl NodeLifecycle {
    pub fn new(grace: Duration) -> NodeLifecycle {
        NodeLifecycle {
            grace,
            state: Mutex::new(Seen::default()),
        }
    }

    /// Nodes whose lease has not changed for longer than the grace period.
    fn expired(&self, term: u64, nodes: &[Arc<Node>]) -> Vec<String> {
        let mut seen = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if seen.term != term {
            // A new leadership: every grace period starts now.
            *seen = Seen {
                term,
                leases: HashMap::new(),
            };
        }
        let now = Instant::now();
        seen.leases
            .retain(|name, _| nodes.iter().any(|n| &n.metadata.name == name));
        nodes
            .iter()
            .filter(|node| {
                let lease = node.status.lease.clone().unwrap_or_default();
                let entry = seen
                    .leases
                    .entry(node.metadata.name.clone())
                    .or_insert_with(|| (lease.clone(), now));
                if entry.0 != lease {
                    *entry = (lease, now);
                }
                now.duration_since(entry.1) > self.grace
            })
            .map(|node| node.metadata.name.clone())
            .collect()
    }

    pub async fn pass(&self, registry: &Registry) -> Result<()> {
        let nodes: Vec<Arc<Node>> = registry.list_cached(Kind::Node)?;
        let term = registry.store().progress().term;
        let lost = self.expired(term, &nodes);
        if lost.is_empty() {
            return Ok(());
        }
        let grace = reef_api::quantity::Timeout(self.grace);
        for node in nodes.iter().filter(|n| lost.contains(&n.metadata.name)) {
            if node.status.is_ready() {
                // One node that cannot be marked must not keep the others' pods in place.
                if let Err(e) = mark_not_ready(registry, node, grace).await {
                    tracing::warn!(node = %node.metadata.name, "cannot mark NotReady: {e}");
                }
            }
        }
        let pods: Vec<Arc<Pod>> = registry.list_cached(Kind::Pod)?;
        let mut writes = Vec::new();
        let mut evicted = Vec::new();
        for pod in &pods {
            let on_lost_node = pod.spec.node.as_ref().is_some_and(|n| lost.contains(n));
            let finished = matches!(pod.status.phase, Phase::Succeeded | Phase::Failed);
            if !on_lost_node || finished {
                continue;
            }
            let node = pod.spec.node.clone().unwrap_or_default();
            let mut failed = (**pod).clone();
            failed.status = PodStatus {
                phase: Phase::Failed,
                ready: false,
                reason: Some(REASON_NODE_LOST.to_string()),
                last_error: Some(format!(
                    "node {node} stopped renewing its lease for more than {grace}"
                )),
                ..pod.status.clone()
            };
            writes.push(BatchWrite::Status(failed.to_raw()?));
            evicted.push((pod.namespace().to_string(), pod.metadata.name.clone(), node));
        }
        // In transactions of bounded size: a lost node may have held thousands of pods.
        let mut done = Vec::new();
        let mut evicted = evicted.into_iter();
        while !writes.is_empty() {
            let rest = writes.split_off(writes.len().min(500));
            let batch = std::mem::replace(&mut writes, rest);
            let pods: Vec<_> = evicted.by_ref().take(batch.len()).collect();
            match registry.write_batch(batch).await {
                Ok(Some(_)) => done.extend(pods),
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot mark pods of lost nodes Failed: {e}"),
            }
        }
        for (namespace, name, node) in done {
            let involved = ObjectRef {
                kind: Kind::Pod,
                name: name.clone(),
            };
            let message = format!("node {node} was lost; the pod is replaced elsewhere");
            let recorded = events::record(
                registry,
                &namespace,
                involved,
                "Evicted",
                &message,
                Occurrence::Distinct,
            )
            .await;
            if let Err(e) = recorded {
                tracing::warn!(pod = %format!("{namespace}/{name}"), "Evicted event not recorded: {e}");
            }
        }
        Ok(())
    }
}

async fn mark_not_ready(
    registry: &Registry,
    node: &Node,
    grace: reef_api::quantity::Timeout,
) -> Result<()> {
    let mut status = node.status.clone();
    let now = now_rfc3339();
    status.conditions.retain(|c| c.kind != "Ready");
    status.conditions.push(Condition {
        kind: "Ready".into(),
        status: "False".into(),
        reason: Some("NodeLost".into()),
        last_transition: Some(now),
    });
    let result = registry
        .put_status(
            Kind::Node,
            None,
            &node.metadata.name,
            serde_json::to_value(&status)?,
            Some(node.metadata.resource_version),
        )
        .await;
    match result {
        // The agent renewed meanwhile: it is alive after all.
        Err(RegistryError::Conflict(_) | RegistryError::NotFound { .. }) => return Ok(()),
        other => {
            other?;
        }
    }
    tracing::warn!(node = %node.metadata.name, "node lost: no lease renewal for {grace}");
    let involved = ObjectRef {
        kind: Kind::Node,
        name: node.metadata.name.clone(),
    };
    let message = format!("no lease renewal for more than {grace}: NotReady");
    events::record(
        registry,
        "default",
        involved,
        "NodeNotReady",
        &message,
        Occurrence::Distinct,
    )
    .await
}
