//! Controllers (leader only): each closes one gap between desired and actual state,
//! level-triggered and idempotent, writing through the registry with
//! compare-and-swap so a deposed leader's late write changes nothing.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod nodes;

#[cfg(test)]
mod endpoints_tests;
#[cfg(test)]
mod isolation_tests;

use crate::reconcile::{self, Changed, Reach, Retries, Trigger};
use crate::registry::Registry;
use reef_api::Kind;
use std::time::Duration;

/// What of a pod the deployment and endpoints controllers act on: its labels
/// (template, selectors), where it runs, whether it serves, and why it ended;
/// not restart counts, errors or timestamps.
pub fn pod_projection(pod: &reef_api::RawObject) -> serde_json::Value {
    serde_json::json!([
        pod.metadata.labels,
        pod.spec.get("node"),
        pod.status.get("phase"),
        pod.status.get("ready"),
        pod.status.get("reason"),
    ])
}

/// A controller's pass, with the loop's per-object back-offs and what
/// changed since its last pass.
type Pass = fn(
    Registry,
    Retries,
    Changed,
) -> futures::future::BoxFuture<'static, crate::registry::Result<()>>;

fn spawn(
    name: &'static str,
    registry: &Registry,
    triggers: Vec<Trigger>,
    resync: Duration,
    pass: Pass,
) -> tokio::task::JoinHandle<()> {
    let registry = registry.clone();
    tokio::spawn(async move {
        let for_pass = registry.clone();
        let retries = Retries::default();
        reconcile::run(name, registry, &triggers, resync, |changed| {
            pass(for_pass.clone(), retries.clone(), changed)
        })
        .await
    })
}

/// Settings of the controllers.
#[derive(Clone, Copy, Debug)]
pub struct ControllerConfig {
    /// How long a node's lease may go unrenewed before it is NotReady and its
    /// pods are replaced elsewhere.
    pub node_grace: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            node_grace: Duration::from_secs(40),
        }
    }
}

/// Starts every controller loop on the current tokio runtime.
pub fn spawn_all(
    registry: &Registry,
    config: ControllerConfig,
) -> Vec<tokio::task::JoinHandle<()>> {
    use futures::FutureExt;
    let lifecycle = std::sync::Arc::new(nodes::NodeLifecycle::new(config.node_grace));
    let lifecycle_registry = registry.clone();
    let node_loop = tokio::spawn(async move {
        let for_pass = lifecycle_registry.clone();
        // Leases lapse without any event, and renewals change nothing to act
        // on: the timer drives this loop; new and changed nodes wake it too.
        reconcile::run(
            "nodes",
            lifecycle_registry,
            &[Trigger::on(Kind::Node, nodes::lifecycle_projection)],
            Duration::from_secs(1),
            |_| {
                let (lifecycle, registry) = (lifecycle.clone(), for_pass.clone());
                async move { lifecycle.pass(&registry).await }
            },
        )
        .await
    });
    vec![
        node_loop,
        spawn(
            "deployments",
            registry,
            vec![
                Trigger::any(Kind::Deployment),
                Trigger::on(Kind::Pod, pod_projection),
            ],
            Duration::from_secs(10),
            |r, retries, _| async move { deployment::reconcile_all(&r, &retries).await }.boxed(),
        ),
        spawn(
            "endpoints",
            registry,
            vec![
                Trigger::any(Kind::Service).reaching(Reach::Object),
                Trigger::on(Kind::Pod, pod_projection).reaching(Reach::Namespace),
                Trigger::on(Kind::Node, endpoints::node_projection),
                Trigger::on(Kind::Deployment, endpoints::deployment_projection)
                    .reaching(Reach::Namespace),
            ],
            Duration::from_secs(10),
            |r, retries, changed| {
                async move { endpoints::reconcile(&r, &retries, &changed).await }.boxed()
            },
        ),
        spawn(
            "gc",
            registry,
            vec![
                Trigger::any(Kind::Deployment),
                Trigger::on(Kind::Pod, gc::pod_projection),
            ],
            Duration::from_secs(30),
            |r, _, _| async move { gc::reconcile_all(&r).await }.boxed(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use reef_api::{Kind, Metadata, RawObject};
    use serde_json::json;

    fn node(lease: &str, ready: &str, address: &str) -> RawObject {
        RawObject {
            kind: Kind::Node,
            metadata: Metadata {
                name: "n".into(),
                ..Metadata::default()
            },
            spec: json!({"address": address, "unschedulable": false}),
            status: json!({
                "conditions": [{"type": "Ready", "status": ready}],
                "lease": lease,
            }),
        }
    }

    fn pod(node: Option<&str>, phase: &str, restarts: u32) -> RawObject {
        RawObject {
            kind: Kind::Pod,
            metadata: Metadata {
                name: "p".into(),
                ..Metadata::default()
            },
            spec: json!({"component": "sha256:00", "node": node}),
            status: json!({"phase": phase, "ready": true, "restarts": restarts}),
        }
    }

    #[test]
    fn lease_renewals_wake_no_loop_but_real_changes_do() {
        let renewed = (node("t1", "True", "a"), node("t2", "True", "a"));
        for projection in [
            super::nodes::lifecycle_projection,
            super::endpoints::node_projection,
        ] {
            assert_eq!(projection(&renewed.0), projection(&renewed.1));
        }
        let lifecycle = super::nodes::lifecycle_projection;
        assert_ne!(lifecycle(&renewed.0), lifecycle(&node("t1", "False", "a")));
        let endpoints = super::endpoints::node_projection;
        assert_ne!(endpoints(&renewed.0), endpoints(&node("t1", "True", "b")));
    }

    #[test]
    fn pod_status_churn_is_not_a_change_of_placement_or_ownership() {
        let churn = (pod(Some("n"), "Running", 0), pod(Some("n"), "Running", 3));
        for projection in [super::pod_projection, super::gc::pod_projection] {
            assert_eq!(projection(&churn.0), projection(&churn.1));
        }
        let deployment = super::pod_projection;
        assert_ne!(
            deployment(&churn.0),
            deployment(&pod(Some("n"), "Failed", 0))
        );
        assert_ne!(deployment(&churn.0), deployment(&pod(None, "Running", 0)));
    }
}
