//! Service → endpoints: the ready, running pods its selector matches, with the
//! address of the node proxy that can reach each; and the autoscaled
//! deployments behind it, which proxies hold requests for while they have
//! no ready pod.

use crate::reconcile::{Changed, Retries};
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

/// Reconciles the Services a change since the last pass can have affected
/// (every one after a resync or a node's change), and those whose last
/// reconcile failed. With ten thousand Services under a stream of writes, a
/// pass over all of them per write was a third of the leader's CPU.
pub async fn reconcile(registry: &Registry, retries: &Retries, changed: &Changed) -> Result<()> {
    let services = affected(registry, retries, changed)?;
    if services.is_empty() {
        return Ok(());
    }
    // Read once per namespace that has a Service to reconcile.
    let mut pods_in: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    let mut deployments_in: HashMap<String, Vec<Arc<Deployment>>> = HashMap::new();
    for service in &services {
        let namespace = service.namespace();
        if !pods_in.contains_key(namespace) {
            pods_in.insert(
                namespace.to_string(),
                registry.list_cached_in(Kind::Pod, namespace)?,
            );
            deployments_in.insert(
                namespace.to_string(),
                registry.list_cached_in(Kind::Deployment, namespace)?,
            );
        }
    }
    let mut addresses: HashMap<String, String> = HashMap::new();
    for node in pods_in
        .values()
        .flatten()
        .filter_map(|p| p.spec.node.as_deref())
    {
        if !addresses.contains_key(node) {
            let found: Option<Arc<Node>> = registry.get_cached(Kind::Node, None, node)?;
            let address = found.map(|n| n.spec.address.clone()).unwrap_or_default();
            addresses.insert(node.to_string(), address);
        }
    }
    let none = Vec::new();
    for service in &services {
        let pods = pods_in.get(service.namespace()).unwrap_or(&none);
        let deployments = deployments_in.get(service.namespace());
        let key = format!("{}/{}", service.namespace(), service.metadata.name);
        if !retries.due(&key) {
            continue;
        }
        let status = ServiceStatus {
            endpoints: endpoints_for(service, pods, &addresses),
            scalable: scalable_for(service, deployments.map_or(&[], Vec::as_slice)),
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

/// The Services to reconcile: all of them, or those `changed` names directly
/// or by namespace, and those whose last reconcile failed.
fn affected(
    registry: &Registry,
    retries: &Retries,
    changed: &Changed,
) -> Result<Vec<Arc<Service>>> {
    if changed.all {
        return registry.list_cached(Kind::Service);
    }
    let mut services = Vec::new();
    for namespace in &changed.namespaces {
        services.extend(registry.list_cached_in(Kind::Service, namespace)?);
    }
    let failing = retries.failing();
    let failing = failing.iter().filter_map(|key| key.split_once('/'));
    let named = changed
        .objects
        .iter()
        .map(|(ns, name)| (ns.as_str(), name.as_str()));
    let mut singles: Vec<(&str, &str)> = named
        .chain(failing)
        .filter(|(ns, _)| !changed.namespaces.contains(*ns))
        .collect();
    singles.sort_unstable();
    singles.dedup();
    for (namespace, name) in singles {
        if let Some(service) = registry.get_cached(Kind::Service, Some(namespace), name)? {
            services.push(service);
        }
    }
    Ok(services)
}
