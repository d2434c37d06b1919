//! The cached lists on a real single-member store: each must equal a fresh
//! scan after puts, updates, deletes, a watch cut off for falling behind, and
//! an object that does not decode.

use super::{key, Precondition, Registry};
use crate::store::{Op, Txn};
use reef_api::{Kind, RawObject, Service, ServiceSpec, ServiceStatus};
use serde_json::json;
use std::sync::Arc;

fn service(name: &str, path: &str) -> RawObject {
    serde_json::from_value(json!({
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "x"}, "path": path},
    }))
    .expect("service")
}

async fn registry(dir: &std::path::Path) -> anyhow::Result<Registry> {
    super::single_member(dir).await
}

/// The cached list beside a scan of the store, both by value.
fn both(registry: &Registry) -> anyhow::Result<(Vec<Service>, Vec<Service>)> {
    let cached: Vec<Arc<Service>> = registry.list_cached(Kind::Service)?;
    let cached = cached.iter().map(|s| (**s).clone()).collect();
    let scanned = registry.list_typed::<ServiceSpec, ServiceStatus>(Kind::Service, None)?;
    Ok((cached, scanned))
}

/// Writes Services straight into the store, past admission, as one transaction.
async fn write_raw(registry: &Registry, services: &[RawObject]) -> anyhow::Result<()> {
    let ops = services
        .iter()
        .map(|s| {
            Ok(Op::Put {
                key: key(Kind::Service, Some("default"), &s.metadata.name),
                value: serde_json::to_vec(s)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    registry
        .store()
        .txn(Txn {
            checks: vec![],
            ops,
        })
        .await?;
    Ok(())
}

fn names(services: &[Service]) -> Vec<&str> {
    services.iter().map(|s| s.metadata.name.as_str()).collect()
}

#[tokio::test]
async fn a_cached_list_follows_puts_updates_and_deletes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = registry(dir.path()).await?;
    let (cached, _) = both(&registry)?;
    assert!(cached.is_empty());

    registry
        .put(&service("a", "/a"), Precondition::None)
        .await?;
    registry
        .put(&service("b", "/b"), Precondition::None)
        .await?;
    let (cached, scanned) = both(&registry)?;
    assert_eq!(names(&cached), ["a", "b"]);
    assert_eq!(cached, scanned, "same objects, same resource versions");

    registry
        .put(&service("a", "/a2"), Precondition::None)
        .await?;
    registry
        .delete(Kind::Service, Some("default"), "b", None)
        .await?;
    let (cached, scanned) = both(&registry)?;
    assert_eq!(names(&cached), ["a"]);
    assert_eq!(cached[0].spec.path, "/a2");
    assert_eq!(cached, scanned);
    registry.store().shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_informer_cut_off_for_falling_behind_relists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = registry(dir.path()).await?;
    both(&registry)?;
    // More changes than a watcher may fall behind by, unread: the store cuts
    // the informer's watch off, and the next read must notice and relist.
    for batch in 0..2 {
        let services: Vec<RawObject> = (0..700)
            .map(|i| service(&format!("s{batch}-{i:03}"), "/"))
            .collect();
        write_raw(&registry, &services).await?;
    }
    let (cached, scanned) = both(&registry)?;
    assert_eq!(cached.len(), 1400);
    assert_eq!(cached, scanned);
    registry.store().shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_undecodable_object_is_left_out_not_fatal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = registry(dir.path()).await?;
    registry
        .put(&service("good", "/"), Precondition::None)
        .await?;
    both(&registry)?;
    let mut broken = service("broken", "/");
    broken.spec = json!({"selector": "not a map"});
    write_raw(&registry, &[broken]).await?;
    let (cached, scanned) = both(&registry)?;
    assert_eq!(names(&cached), ["good"]);
    assert_eq!(cached, scanned);
    registry.store().shutdown().await?;
    Ok(())
}
