//! The autoscaler (leader only): turns the load node proxies report
//! ([`board`]) into each autoscaled deployment's desired replicas
//! ([`decide`]), written to `status.autoscale` with the numbers that caused
//! it; the deployment controller makes the pods. It runs on a short tick and
//! at once when a proxy holds requests for a deployment with no ready pod.

pub mod board;
pub mod decide;

use crate::events::{self, Occurrence};
use crate::registry::{Registry, RegistryError, Result};
use board::{DeploymentKey, LoadBoard};
use decide::{Observation, Scaler};
use reef_api::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the autoscaler samples the board: the panic window (6 s by
/// default) holds a dozen samples or more.
const TICK: Duration = Duration::from_millis(250);

/// The replicas an autoscaled deployment runs: the autoscaler's last decision,
/// or [`Autoscale::initial`] before it made one; `spec.replicas` otherwise.
pub fn wanted_replicas(deployment: &Deployment) -> u32 {
    reef_api::autoscale::wanted_replicas(&deployment.spec, &deployment.status)
}

/// Runs the autoscaler while this member leads; its memory of each
/// deployment starts afresh whenever it takes over.
pub async fn run(registry: Registry, board: LoadBoard) {
    let mut scalers: HashMap<DeploymentKey, Scaler> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = board.activation() => {}
        }
        if !registry.store().is_leader() {
            scalers.clear();
            continue;
        }
        if let Err(e) = pass(&registry, &board, &mut scalers).await {
            tracing::warn!("autoscaler pass failed, retrying: {e}");
        }
    }
}

async fn pass(
    registry: &Registry,
    board: &LoadBoard,
    scalers: &mut HashMap<DeploymentKey, Scaler>,
) -> Result<()> {
    let now = Instant::now();
    let all: Vec<Arc<Deployment>> = registry.list_cached(Kind::Deployment)?;
    let deployments: Vec<Arc<Deployment>> = all
        .into_iter()
        .filter(|d| d.spec.autoscale.is_some())
        .collect();
    let loads = board.loads(now);
    let keys: std::collections::HashSet<DeploymentKey> = deployments
        .iter()
        .map(|d| (d.namespace().to_string(), d.metadata.name.clone()))
        .collect();
    scalers.retain(|k, _| keys.contains(k));
    board.retain(|k| keys.contains(k));
    for deployment in deployments {
        let Some(spec) = deployment.spec.autoscale.clone() else {
            continue;
        };
        let key = (
            deployment.namespace().to_string(),
            deployment.metadata.name.clone(),
        );
        let load = loads.get(&key).copied().unwrap_or_default();
        let current = wanted_replicas(&deployment);
        let decision = scalers
            .entry(key)
            .or_insert_with(|| Scaler::new(now))
            .observe(
                &spec,
                Observation {
                    now,
                    demand: load.demand,
                    active_at: load.active_at,
                    ready: deployment.status.ready_replicas,
                    current,
                },
            );
        if decision.desired == current && deployment.status.autoscale.is_some() {
            continue;
        }
        if let Err(e) = scale(registry, (*deployment).clone(), current, &decision).await {
            tracing::warn!("autoscaler: {e}");
        }
    }
    Ok(())
}

/// Writes the decision to the deployment's status (compare-and-swap, once
/// more on a conflict with the deployment controller's own status write).
async fn scale(
    registry: &Registry,
    mut deployment: Deployment,
    current: u32,
    decision: &decide::Decision,
) -> Result<()> {
    let status = AutoscaleStatus {
        desired: decision.desired,
        reason: decision.reason.clone(),
        at: now_rfc3339(),
    };
    for attempt in 0..2 {
        let mut next = deployment.status.clone();
        next.autoscale = Some(status.clone());
        let written = registry
            .put_status(
                Kind::Deployment,
                deployment.metadata.namespace.as_deref(),
                &deployment.metadata.name,
                serde_json::to_value(&next)?,
                Some(deployment.metadata.resource_version),
            )
            .await;
        match written {
            Ok(_) => break,
            Err(RegistryError::Conflict(_)) if attempt == 0 => {
                deployment = registry
                    .get(
                        Kind::Deployment,
                        deployment.metadata.namespace.as_deref(),
                        &deployment.metadata.name,
                    )?
                    .typed()?;
            }
            Err(RegistryError::Conflict(_) | RegistryError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    if decision.desired != current {
        tracing::info!(
            deployment = %format!("{}/{}", deployment.namespace(), deployment.metadata.name),
            from = current,
            to = decision.desired,
            "autoscaled: {}",
            decision.reason
        );
        events::record(
            registry,
            deployment.namespace(),
            ObjectRef {
                kind: Kind::Deployment,
                name: deployment.metadata.name.clone(),
            },
            "Autoscaled",
            &format!("{current} → {} pods: {}", decision.desired, decision.reason),
            Occurrence::Distinct,
        )
        .await?;
    }
    Ok(())
}
