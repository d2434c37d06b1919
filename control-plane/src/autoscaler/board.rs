//! The load board: what node proxies last reported, per deployment, held in
//! this member's memory. Load is a rate, not state: it is not replicated
//! (a write per node per second would cost the store more than it tells),
//! and a member that becomes leader starts from the next reports.

use reef_api::{DeploymentLoad, LoadReport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Namespace and name of a deployment.
pub type DeploymentKey = (String, String);

/// A node's report older than this no longer counts: the node stopped
/// reporting (it died, or lost the control plane) and its requests with it.
pub const REPORT_FRESHNESS: Duration = Duration::from_secs(5);

/// A node's last report is kept this long after it went stale, to tell a
/// later report's new requests from old ones (an idle node reports every 10 s).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Deployments one report may name: a bound on what one node can make this
/// member hold.
pub const MAX_REPORTED_DEPLOYMENTS: usize = 10_000;

struct NodeReport {
    at: Instant,
    loads: HashMap<DeploymentKey, DeploymentLoad>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, NodeReport>,
    /// When each deployment last had a request in flight or a new one.
    active: HashMap<DeploymentKey, Instant>,
}

/// One deployment's load summed over the nodes' fresh reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Requests in flight or waiting, cluster-wide.
    pub demand: u64,
    /// Requests waiting for a ready pod.
    pub waiting: u64,
    /// When a request was last in flight or new, if ever seen by this member.
    pub active_at: Option<Instant>,
}

#[derive(Clone, Default)]
pub struct LoadBoard {
    inner: Arc<Mutex<Inner>>,
    /// Woken by a report that holds requests for want of a pod: activation
    /// must not wait for the autoscaler's next tick.
    wake: Arc<Notify>,
}

impl LoadBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section replaces whole entries: poison leaves nothing half done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `node`'s report, replacing its last one.
    pub fn report(&self, node: &str, report: LoadReport) {
        self.report_at(node, report, Instant::now())
    }

    pub fn report_at(&self, node: &str, report: LoadReport, now: Instant) {
        let mut activate = false;
        let mut inner = self.lock();
        let previous = inner.nodes.remove(node);
        let mut loads = HashMap::with_capacity(report.deployments.len());
        for load in report.deployments {
            let key = (load.namespace.clone(), load.deployment.clone());
            let before = previous.as_ref().and_then(|p| p.loads.get(&key));
            if load.demand() > 0 || before.is_some_and(|b| b.requests != load.requests) {
                inner.active.insert(key.clone(), now);
            }
            // The first request to wait wakes the autoscaler; more of them do not.
            activate |= load.waiting > 0 && before.is_none_or(|b| b.waiting == 0);
            loads.insert(key, load);
        }
        inner
            .nodes
            .insert(node.to_string(), NodeReport { at: now, loads });
        drop(inner);
        if activate {
            self.wake.notify_one();
        }
    }

    /// Every deployment's load from the fresh reports.
    pub fn loads(&self, now: Instant) -> HashMap<DeploymentKey, Load> {
        let mut inner = self.lock();
        inner
            .nodes
            .retain(|_, r| now.saturating_duration_since(r.at) <= FORGET_AFTER);
        let mut totals: HashMap<DeploymentKey, Load> = HashMap::new();
        let fresh = inner
            .nodes
            .values()
            .filter(|r| now.saturating_duration_since(r.at) <= REPORT_FRESHNESS);
        for report in fresh {
            for (key, load) in &report.loads {
                let total = totals.entry(key.clone()).or_default();
                total.demand += load.demand();
                total.waiting += u64::from(load.waiting);
            }
        }
        for (key, at) in &inner.active {
            totals.entry(key.clone()).or_default().active_at = Some(*at);
        }
        totals
    }

    /// Forgets deployments that no longer exist.
    pub fn retain(&self, keep: impl Fn(&DeploymentKey) -> bool) {
        self.lock().active.retain(|k, _| keep(k));
    }

    /// Returns when a report holds requests waiting for a pod.
    pub async fn activation(&self) {
        self.wake.notified().await
    }

    /// Nodes whose report is fresh at `now`.
    pub fn nodes(&self, now: Instant) -> usize {
        self.lock()
            .nodes
            .values()
            .filter(|r| now.saturating_duration_since(r.at) <= REPORT_FRESHNESS)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, in_flight: u32, waiting: u32, requests: u64) -> DeploymentLoad {
        DeploymentLoad {
            namespace: "default".into(),
            deployment: name.into(),
            in_flight,
            waiting,
            requests,
        }
    }

    fn report(loads: Vec<DeploymentLoad>) -> LoadReport {
        LoadReport { deployments: loads }
    }

    #[test]
    fn sums_nodes_and_drops_stale_reports() {
        let board = LoadBoard::default();
        let t0 = Instant::now();
        board.report_at("a", report(vec![load("f", 3, 1, 10)]), t0);
        board.report_at(
            "b",
            report(vec![load("f", 2, 0, 4)]),
            t0 + Duration::from_secs(3),
        );
        let key = ("default".to_string(), "f".to_string());
        let now = t0 + Duration::from_secs(4);
        assert_eq!(board.loads(now)[&key].demand, 6);
        assert_eq!(board.loads(now)[&key].waiting, 1);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(board.loads(later)[&key].demand, 2, "a's report is stale");
        assert_eq!(board.nodes(later), 1);
    }

    #[test]
    fn a_stale_report_still_tells_new_requests_from_old() {
        let board = LoadBoard::default();
        let t0 = Instant::now();
        let key = ("default".to_string(), "f".to_string());
        board.report_at("a", report(vec![load("f", 0, 0, 7)]), t0);
        let t6 = t0 + Duration::from_secs(6);
        assert_eq!(board.loads(t6).get(&key).and_then(|l| l.active_at), None);
        let t7 = t0 + Duration::from_secs(7);
        board.report_at("a", report(vec![load("f", 0, 0, 8)]), t7);
        assert_eq!(board.loads(t7)[&key].active_at, Some(t7));
    }

    #[test]
    fn activity_is_demand_or_new_requests_not_an_unchanged_counter() {
        let board = LoadBoard::default();
        let t0 = Instant::now();
        let key = ("default".to_string(), "f".to_string());
        board.report_at("a", report(vec![load("f", 0, 0, 7)]), t0);
        assert_eq!(board.loads(t0)[&key].active_at, None, "first sight: idle");
        let t1 = t0 + Duration::from_secs(1);
        board.report_at("a", report(vec![load("f", 0, 0, 9)]), t1);
        assert_eq!(board.loads(t1)[&key].active_at, Some(t1));
        let t2 = t1 + Duration::from_secs(1);
        board.report_at("a", report(vec![load("f", 0, 0, 9)]), t2);
        assert_eq!(board.loads(t2)[&key].active_at, Some(t1));
        board.report_at("a", report(vec![load("f", 1, 0, 9)]), t2);
        assert_eq!(board.loads(t2)[&key].active_at, Some(t2));
    }
}
