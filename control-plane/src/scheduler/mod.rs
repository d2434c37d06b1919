//! The scheduler (leader only): binds Pending pods to nodes that fit them.
//!
//! Each pass reads a snapshot of nodes and pods from the store, plans with the pure
//! [`plan::place`], and binds in batches: one Raft transaction per batch, each pod
//! compare-and-swap on the revision it was read at.

pub mod plan;

use crate::events::{self, Occurrence};
use crate::reconcile::Trigger;
use crate::registry::{BatchWrite, Registry, Result};
use plan::{Decision, NodeView, Policy};
use reef_api::events::{event_name, event_object, fold};
use reef_api::{Kind, Node, ObjectRef, Phase, Pod, RawObject};
use std::collections::HashMap;
use std::time::Duration;

/// Pods bound per Raft entry: big enough to amortise consensus, small enough to
/// keep entries well under a megabyte; and a cap on an entry's bytes, for
/// pods with big specs (env and args may hold 256 KiB).
const BIND_BATCH: usize = 500;
const BIND_BYTES: usize = crate::store::MAX_TXN_BYTES / 2;

/// How many of `binds` go in the next entry.
fn next_batch(binds: &[(BatchWrite, Option<BatchWrite>)]) -> usize {
    let mut bytes = 0;
    for (i, (bind, _)) in binds.iter().enumerate().take(BIND_BATCH) {
        if let BatchWrite::Spec(pod) = bind {
            bytes += pod.spec.to_string().len() + 1024;
        }
        if i > 0 && bytes > BIND_BYTES {
            return i;
        }
    }
    binds.len().min(BIND_BATCH)
}

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
            || self.pass(),
        )
        .await
    }

    /// One scheduling pass over every unbound pod.
    pub async fn pass(&self) -> Result<()> {
        let nodes: Vec<Node> = self.registry.list_typed(Kind::Node, None)?;
        let pods: Vec<Pod> = self.registry.list_typed(Kind::Pod, None)?;
        let mut views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
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
                None => pending.push(pod),
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
        for (pod, decision) in pending.iter().zip(&decisions) {
            match decision {
                Decision::Bind(node) => {
                    let mut bound = (*pod).clone();
                    bound.spec.node = Some(node.clone());
                    binds.push((
                        BatchWrite::Spec(bound.to_raw()?),
                        scheduled_event(&self.registry, pod, node)?,
                    ));
                }
                Decision::Unschedulable { .. } => {
                    let message = decision.message().unwrap_or_default();
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
                }
            }
        }
        let mut bound = 0;
        while !binds.is_empty() {
            let rest = binds.split_off(next_batch(&binds));
            let chunk = std::mem::replace(&mut binds, rest);
            let size = chunk.len();
            // Each bind and its Scheduled event commit together.
            let batch: Vec<BatchWrite> = chunk
                .iter()
                .flat_map(|(bind, event)| std::iter::once(bind.clone()).chain(event.clone()))
                .collect();
            match self.registry.write_batch(batch).await {
                Ok(Some(_)) => bound += size,
                // A pod changed under us: the next pass replans from fresh state.
                Ok(None) => tracing::debug!("bind batch of {size} lost a race; will replan"),
                // One pod the registry refuses must not keep the others unbound:
                // bind this batch's pods one by one, logging the ones refused.
                Err(e) => {
                    tracing::warn!(
                        "bind batch of {size} refused ({e}); binding its pods one by one"
                    );
                    for (bind, event) in chunk {
                        let pod = match &bind {
                            BatchWrite::Spec(p) => format!("{}/{}", p.namespace(), p.metadata.name),
                            _ => String::new(),
                        };
                        let writes = std::iter::once(bind).chain(event).collect();
                        match self.registry.write_batch(writes).await {
                            Ok(Some(_)) => bound += 1,
                            Ok(None) => {}
                            Err(e) => tracing::warn!(%pod, "cannot bind: {e}"),
                        }
                    }
                }
            }
        }
        if bound > 0 {
            tracing::info!("bound {bound} pod(s)");
        }
        Ok(())
    }
}
