//! Day-2 verbs: cordon, uncordon, drain, scale, rollout status.

use crate::verbs::{connect, not_found};
use crate::{CliResult, Failure};
use reef_api::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Reads an object, changes it, writes it back compare-and-swap; retries on a
/// concurrent change.
async fn update<F>(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    change: F,
) -> Result<RawObject, Failure>
where
    F: Fn(&mut RawObject),
{
    for _ in 0..10 {
        let mut obj = client
            .get(kind, namespace, name)
            .await
            .map_err(|e| not_found(e, kind, name))?;
        change(&mut obj);
        match client.put(&obj, true).await {
            Ok(stored) => return Ok(stored),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Failure::other(format!(
        "error: {} {name:?} keeps changing under us; try again",
        kind.singular()
    )))
}

fn set_node_flags(obj: &mut RawObject, unschedulable: bool, draining: bool) {
    if let Some(spec) = obj.spec.as_object_mut() {
        spec.insert("unschedulable".into(), Value::Bool(unschedulable));
        spec.insert("draining".into(), Value::Bool(draining));
    }
}

pub async fn cordon(node: &str, on: bool) -> CliResult {
    let (client, _) = connect(None)?;
    update(&client, Kind::Node, None, node, |obj| {
        set_node_flags(obj, on, false)
    })
    .await?;
    println!("node/{node} {}", if on { "cordoned" } else { "uncordoned" });
    Ok(())
}

/// Pods bound to `node` that still run or wait to.
async fn pods_on(client: &Client, node: &str) -> Result<Vec<Pod>, Failure> {
    let list = client.list(Kind::Pod, None, &[("node", node)]).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|raw| raw.typed::<PodSpec, PodStatus>().ok())
        .filter(|p| !matches!(p.status.phase, Phase::Succeeded | Phase::Failed))
        .collect())
}

/// Cordons the node and moves its pods elsewhere: deployments start each
/// replacement before its old pod goes (their rollout bounds apply); pods no
/// deployment owns are deleted.
pub async fn drain(node: &str, timeout: Duration) -> CliResult {
    let (client, _) = connect(None)?;
    update(&client, Kind::Node, None, node, |obj| {
        set_node_flags(obj, true, true)
    })
    .await?;
    println!("node/{node} cordoned, draining");
    let deadline = Instant::now() + timeout;
    let mut last = usize::MAX;
    loop {
        let pods = pods_on(&client, node).await?;
        for pod in pods.iter().filter(|p| p.metadata.owner.is_none()) {
            match client
                .delete(Kind::Pod, Some(pod.namespace()), &pod.metadata.name)
                .await
            {
                Ok(_) => println!("pod/{} deleted (no deployment owns it)", pod.metadata.name),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if pods.is_empty() {
            println!("node/{node} drained");
            return Ok(());
        }
        if pods.len() != last {
            println!("{} pod(s) left on node/{node}", pods.len());
            last = pods.len();
        }
        if Instant::now() > deadline {
            return Err(Failure::other(format!(
                "error: node/{node} still has {} pod(s) after {timeout:?}; see `reef describe deployment` for why",
                pods.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn scale(kind: &str, name: &str, replicas: u32, namespace: Option<String>) -> CliResult {
    if Kind::parse(kind) != Some(Kind::Deployment) {
        return Err(Failure::usage(format!(
            "error: only deployments scale, not {kind:?}"
        )));
    }
    let (client, namespace) = connect(namespace)?;
    update(&client, Kind::Deployment, Some(&namespace), name, |obj| {
        if let Some(spec) = obj.spec.as_object_mut() {
            spec.insert("replicas".into(), Value::from(replicas));
        }
    })
    .await?;
    println!("deployment/{name} scaled to {replicas}");
    Ok(())
}

pub async fn rollout_status(
    kind: &str,
    name: &str,
    namespace: Option<String>,
    timeout: Duration,
) -> CliResult {
    if Kind::parse(kind) != Some(Kind::Deployment) {
        return Err(Failure::usage(format!(
            "error: rollouts are of deployments, not {kind:?}"
        )));
    }
    let (client, namespace) = connect(namespace)?;
    await_rollout(&client, &namespace, name, timeout).await
}

/// Follows a deployment's rollout until all replicas are updated and ready,
/// printing progress; fails when the controller reports it stuck or at `timeout`.
pub async fn await_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> CliResult {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let raw = client
            .get(Kind::Deployment, Some(namespace), name)
            .await
            .map_err(|e| not_found(e, Kind::Deployment, name))?;
        let d: Deployment = raw.typed().map_err(|e| Failure::other(e.to_string()))?;
        let observed = d.status.observed_generation >= d.metadata.generation;
        let progress = format!(
            "deployment/{name}: {}/{} ready, {} up to date",
            d.status.ready_replicas, d.spec.replicas, d.status.updated_replicas
        );
        if progress != last {
            println!("{progress}");
            last = progress;
        }
        if observed {
            if let Some(stuck) = &d.status.stuck {
                return Err(Failure::other(format!("error: deployment/{name}: {stuck}")));
            }
            let done = d.status.updated_replicas == d.spec.replicas
                && d.status.ready_replicas >= d.spec.replicas
                && d.status.replicas == d.spec.replicas;
            if done {
                println!("deployment/{name} rolled out");
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::other(format!(
                "error: deployment/{name} did not roll out within {timeout:?}; see `reef describe deployment {name}`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
