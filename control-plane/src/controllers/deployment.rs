//! Deployment → pods: keeps `replicas` pods (the autoscaler's decision when it
//! autoscales) of the current template, replacing pods
//! of an older template as a rolling update bounded by max surge / max unavailable,
//! and replacing pods that are gone or finished.

use crate::events::{self, Occurrence};
use crate::quota;
use crate::reconcile::Retries;
use crate::registry::{BatchWrite, Registry, RegistryError, Result, TEMPLATE_HASH_LABEL};
use rand::Rng;
use reef_api::*;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A short, stable hash of what the pods are made from: template and labels.
pub fn template_hash(deployment: &Deployment) -> String {
    let canonical = serde_json::json!({
        "template": deployment.spec.template,
        "labels": deployment.metadata.labels,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(&digest[..5])
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn new_pod(deployment: &Deployment, hash: &str) -> Pod {
    let mut labels = deployment.metadata.labels.clone();
    labels.insert(TEMPLATE_HASH_LABEL.to_string(), hash.to_string());
    Object {
        kind: Kind::Pod,
        metadata: Metadata {
            name: format!("{}-{hash}-{}", deployment.metadata.name, random_suffix()),
            namespace: deployment.metadata.namespace.clone(),
            labels,
            owner: Some(OwnerRef {
                kind: Kind::Deployment,
                name: deployment.metadata.name.clone(),
                uid: deployment.metadata.uid.clone(),
            }),
            ..Metadata::default()
        },
        spec: deployment.spec.template.clone(),
        status: PodStatus::default(),
    }
}

/// What one reconcile decided: pods to create and pods to delete.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: u32,
    /// Names of pods to delete.
    pub delete: Vec<String>,
}

/// The rolling-update arithmetic, pure: given the current pods and the nodes
/// being drained, what to do now.
pub fn plan(
    deployment: &Deployment,
    hash: &str,
    pods: &[&Pod],
    draining: &HashSet<String>,
) -> Plan {
    let replicas = crate::autoscaler::wanted_replicas(deployment);
    let strategy = deployment.spec.strategy;
    let mut plan = Plan::default();
    let mut current: Vec<&Pod> = Vec::new();
    let mut old: Vec<&Pod> = Vec::new();
    // A Failed pod stays (counted as not ready) so its `last_error` is visible and
    // a component that cannot run does not churn pods; it goes when the template
    // changes, like any not-ready pod of an old template. A pod whose node was
    // lost is gone already: it is replaced at once. A pod on a node being drained
    // is treated like one of an old template: replaced new-first, within the
    // rollout's bounds.
    for pod in pods {
        let on_draining_node = pod.spec.node.as_ref().is_some_and(|n| draining.contains(n));
        if pod.status.reason.as_deref() == Some(REASON_NODE_LOST) {
            plan.delete.push(pod.metadata.name.clone());
        } else if !on_draining_node
            && pod
                .metadata
                .labels
                .get(TEMPLATE_HASH_LABEL)
                .map(String::as_str)
                == Some(hash)
        {
            current.push(pod);
        } else {
            old.push(pod);
        }
    }
    // Not-ready pods go first, then the youngest.
    let by_removal_order = |a: &&Pod, b: &&Pod| {
        (a.status.ready, b.metadata.created_at.as_deref())
            .cmp(&(b.status.ready, a.metadata.created_at.as_deref()))
    };
    current.sort_by(by_removal_order);
    old.sort_by(by_removal_order);

    let current_count = current.len() as u32;
    if current_count > replicas {
        let excess = (current_count - replicas) as usize;
        plan.delete
            .extend(current.drain(..excess).map(|p| p.metadata.name.clone()));
    }
    // Old pods go while availability stays at or above replicas - max_unavailable;
    // not-ready ones cost no availability, so they go at once.
    let min_available = replicas.saturating_sub(strategy.max_unavailable);
    let ready_current = current.iter().filter(|p| p.status.ready).count() as u32;
    let ready_old = old.iter().filter(|p| p.status.ready).count() as u32;
    let mut available = ready_current + ready_old;
    let mut old_kept = old.len() as u32;
    for pod in old {
        if pod.status.ready {
            if available <= min_available {
                break;
            }
            available -= 1;
        }
        plan.delete.push(pod.metadata.name.clone());
        old_kept -= 1;
    }

    // New pods fill up to replicas, within replicas + max_surge in total; the
    // deletions above commit in the same transaction, so they make room.
    let total = current.len() as u32 + old_kept;
    let max_total = replicas + strategy.max_surge;
    let wanted_new = replicas.saturating_sub(current.len() as u32);
    plan.create = wanted_new.min(max_total.saturating_sub(total));
    plan
}

/// Pods created in one transaction at most, and the bytes they may take: a
/// Raft entry must cross to followers within a heartbeat.
const MAX_CREATES: usize = 500;
const CREATE_BYTES: usize = crate::store::MAX_TXN_BYTES / 2;

/// How many new pods of `deployment` fit in one transaction.
fn creates_per_batch(deployment: &Deployment) -> u32 {
    let pod_bytes = serde_json::to_vec(&deployment.spec.template).map_or(4096, |v| v.len()) + 512;
    (CREATE_BYTES / pod_bytes).clamp(1, MAX_CREATES) as u32
}

/// What each tenant namespace's live pods use, for holding creations to the quota.
struct Quotas {
    limits: HashMap<String, TenantSpec>,
    live: HashMap<String, Usage>,
}

impl Quotas {
    fn new(tenants: &[Arc<Tenant>], pods: &[Arc<Pod>]) -> Quotas {
        let limits: HashMap<String, TenantSpec> = tenants
            .iter()
            .map(|t| (t.metadata.name.clone(), t.spec.clone()))
            .collect();
        let mut live: HashMap<String, Usage> = HashMap::new();
        for pod in pods.iter().filter(|p| !is_finished(p)) {
            quota::add_pods(
                live.entry(pod.namespace().to_string()).or_default(),
                &pod.spec,
                1,
            );
        }
        Quotas { limits, live }
    }

    /// Cuts `plan.create` to what the tenant's quota leaves room for (after
    /// the plan's deletions); says why when it had to.
    fn hold(&self, deployment: &Deployment, pods: &[&Pod], plan: &mut Plan) -> Option<String> {
        let namespace = deployment.namespace();
        let limits = self.limits.get(namespace)?;
        let mut live = self.live.get(namespace).copied().unwrap_or_default();
        for pod in pods
            .iter()
            .filter(|p| plan.delete.contains(&p.metadata.name) && !is_finished(p))
        {
            live.pods = live.pods.saturating_sub(1);
            live.cpu.0 = live.cpu.0.saturating_sub(pod.spec.cpu.0);
            live.memory.0 = live.memory.0.saturating_sub(pod.spec.memory.0);
        }
        let (fit, why) =
            quota::pods_that_fit(limits, &live, &deployment.spec.template, plan.create);
        plan.create = fit;
        why.map(|why| format!("held short by the quota of tenant {namespace:?}: {why}"))
    }

    fn created(&mut self, namespace: &str, template: &PodSpec, count: u32) {
        quota::add_pods(
            self.live.entry(namespace.to_string()).or_default(),
            template,
            u64::from(count),
        );
    }
}

fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.phase, Phase::Succeeded | Phase::Failed)
}

