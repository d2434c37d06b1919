//! The scheduler (leader only): binds Pending pods to nodes that fit them.
//!
//! Each pass reads a snapshot of nodes and pods from the store, plans with the pure
//! [`plan::place`], and hands its binds to a background task: one transaction per
//! pod, compare-and-swap on the revision it was read at. The next pass does not
//! wait for them; it counts them as placed ([`assumed`]).

mod assumed;
pub mod plan;

use crate::events::{self, Occurrence};
use crate::reconcile::Trigger;
use crate::registry::{BatchWrite, Registry, Result};
use assumed::{Assumed, Forget};
use futures::StreamExt;
use plan::{Decision, NodeView, Policy};
use reef_api::events::{event_name, event_object, fold};
use reef_api::{Kind, Node, ObjectRef, Phase, Pod, RawObject};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Binds (and events) written at once, over all passes; the store batches them
/// into entries.
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

/// One planned bind: the pod with its node set, its Scheduled event, and the
/// guard that keeps it assumed until the write ends.
type Bind = (BatchWrite, Option<BatchWrite>, Forget);

pub struct Scheduler {
    registry: Registry,
    policy: Policy,
    assumed: Assumed,
    /// Shared by the bind tasks of every pass. Waiters are served in order, so
    /// the pods of an earlier pass (older pods) bind first.
    permits: Arc<Semaphore>,
}

impl Scheduler {
    pub fn new(registry: Registry, policy: Policy) -> Scheduler {
        Scheduler {
            registry,
            policy,
            assumed: Assumed::default(),
            permits: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
        }
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

    /// One scheduling pass over every unbound pod that has no bind in flight.
    pub async fn pass(&self) -> Result<()> {
        // Before the pods: see [`Assumed::snapshot`].
        let in_flight = self.assumed.snapshot();
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
            let assumed_node = || {
                if in_flight.is_empty() {
                    return None;
                }
                let key = (pod.namespace().to_string(), pod.metadata.name.clone());
                in_flight.get(&key)
            };
            match pod.spec.node.as_ref().or_else(assumed_node) {
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
        let mut binds: Vec<Bind> = Vec::new();
        let mut unschedulable = Vec::new();
        for (pod, decision) in pending.iter().zip(&decisions) {
            match decision {
                Decision::Bind(node) => {
                    let mut bound = (*pod).clone();
                    bound.spec.node = Some(node.clone());
                    let event = scheduled_event(&self.registry, pod, node)?;
                    let key = (pod.namespace().to_string(), pod.metadata.name.clone());
                    let forget = self.assumed.assume(key, node.clone());
                    binds.push((BatchWrite::Spec(bound.to_raw()?), event, forget));
                }
                Decision::Unschedulable { .. } => {
                    unschedulable.push((*pod, decision.message().unwrap_or_default()));
                }
            }
        }
        if !binds.is_empty() {
            tokio::spawn(write_binds(
                self.registry.clone(),
                self.permits.clone(),
                binds,
            ));
        }
        // Pods that fit nowhere are told why.
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
        Ok(())
    }
}

/// Writes one pass's binds, each pod (with its Scheduled event) in a
/// transaction of its own: the store packs many into shared Raft entries, and
/// a pod that changed meanwhile fails alone (a later pass replans it) instead
/// of voiding everyone else's bind.
async fn write_binds(registry: Registry, permits: Arc<Semaphore>, binds: Vec<Bind>) {
    let registry = &registry;
    let bound = binds
        .into_iter()
        .map(|(bind, event, forget)| {
            let permits = permits.clone();
            async move {
                // Never closed; without a permit nothing is written.
                let Ok(_permit) = permits.acquire_owned().await else {
                    return false;
                };
                let pod = match &bind {
                    BatchWrite::Spec(p) => format!("{}/{}", p.namespace(), p.metadata.name),
                    _ => String::new(),
                };
                let writes = std::iter::once(bind).chain(event).collect();
                let written = registry.write_batch(writes).await;
                // Committed and applied here (or failed): the next pass reads it.
                drop(forget);
                match written {
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
            }
        })
        .collect::<futures::stream::FuturesUnordered<_>>()
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    if bound > 0 {
        tracing::info!("bound {bound} pod(s)");
    }
}

#[cfg(test)]
mod tests;
