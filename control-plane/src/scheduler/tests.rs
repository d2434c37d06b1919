//! Passes that overlap binds still in flight, on a real single-member store.

use super::{Scheduler, WRITES_IN_FLIGHT};
use crate::registry::{Precondition, Registry};
use reef_api::{Kind, Pod, RawObject};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn object(value: serde_json::Value) -> RawObject {
    serde_json::from_value(value).expect("a valid object")
}

async fn create_pods(registry: &Registry, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let pod = object(json!({
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"component": DIGEST, "cpu": "100m", "memory": "64Mi"},
        }));
        registry.put(&pod, Precondition::None).await?;
    }
    Ok(())
}

/// Bound pods by node, as stored.
fn placements(registry: &Registry) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let pods: Vec<Arc<Pod>> = registry.list_cached(Kind::Pod)?;
    Ok(pods
        .iter()
        .map(|p| (p.metadata.name.clone(), p.spec.node.clone()))
        .collect())
}

#[tokio::test]
async fn a_pass_counts_binds_in_flight_as_placed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = crate::registry::single_member(dir.path()).await?;
    // One node with room for three pods.
    let resources = json!({"cpu": "4", "memory": "8Gi", "pods": 3});
    let node = object(json!({
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"capacity": resources, "allocatable": resources},
    }));
    registry.put(&node, Precondition::None).await?;
    let ready = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    registry
        .put_status(Kind::Node, None, "n1", ready, None)
        .await?;

    let scheduler = Scheduler::new(registry.clone(), Default::default());
    // Every bind waits for a permit: what a pass plans stays in flight.
    let held = scheduler
        .permits
        .clone()
        .acquire_many_owned(WRITES_IN_FLIGHT as u32)
        .await?;
    create_pods(&registry, &["p1", "p2"]).await?;
    scheduler.pass().await?;
    assert_eq!(scheduler.assumed.len(), 2, "both planned, neither written");
    assert!(placements(&registry)?
        .iter()
        .all(|(_, node)| node.is_none()));

    // A second pass must not plan p1 and p2 again, nor give their room away.
    create_pods(&registry, &["p3", "p4", "p5"]).await?;
    scheduler.pass().await?;
    assert_eq!(
        scheduler.assumed.len(),
        3,
        "one more fits beside the two in flight: {:?}",
        scheduler.assumed.snapshot()
    );

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while scheduler.assumed.len() > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "binds still in flight after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let placed = placements(&registry)?;
    let bound: Vec<&str> = placed
        .iter()
        .filter(|(_, node)| node.as_deref() == Some("n1"))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        bound,
        ["p1", "p2", "p3"],
        "the oldest three, once each: {placed:?}"
    );

    // With the bound pods now in the store, a pass finds no room for the rest.
    scheduler.pass().await?;
    assert_eq!(scheduler.assumed.len(), 0);
    registry.store().shutdown().await?;
    Ok(())
}
