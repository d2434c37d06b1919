//! The scheduler (leader only): binds Pending pods to nodes that fit them.
//!
//! Each pass reads a snapshot of nodes and pods from the store, plans with the pure
//! [`plan::place`], and binds in batches: one Raft transaction per batch, each pod
//! compare-and-swap on the revision it was read at.

pub mod plan;

use crate::events::{self, Occurrence};
use crate::reconcile::Trigger;
use crate::registry::{BatchWrite, Registry, Result};
use futures::StreamExt;
use plan::{Decision, NodeView, Policy};
use reef_api::events::{event_name, event_object, fold};
use reef_api::{Kind, Node, ObjectRef, Phase, Pod, RawObject};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Binds (and events) written at once; the store batches them into entries.
const WRITES_IN_FLIGHT: usize = 256;

/// The Scheduled event of a bind, to commit with it (none if one exists already).
fn scheduled_event(registry: &Registry, pod: &Pod, node: &str) -> Result<Option<BatchWrite>> {
    let involved = ObjectRef {
        kind: Kind::Pod,
        name: pod.metadata.name.clone(),
    };
    let name = event_name(&involved, "Scheduled");
    if registry
        .try_get(Kind::Event, Some(pod.namespace()), &name)?
        .is_some()
    {
        return Ok(None);
    }
    let now = reef_api::now_rfc3339();
    let message = format!("bound to node {node}");
    let spec = fold(
        None,
        involved,
        "Scheduled",
        &message,
        Occurrence::Distinct,
        &now,
    );
    Ok(spec
        .map(|spec| event_object(pod.namespace(), spec).to_raw())
        .transpose()?
        .map(BatchWrite::Create))
}

/// What of a pod placement depends on: where it is bound, and whether it has
/// finished (and so holds no capacity). Status churn of running pods is not.
fn placement_projection(pod: &RawObject) -> serde_json::Value {
    let finished = matches!(
        pod.status.get("phase").and_then(|p| p.as_str()),
        Some("Succeeded" | "Failed")
    );
    serde_json::json!([pod.spec.get("node"), finished])
}

pub struct Scheduler {
    registry: Registry,
    policy: Policy,
}

impl Scheduler {
    pub fn new(registry: Registry, policy: Policy) -> Scheduler {
        Scheduler { registry, policy }
    }

    /// Runs until the process ends; passes happen only while this member leads.
    pub async fn run(self) {
        let registry = self.registry.clone();
        crate::reconcile::run(
            "scheduler",
            registry,
            &[
                Trigger::on(Kind::Pod, placement_projection),
                // Capacity, cordons and readiness; not lease renewals.
                Trigger::on(Kind::Node, crate::controllers::nodes::lifecycle_projection),
            ],
            Duration::from_secs(5),
            |_| self.pass(),
        )
        .await
    }

    /// One scheduling pass over every unbound pod.
    pub async fn pass(&self) -> Result<()> {
        let nodes: Vec<Arc<Node>> = self.registry.list_cached(Kind::Node)?;
        let pods: Vec<Arc<Pod>> = self.registry.list_cached(Kind::Pod)?;
        let mut views: Vec<NodeView> = nodes.iter().map(|n| NodeView::new(n)).collect();
        let index: HashMap<String, usize> = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        let mut pending = Vec::new();
        for pod in &pods {
            if matches!(pod.status.phase, Phase::Succeeded | Phase::Failed) {
                continue;
            }
            match &pod.spec.node {
                Some(node) => {
                    if let Some(&i) = index.get(node) {
                        views[i].claim(pod);
                    }
                }
                None => pending.push(&**pod),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        // Oldest first, so a stream of new pods cannot starve an old one.
        pending.sort_by(|a, b| {
            (
                a.metadata.created_at.as_deref(),
                a.metadata.resource_version,
            )
                .cmp(&(
                    b.metadata.created_at.as_deref(),
                    b.metadata.resource_version,
                ))
        });
        let decisions = plan::place(&pending, &mut views, self.policy);
        let mut binds = Vec::new();
        let mut unschedulable = Vec::new();
        for (pod, decision) in pending.iter().zip(&decisions) {
            match decision {
                Decision::Bind(node) => {
                    let mut bound = (*pod).clone();
                    bound.spec.node = Some(node.clone());
                    let event = scheduled_event(&self.registry, pod, node)?;
                    binds.push((BatchWrite::Spec(bound.to_raw()?), event));
                }
                Decision::Unschedulable { .. } => {
                    unschedulable.push((*pod, decision.message().unwrap_or_default()));
                }
            }
        }
        // Each pod is bound (with its Scheduled event) in a transaction of its
        // own, many in flight at once: the store packs them into shared Raft
        // entries, and a pod that changed meanwhile fails alone (the next pass
        // replans it) instead of voiding everyone else's bind.
        let bound = futures::stream::iter(binds)
            .map(|(bind, event)| async move {
                let pod = match &bind {
                    BatchWrite::Spec(p) => format!("{}/{}", p.namespace(), p.metadata.name),
                    _ => String::new(),
                };
                let writes = std::iter::once(bind).chain(event).collect();
                match self.registry.write_batch(writes).await {
                    Ok(Some(_)) => true,
                    Ok(None) => {
                        tracing::debug!(%pod, "changed while being bound; will replan");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(%pod, "cannot bind: {e}");
                        false
                    }
                }
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        // Pods that fit nowhere are told why, after the ones that fit are bound.
        futures::stream::iter(unschedulable)
            .for_each_concurrent(WRITES_IN_FLIGHT, |(pod, message)| async move {
                let involved = ObjectRef {
                    kind: Kind::Pod,
                    name: pod.metadata.name.clone(),
                };
                let recorded = events::record(
                    &self.registry,
                    pod.namespace(),
                    involved,
                    "FailedScheduling",
                    &message,
                    Occurrence::Ongoing,
                )
                .await;
                if let Err(e) = recorded {
                    tracing::warn!(pod = %pod.metadata.name, "FailedScheduling event not recorded: {e}");
                }
            })
            .await;
        if bound > 0 {
            tracing::info!("bound {bound} pod(s)");
        }
        Ok(())
    }
}
