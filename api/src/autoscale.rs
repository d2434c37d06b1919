//! The vocabulary of serverless scaling (DESIGN §4, §8): a deployment's
//! `[deployment.autoscale]` settings, the autoscaler's decision in its status,
//! what a Service tells node proxies about the deployments behind it, and the
//! load reports node proxies send to the control plane.

use crate::quantity::Timeout;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[deployment.autoscale]`: replicas follow the requests in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Replicas kept when idle; 0 scales to zero.
    #[serde(default)]
    pub min: u32,
    pub max: u32,
    /// Target requests in flight per pod.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Time without requests after which the deployment goes to `min`.
    #[serde(default = "default_idle")]
    pub idle: Timeout,
    /// The stable window: in-flight requests are averaged over it to decide
    /// the replica count (Knative's 60 s).
    #[serde(default = "default_window")]
    pub window: Timeout,
    /// The panic window: a burst averaged over it that needs at least twice the
    /// pods there are scales up at once, and nothing scales down while it lasts.
    #[serde(default = "default_panic_window")]
    pub panic_window: Timeout,
}

fn default_concurrency() -> u32 {
    50
}
fn default_idle() -> Timeout {
    Timeout(Duration::from_secs(60))
}
fn default_window() -> Timeout {
    Timeout(Duration::from_secs(60))
}
fn default_panic_window() -> Timeout {
    Timeout(Duration::from_secs(6))
}

impl Autoscale {
    /// Replicas before the autoscaler has decided anything: at least one, so a
    /// new function is compiled, started and checked once before it idles.
    pub fn initial(&self) -> u32 {
        self.min.max(1).min(self.max)
    }
}

/// The replicas a deployment runs: the autoscaler's last decision when it
/// autoscales ([`Autoscale::initial`] before the first), `replicas` otherwise.
pub fn wanted_replicas(
    spec: &crate::resource::DeploymentSpec,
    status: &crate::resource::DeploymentStatus,
) -> u32 {
    match &spec.autoscale {
        Some(auto) => status
            .autoscale
            .as_ref()
            .map_or(auto.initial(), |s| s.desired)
            .clamp(auto.min.min(auto.max), auto.max),
        None => spec.replicas,
    }
}

/// The autoscaler's last decision, in the deployment's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleStatus {
    /// Replicas the autoscaler wants.
    pub desired: u32,
    /// Why, with the numbers that caused it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it decided (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub at: String,
}

/// An autoscaled deployment behind a Service, as node proxies need it: to hold
/// requests while it activates and to balance within its concurrency.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleTarget {
    pub deployment: String,
    pub concurrency: u32,
    /// The pods' per-request deadline: how long a held request may wait.
    pub timeout: Timeout,
}

/// What one node's proxy saw, per autoscaled deployment, since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoadReport {
    #[serde(default)]
    pub deployments: Vec<DeploymentLoad>,
}

/// One deployment's load as seen by the node whose ingress took the requests
/// (a forwarded request is counted once, where it came in).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeploymentLoad {
    pub namespace: String,
    pub deployment: String,
    /// Requests being served now.
    #[serde(default)]
    pub in_flight: u32,
    /// Requests held for want of a ready pod.
    #[serde(default)]
    pub waiting: u32,
    /// Requests taken since the node's proxy started (monotonic).
    #[serde(default)]
    pub requests: u64,
}

impl DeploymentLoad {
    /// Requests that want a pod now.
    pub fn demand(&self) -> u64 {
        u64::from(self.in_flight) + u64::from(self.waiting)
    }
}