/// Reconciles every deployment against its pods; one that fails is retried
/// later without holding up the others.
pub async fn reconcile_all(registry: &Registry, retries: &Retries) -> Result<()> {
    let deployments: Vec<Arc<Deployment>> = registry.list_cached(Kind::Deployment)?;
    if deployments.is_empty() {
        return Ok(());
    }
    let pods: Vec<Arc<Pod>> = registry.list_cached(Kind::Pod)?;
    let nodes: Vec<Arc<Node>> = registry.list_cached(Kind::Node)?;
    let draining: HashSet<String> = nodes
        .iter()
        .filter(|n| n.spec.draining)
        .map(|n| n.metadata.name.clone())
        .collect();
    let mut quotas = Quotas::new(&registry.list_cached(Kind::Tenant)?, &pods);
    for deployment in &deployments {
        let key = format!("{}/{}", deployment.namespace(), deployment.metadata.name);
        if !retries.due(&key) {
            continue;
        }
        let owned: Vec<&Pod> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| {
                p.metadata.namespace == deployment.metadata.namespace
                    && p.metadata
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.uid == deployment.metadata.uid)
            })
            .collect();
        let outcome = reconcile(registry, deployment, &owned, &draining, &mut quotas).await;
        retries.record("deployments", &key, outcome);
    }
    Ok(())
}

/// Names for an event message: the first few, then how many more.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

