//! One object the controllers cannot reconcile must not stop the others: on a
//! real single-member store, a deployment that slipped past admission (stored
//! before today's rules: its pods would carry 65 labels) beside a good one.

use super::deployment;
use crate::reconcile::Retries;
use crate::registry::{key, Precondition};
use crate::store::{Op, Txn};
use reef_api::{Kind, RawObject};
use serde_json::json;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn deployment_object(name: &str, labels: serde_json::Value) -> RawObject {
    serde_json::from_value(json!({
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"replicas": 2, "template": {"component": DIGEST}},
    }))
    .expect("deployment")
}

#[tokio::test]
async fn a_broken_deployment_does_not_stop_the_others() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = crate::registry::single_member(dir.path()).await?;
    let store = registry.store().clone();

    // Admission refuses it now...
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..64).map(|i| (format!("l{i}"), json!("v"))).collect();
    let bad = deployment_object("aaa-bad", serde_json::Value::Object(labels));
    let refused = registry.put(&bad, Precondition::None).await;
    assert!(
        refused.is_err(),
        "64 labels leave no room for the pods' own"
    );
    // ...but it was stored by an older version (written raw), and sorts first.
    store
        .txn(Txn {
            checks: vec![],
            ops: vec![Op::Put {
                key: key(Kind::Deployment, Some("default"), "aaa-bad"),
                value: serde_json::to_vec(&bad)?,
            }],
        })
        .await?;
    registry
        .put(
            &deployment_object("good", json!({"app": "good"})),
            Precondition::None,
        )
        .await?;

    let retries = Retries::default();
    deployment::reconcile_all(&registry, &retries).await?;
    let (pods, _) = registry.list(Kind::Pod, Some("default"))?;
    let owners: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.owner.as_ref().map(|o| o.name.clone()))
        .collect();
    assert_eq!(owners, ["good", "good"], "the good deployment got its pods");
    assert!(
        !retries.due("default/aaa-bad"),
        "the broken one waits out a back-off"
    );
    assert!(retries.due("default/good"));
    store.shutdown().await?;
    Ok(())
}
