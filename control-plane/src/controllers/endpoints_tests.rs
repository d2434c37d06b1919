//! The endpoints loop reconciles what a change can affect: a change to one
//! Service reconciles that Service, a pod's change the Services of its
//! namespace, a resync all of them. On a real single-member store.

use super::endpoints;
use crate::reconcile::{Changed, Retries};
use crate::registry::{key, Registry};
use crate::store::{Op, Store, StoreConfig, Txn};
use reef_api::{Kind, Service};
use serde_json::{json, Value};
use std::sync::Arc;

async fn put_raw(store: &Store, kind: Kind, namespace: Option<&str>, object: Value) {
    let name = object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let txn = Txn {
        checks: vec![],
        ops: vec![Op::Put {
            key: key(kind, namespace, &name),
            value: serde_json::to_vec(&object).expect("json"),
        }],
    };
    store.txn(txn).await.expect("stored");
}

fn service(namespace: &str, name: &str) -> Value {
    json!({
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": "x"}},
    })
}

fn endpoints_of(registry: &Registry, namespace: &str, name: &str) -> Vec<String> {
    let found: Option<Arc<Service>> = registry
        .get_cached(Kind::Service, Some(namespace), name)
        .expect("read");
    let service = found.expect("the service exists");
    service
        .status
        .endpoints
        .iter()
        .map(|e| format!("{}@{}", e.pod, e.address))
        .collect()
}

#[tokio::test]
async fn a_pass_reconciles_the_services_a_change_can_affect() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = StoreConfig::new(1, dir.path().join("m1"), "127.0.0.1:9", "s");
    let store = Store::open(config).await?;
    store.initialize_single().await?;
    let registry = Registry::new(store.clone());
    let retries = Retries::default();

    put_raw(&store, Kind::Service, Some("a"), service("a", "one")).await;
    put_raw(&store, Kind::Service, Some("a"), service("a", "two")).await;
    put_raw(&store, Kind::Service, Some("b"), service("b", "three")).await;
    let resources = json!({"cpu": "1", "memory": "1Gi", "pods": 10});
    let node = json!({
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"address": "10.0.0.1:7000", "capacity": resources, "allocatable": resources},
    });
    put_raw(&store, Kind::Node, None, node).await;
    for namespace in ["a", "b"] {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": format!("p-{namespace}"), "namespace": namespace, "labels": {"app": "x"}},
            "spec": {"component": "sha256:00", "node": "n1"},
            "status": {"phase": "Running", "ready": true},
        });
        put_raw(&store, Kind::Pod, Some(namespace), pod).await;
    }

    // One Service named: only it is reconciled.
    let mut changed = Changed::default();
    changed.objects.insert(("a".into(), "one".into()));
    endpoints::reconcile(&registry, &retries, &changed).await?;
    assert_eq!(endpoints_of(&registry, "a", "one"), ["p-a@10.0.0.1:7000"]);
    assert!(endpoints_of(&registry, "a", "two").is_empty());
    assert!(endpoints_of(&registry, "b", "three").is_empty());

    // A namespace: all of its Services, no other.
    let mut changed = Changed::default();
    changed.namespaces.insert("a".into());
    endpoints::reconcile(&registry, &retries, &changed).await?;
    assert_eq!(endpoints_of(&registry, "a", "two"), ["p-a@10.0.0.1:7000"]);
    assert!(endpoints_of(&registry, "b", "three").is_empty());

    // Nothing changed: nothing is written.
    let before = store.revision();
    endpoints::reconcile(&registry, &retries, &Changed::default()).await?;
    assert_eq!(store.revision(), before);

    // Everything: the rest, with pods of their own namespace only.
    let everything = Changed {
        all: true,
        ..Changed::default()
    };
    endpoints::reconcile(&registry, &retries, &everything).await?;
    assert_eq!(endpoints_of(&registry, "b", "three"), ["p-b@10.0.0.1:7000"]);
    Ok(())
}
