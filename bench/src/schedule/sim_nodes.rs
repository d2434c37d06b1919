//! The simulated nodes: Node objects registered through the API with no agent
//! behind them, and their leases renewed as agents would.

use super::control_plane::{put, ControlPlane};
use super::{LEASE_PERIOD, NODE_CPU, NODE_MEMORY, NODE_PODS};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn node_name(i: usize) -> String {
    format!("sim-{i:04}")
}

pub(super) fn ready_status() -> Value {
    json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "Simulated"}],
        "lease": reef_api::now_rfc3339(),
    })
}

/// Creates every node object and marks it Ready with a fresh lease, 32 at a time.
pub(super) async fn register_nodes(
    http: &reqwest::Client,
    cp: &ControlPlane,
    nodes: usize,
) -> anyhow::Result<()> {
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..nodes {
        let permit = limit.clone().acquire_owned().await?;
        let (http, base, token) = (http.clone(), cp.url.clone(), cp.token.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let name = node_name(i);
            let resources = json!({"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS});
            let node = json!({
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {
                    "address": "", "ingress": "",
                    "capacity": resources, "allocatable": resources,
                    "runtimes": ["wasmtime"],
                },
            });
            put(&http, &format!("{base}/api/v1/nodes/{name}"), &token, &node).await?;
            put(
                &http,
                &format!("{base}/api/v1/nodes/{name}/status"),
                &token,
                &ready_status(),
            )
            .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

#[derive(Default)]
pub(super) struct LeaseStats {
    pub(super) ok: u64,
    pub(super) failed: u64,
    /// Longest time between two successful renewals of one node.
    pub(super) max_gap: Duration,
    pub(super) last_ok: HashMap<usize, Instant>,
}

/// Renews every node's lease once per `LEASE_PERIOD`, spread evenly over the period
/// (as independent agents would), until aborted.
pub(super) async fn renew_leases(
    http: reqwest::Client,
    base: String,
    token: String,
    nodes: usize,
    stats: Arc<Mutex<LeaseStats>>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(LEASE_PERIOD / nodes.max(1) as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let registered = Instant::now();
    {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..nodes {
            s.last_ok.insert(i, registered);
        }
    }
    for i in (0..nodes).cycle() {
        tick.tick().await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (http, base, token, stats) = (http.clone(), base.clone(), token.clone(), stats.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let url = format!("{base}/api/v1/nodes/{}/status", node_name(i));
            let ok = put(&http, &url, &token, &ready_status()).await.is_ok();
            let now = Instant::now();
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                s.ok += 1;
                if let Some(last) = s.last_ok.insert(i, now) {
                    s.max_gap = s.max_gap.max(now - last);
                }
            } else {
                s.failed += 1;
            }
        });
    }
}
