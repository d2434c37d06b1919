//! Controllers (leader only): each closes one gap between desired and actual state,
//! level-triggered and idempotent, writing through the registry with
//! compare-and-swap so a deposed leader's late write changes nothing.

pub mod deployment;
pub mod endpoints;
pub mod gc;

use crate::reconcile;
use crate::registry::Registry;
use reef_api::Kind;
use std::time::Duration;

/// Starts every controller loop on the current tokio runtime.
pub fn spawn_all(registry: &Registry) -> Vec<tokio::task::JoinHandle<()>> {
    let r = registry.clone();
    let deployments = tokio::spawn(async move {
        let pass_registry = r.clone();
        reconcile::run(
            "deployments",
            r,
            &[Kind::Deployment, Kind::Pod],
            Duration::from_secs(10),
            || {
                let registry = pass_registry.clone();
                async move { deployment::reconcile_all(&registry).await }
            },
        )
        .await
    });
    let r = registry.clone();
    let endpoints = tokio::spawn(async move {
        let pass_registry = r.clone();
        reconcile::run(
            "endpoints",
            r,
            &[Kind::Service, Kind::Pod, Kind::Node],
            Duration::from_secs(10),
            || {
                let registry = pass_registry.clone();
                async move { endpoints::reconcile_all(&registry).await }
            },
        )
        .await
    });
    let r = registry.clone();
    let gc = tokio::spawn(async move {
        let pass_registry = r.clone();
        reconcile::run(
            "gc",
            r,
            &[Kind::Deployment],
            Duration::from_secs(30),
            || {
                let registry = pass_registry.clone();
                async move { gc::reconcile_all(&registry).await }
            },
        )
        .await
    });
    vec![deployments, endpoints, gc]
}