async fn reconcile(
    registry: &Registry,
    deployment: &Deployment,
    pods: &[&Pod],
    draining: &HashSet<String>,
    quotas: &mut Quotas,
) -> Result<()> {
    let hash = template_hash(deployment);
    let mut plan = plan(deployment, &hash, pods, draining);
    plan.create = plan.create.min(creates_per_batch(deployment));
    let held = quotas.hold(deployment, pods, &mut plan);
    // Deletions and creations in one transaction, compare-and-swap against what we
    // read: a stale view changes nothing.
    let mut writes = Vec::new();
    for name in &plan.delete {
        if let Some(pod) = pods.iter().find(|p| &p.metadata.name == name) {
            writes.push(BatchWrite::Delete(pod.to_raw()?));
        }
    }
    let mut created = Vec::new();
    for _ in 0..plan.create {
        let pod = new_pod(deployment, &hash);
        created.push(pod.metadata.name.clone());
        writes.push(BatchWrite::Create(pod.to_raw()?));
    }
    if plan.create > 0 {
        // Never create pods for a deployment deleted or changed since we read it.
        writes.push(BatchWrite::Require(deployment.to_raw()?));
    }
    if registry.write_batch(writes).await?.is_none() {
        return Ok(());
    }
    quotas.created(
        deployment.namespace(),
        &deployment.spec.template,
        plan.create,
    );
    let namespace = deployment.namespace();
    let involved = ObjectRef {
        kind: Kind::Deployment,
        name: deployment.metadata.name.clone(),
    };
    if !created.is_empty() || !plan.delete.is_empty() {
        let mut message = Vec::new();
        if !created.is_empty() {
            message.push(format!("created {}", some_names(&created)));
        }
        if !plan.delete.is_empty() {
            message.push(format!("deleted {}", some_names(&plan.delete)));
        }
        let message = format!("{} (template {hash})", message.join("; "));
        events::record(
            registry,
            namespace,
            involved.clone(),
            "Scaled",
            &message,
            Occurrence::Distinct,
        )
        .await?;
    }
    let mut status = next_status(deployment, &hash, pods, &plan, draining);
    status.held = held;
    if let Some(why) = &status.held {
        events::record(
            registry,
            namespace,
            involved.clone(),
            "QuotaExceeded",
            why,
            Occurrence::Ongoing,
        )
        .await?;
    }
    if let Some(why) = &status.stuck {
        events::record(
            registry,
            namespace,
            involved,
            "RolloutStuck",
            why,
            Occurrence::Ongoing,
        )
        .await?;
    }
    if status != deployment.status {
        let value = serde_json::to_value(&status)?;
        let result = registry
            .put_status(
                Kind::Deployment,
                deployment.metadata.namespace.as_deref(),
                &deployment.metadata.name,
                value,
                Some(deployment.metadata.resource_version),
            )
            .await;
        match result {
            // The deployment changed since we read it; the next pass sees the new one.
            Err(RegistryError::Conflict(_) | RegistryError::NotFound { .. }) => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// The status after this pass: counts, and whether the rollout is progressing or
/// stuck (no change in updated/ready counts for `progress_deadline`).
fn next_status(
    deployment: &Deployment,
    hash: &str,
    pods: &[&Pod],
    plan: &Plan,
    draining: &HashSet<String>,
) -> DeploymentStatus {
    let live: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !plan.delete.contains(&p.metadata.name))
        .collect();
    let is_current = |p: &Pod| {
        p.metadata
            .labels
            .get(TEMPLATE_HASH_LABEL)
            .map(String::as_str)
            == Some(hash)
            && !p.spec.node.as_ref().is_some_and(|n| draining.contains(n))
    };
    let mut status = DeploymentStatus {
        replicas: live.len() as u32 + plan.create,
        ready_replicas: live.iter().filter(|p| p.status.ready).count() as u32,
        updated_replicas: live.iter().filter(|p| is_current(p)).count() as u32 + plan.create,
        observed_generation: deployment.metadata.generation,
        template_hash: hash.to_string(),
        progressed_at: deployment.status.progressed_at.clone(),
        stuck: None,
        held: None,
        autoscale: deployment.status.autoscale.clone(),
    };
    let previous = &deployment.status;
    let progressed = previous.template_hash != status.template_hash
        || previous.updated_replicas != status.updated_replicas
        || previous.ready_replicas != status.ready_replicas
        || previous.progressed_at.is_none();
    if progressed {
        status.progressed_at = Some(now_rfc3339());
    }
    let replicas = crate::autoscaler::wanted_replicas(deployment);
    let complete = status.updated_replicas == replicas
        && status.ready_replicas >= replicas
        && status.replicas == replicas;
    let waited = status.progressed_at.as_deref().and_then(reef_api::age);
    let deadline = deployment.spec.strategy.progress_deadline;
    if !complete && waited.is_some_and(|w| w > deadline.0) {
        let unready_new: Vec<String> = live
            .iter()
            .filter(|p| is_current(p) && !p.status.ready)
            .map(|p| match (&p.status.reason, &p.status.last_error) {
                (_, Some(error)) => format!("{} is {}: {error}", p.metadata.name, p.status.phase),
                (Some(reason), None) => {
                    format!("{} is {} ({reason})", p.metadata.name, p.status.phase)
                }
                (None, None) => format!("{} is {} and not ready", p.metadata.name, p.status.phase),
            })
            .collect();
        status.stuck = Some(format!(
            "rollout stuck: {}/{replicas} pods of template {hash} ready, no progress for {deadline}; old pods keep serving{}",
            status.updated_replicas.min(status.ready_replicas),
            if unready_new.is_empty() { String::new() } else { format!("; {}", unready_new.join("; ")) }
        ));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn deployment(replicas: u32, surge: u32, unavailable: u32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d1"},
            "spec": {"replicas": replicas, "strategy": {"max_surge": surge, "max_unavailable": unavailable},
                     "template": {"component": DIGEST}}
        }))
        .expect("deployment")
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {TEMPLATE_HASH_LABEL: hash},
                         "created_at": format!("2026-01-01T00:00:0{}Z", name.len() % 10)},
            "spec": {"component": DIGEST},
            "status": {"phase": if ready {"Running"} else {"Pending"}, "ready": ready}
        }))
        .expect("pod")
    }

    #[test]
    fn fresh_deployment_creates_all_replicas_within_surge_budget() {
        let d = deployment(3, 1, 0);
        let p = plan(&d, "h1", &[], &HashSet::new());
        assert_eq!(
            p,
            Plan {
                create: 3,
                delete: vec![]
            }
        );
    }

    #[test]
    fn rolling_update_surges_one_and_keeps_availability() {
        let d = deployment(2, 1, 0);
        let old = [pod("a", "old", true), pod("b", "old", true)];
        let refs: Vec<&Pod> = old.iter().collect();
        let p = plan(&d, "new", &refs, &HashSet::new());
        assert_eq!(p.create, 1, "{p:?}");
        assert!(
            p.delete.is_empty(),
            "no old pod may go before a new one is ready: {p:?}"
        );

        // One new pod ready: one old may go and, in the same transaction, the
        // next new pod takes its place within the surge budget.
        let pods = [
            pod("a", "old", true),
            pod("b", "old", true),
            pod("c", "new", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&d, "new", &refs, &HashSet::new());
        assert_eq!(p.delete.len(), 1, "{p:?}");
        assert_eq!(p.create, 1, "{p:?}");

        // Both new ready: the last old goes.
        let pods = [
            pod("b", "old", true),
            pod("c", "new", true),
            pod("d", "new", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&d, "new", &refs, &HashSet::new());
        assert_eq!(
            p,
            Plan {
                create: 0,
                delete: vec!["b".into()]
            }
        );
    }

    #[test]
    fn not_ready_old_pods_go_at_once() {
        let d = deployment(2, 1, 0);
        let pods = [pod("a", "old", false), pod("b", "old", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&d, "new", &refs, &HashSet::new());
        assert_eq!(p.delete.len(), 2, "{p:?}");
    }

    #[test]
    fn scale_down_removes_unready_first() {
        let d = deployment(1, 1, 0);
        let pods = [pod("a", "h", true), pod("b", "h", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&d, "h", &refs, &HashSet::new());
        assert_eq!(
            p,
            Plan {
                create: 0,
                delete: vec!["b".into()]
            }
        );
    }

    #[test]
    fn failed_pods_stay_without_churn() {
        let d = deployment(2, 1, 0);
        let mut broken = [pod("a", "h", false), pod("b", "h", false)];
        for p in &mut broken {
            p.status.phase = Phase::Failed;
        }
        let refs: Vec<&Pod> = broken.iter().collect();
        assert_eq!(plan(&d, "h", &refs, &HashSet::new()), Plan::default());
        // A fixed template replaces them.
        let p = plan(&d, "fixed", &refs, &HashSet::new());
        assert_eq!((p.create, p.delete.len()), (2, 2), "{p:?}");
    }

    #[test]
    fn pods_on_a_draining_node_move_new_first() {
        let d = deployment(2, 1, 0);
        let mut pods = [pod("a", "h", true), pod("b", "h", true)];
        pods[0].spec.node = Some("n1".into());
        pods[1].spec.node = Some("n2".into());
        let refs: Vec<&Pod> = pods.iter().collect();
        let draining: HashSet<String> = ["n1".to_string()].into();
        let p = plan(&d, "h", &refs, &draining);
        assert_eq!(
            p,
            Plan {
                create: 1,
                delete: vec![]
            },
            "a replacement first, nothing deleted yet"
        );
    }

    #[test]
    fn lost_pods_are_replaced_at_once() {
        let d = deployment(2, 1, 0);
        let mut pods = [pod("a", "h", true), pod("b", "h", true)];
        pods[0].status.phase = Phase::Failed;
        pods[0].status.reason = Some(REASON_NODE_LOST.into());
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&d, "h", &refs, &HashSet::new());
        assert_eq!(
            p,
            Plan {
                create: 1,
                delete: vec!["a".into()]
            }
        );
    }

    #[test]
    fn steady_state_does_nothing() {
        let d = deployment(2, 1, 0);
        let pods = [pod("a", "h", true), pod("b", "h", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&d, "h", &refs, &HashSet::new()), Plan::default());
    }
}
