//! Garbage collection: objects whose owner no longer exists are deleted.

use crate::registry::{Registry, RegistryError, Result};
use reef_api::*;
use std::collections::HashSet;
use std::sync::Arc;

/// What of a pod this controller looks at: its owner (status churn is not).
pub fn pod_projection(pod: &RawObject) -> serde_json::Value {
    serde_json::to_value(&pod.metadata.owner).unwrap_or_default()
}

pub async fn reconcile_all(registry: &Registry) -> Result<()> {
    let deployments: Vec<Arc<RawObject>> = registry.list_cached(Kind::Deployment)?;
    let owners: HashSet<&str> = deployments
        .iter()
        .map(|d| d.metadata.uid.as_str())
        .collect();
    let pods: Vec<Arc<RawObject>> = registry.list_cached(Kind::Pod)?;
    for pod in pods {
        let Some(owner) = &pod.metadata.owner else {
            continue;
        };
        if owner.kind == Kind::Deployment && !owners.contains(owner.uid.as_str()) {
            let result = registry
                .delete(
                    Kind::Pod,
                    pod.metadata.namespace.as_deref(),
                    &pod.metadata.name,
                    Some(pod.metadata.resource_version),
                )
                .await;
            match result {
                Ok(_) | Err(RegistryError::NotFound { .. } | RegistryError::Conflict(_)) => {}
                // The others still go; this one is tried again next pass.
                Err(e) => tracing::warn!(pod = %pod.metadata.name, "orphan not deleted: {e}"),
            }
        }
    }
    Ok(())
}
