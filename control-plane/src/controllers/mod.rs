//! Controllers (leader only): each closes one gap between desired and actual state,
//! level-triggered and idempotent, writing through the registry with
//! compare-and-swap so a deposed leader's late write changes nothing.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod nodes;

use crate::reconcile;
use crate::registry::Registry;
use reef_api::Kind;
use std::time::Duration;

/// A controller's pass over the whole cluster.
type Pass = fn(Registry) -> futures::future::BoxFuture<'static, crate::registry::Result<()>>;

fn spawn(
    name: &'static str,
    registry: &Registry,
    kinds: &'static [Kind],
    resync: Duration,
    pass: Pass,
) -> tokio::task::JoinHandle<()> {
    let registry = registry.clone();
    tokio::spawn(async move {
        let for_pass = registry.clone();
        reconcile::run(name, registry, kinds, resync, || pass(for_pass.clone())).await
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
        // Leases lapse without any event: check every second as well.
        reconcile::run(
            "nodes",
            lifecycle_registry,
            &[Kind::Node],
            Duration::from_secs(1),
            || {
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
            &[Kind::Deployment, Kind::Pod],
            Duration::from_secs(10),
            |r| async move { deployment::reconcile_all(&r).await }.boxed(),
        ),
        spawn(
            "endpoints",
            registry,
            &[Kind::Service, Kind::Pod, Kind::Node],
            Duration::from_secs(10),
            |r| async move { endpoints::reconcile_all(&r).await }.boxed(),
        ),
        spawn(
            "gc",
            registry,
            &[Kind::Deployment, Kind::Pod],
            Duration::from_secs(30),
            |r| async move { gc::reconcile_all(&r).await }.boxed(),
        ),
    ]
}
