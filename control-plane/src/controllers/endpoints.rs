//! Service → endpoints: the ready, running pods its selector matches, with the
//! address of the node proxy that can reach each; and the autoscaled
//! deployments behind it, which proxies hold requests for while they have
//! no ready pod.

use crate::reconcile::Retries;
use crate::registry::{Registry, RegistryError, Result};
use reef_api::*;
use std::collections::HashMap;
use std::sync::Arc;

/// The endpoints a service should have, sorted so equal sets compare equal.
pub fn endpoints_for(
    service: &Service,
    pods: &[Arc<Pod>],
    node_addresses: &HashMap<String, String>,
) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = pods
        .iter()
        .filter(|p| p.metadata.namespace == service.metadata.namespace)
        .filter(|p| selects(service, &p.metadata.labels))
        .filter(|p| p.status.phase == Phase::Running && p.status.ready)
        .filter_map(|p| {
            let node = p.spec.node.clone()?;
            Some(Endpoint {
                pod: p.metadata.name.clone(),
                address: node_addresses.get(&node).cloned().unwrap_or_default(),
                node,
                deployment: p
                    .metadata
                    .owner
                    .as_ref()
                    .filter(|o| o.kind == Kind::Deployment)
                    .map(|o| o.name.clone())
                    .unwrap_or_default(),
            })
        })
        .collect();
    endpoints.sort();
    endpoints
}

fn selects(service: &Service, labels: &Labels) -> bool {
    service
        .spec
        .selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The autoscaled deployments whose pods the service selects, sorted.
pub fn scalable_for(service: &Service, deployments: &[Arc<Deployment>]) -> Vec<ScaleTarget> {
    let mut targets: Vec<ScaleTarget> = deployments
        .iter()
        .filter(|d| d.metadata.namespace == service.metadata.namespace)
        .filter(|d| selects(service, &d.metadata.labels))
        .filter_map(|d| {
            let auto = d.spec.autoscale.as_ref()?;
            Some(ScaleTarget {
                deployment: d.metadata.name.clone(),
                concurrency: auto.concurrency,
                timeout: d.spec.template.timeout,
            })
        })
        .collect();
    targets.sort();
    targets
}

/// What of a deployment a service's status depends on.
pub fn deployment_projection(deployment: &RawObject) -> serde_json::Value {
    serde_json::json!([
        deployment.metadata.labels,
        deployment.spec.get("autoscale"),
        deployment
            .spec
            .get("template")
            .and_then(|t| t.get("timeout")),
    ])
}

/// What of a node its endpoints depend on: the address (not its lease).
pub fn node_projection(node: &RawObject) -> serde_json::Value {
    node.spec.get("address").cloned().unwrap_or_default()
}

pub async fn reconcile_all(registry: &Registry, retries: &Retries) -> Result<()> {
    let services: Vec<Arc<Service>> = registry.list_cached(Kind::Service)?;
    if services.is_empty() {
        return Ok(());
    }
    let pods: Vec<Arc<Pod>> = registry.list_cached(Kind::Pod)?;
    let nodes: Vec<Arc<Node>> = registry.list_cached(Kind::Node)?;
    let deployments: Vec<Arc<Deployment>> = registry.list_cached(Kind::Deployment)?;
    let addresses: HashMap<String, String> = nodes
        .iter()
        .map(|n| (n.metadata.name.clone(), n.spec.address.clone()))
        .collect();
    for service in &services {
        let key = format!("{}/{}", service.namespace(), service.metadata.name);
        if !retries.due(&key) {
            continue;
        }
        let status = ServiceStatus {
            endpoints: endpoints_for(service, &pods, &addresses),
            scalable: scalable_for(service, &deployments),
        };
        if status == service.status {
            continue;
        }
        let status = serde_json::to_value(status)?;
        let result = registry
            .put_status(
                Kind::Service,
                service.metadata.namespace.as_deref(),
                &service.metadata.name,
                status,
                Some(service.metadata.resource_version),
            )
            .await;
        let outcome = match result {
            Ok(_) | Err(RegistryError::Conflict(_) | RegistryError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        retries.record("endpoints", &key, outcome);
    }
    Ok(())
}
