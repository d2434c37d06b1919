//! Service → endpoints: the ready, running pods its selector matches, with the
//! address of the node proxy that can reach each.

use crate::reconcile::Retries;
use crate::registry::{Registry, RegistryError, Result};
use reef_api::*;
use std::collections::HashMap;

/// The endpoints a service should have, sorted so equal sets compare equal.
pub fn endpoints_for(
    service: &Service,
    pods: &[Pod],
    node_addresses: &HashMap<String, String>,
) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = pods
        .iter()
        .filter(|p| p.metadata.namespace == service.metadata.namespace)
        .filter(|p| {
            service
                .spec
                .selector
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })
        .filter(|p| p.status.phase == Phase::Running && p.status.ready)
        .filter_map(|p| {
            let node = p.spec.node.clone()?;
            Some(Endpoint {
                pod: p.metadata.name.clone(),
                address: node_addresses.get(&node).cloned().unwrap_or_default(),
                node,
            })
        })
        .collect();
    endpoints.sort();
    endpoints
}

/// What of a node its endpoints depend on: the address (not its lease).
pub fn node_projection(node: &RawObject) -> serde_json::Value {
    node.spec.get("address").cloned().unwrap_or_default()
}

pub async fn reconcile_all(registry: &Registry, retries: &Retries) -> Result<()> {
    let services: Vec<Service> = registry.list_typed(Kind::Service, None)?;
    if services.is_empty() {
        return Ok(());
    }
    let pods: Vec<Pod> = registry.list_typed(Kind::Pod, None)?;
    let nodes: Vec<Node> = registry.list_typed(Kind::Node, None)?;
    let addresses: HashMap<String, String> = nodes
        .into_iter()
        .map(|n| (n.metadata.name, n.spec.address))
        .collect();
    for service in &services {
        let key = format!("{}/{}", service.namespace(), service.metadata.name);
        if !retries.due(&key) {
            continue;
        }
        let endpoints = endpoints_for(service, &pods, &addresses);
        if endpoints == service.status.endpoints {
            continue;
        }
        let status = serde_json::to_value(ServiceStatus { endpoints })?;
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
