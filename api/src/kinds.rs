//! The spec and status of each kind (DESIGN §3): pods, deployments, services,
//! nodes, tenants, blobs and events, and their defaults. The object envelope
//! they travel in is in [`crate::resource`].

use crate::quantity::{Cpu, Memory, Timeout};
use crate::resource::{Kind, Labels, Object};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// wasi:http/proxy: a fresh instance per request.
    #[default]
    Http,
    /// wasi:cli/command: a long-lived instance.
    Command,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Wasmtime,
    Containerd,
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Wasmtime => "wasmtime",
            RuntimeKind::Containerd => "containerd",
        })
    }
}

pub const DEFAULT_CPU: Cpu = Cpu(100);
pub const DEFAULT_MEMORY: Memory = Memory(64 << 20);
pub const DEFAULT_TIMEOUT: Timeout = Timeout(std::time::Duration::from_secs(30));

fn default_cpu() -> Cpu {
    DEFAULT_CPU
}
fn default_memory() -> Memory {
    DEFAULT_MEMORY
}
fn default_timeout() -> Timeout {
    DEFAULT_TIMEOUT
}
fn default_replicas() -> u32 {
    1
}
fn default_root_path() -> String {
    "/".to_string()
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// What runs in a pod: the manifest's pod fields with defaults filled in. A Pod's spec
/// adds `node` once the scheduler binds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// "sha256:<hex>" of the component's bytes (a Blob).
    pub component: String,
    #[serde(default)]
    pub world: World,
    #[serde(default = "default_cpu")]
    pub cpu: Cpu,
    #[serde(default = "default_memory")]
    pub memory: Memory,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default = "default_timeout")]
    pub timeout: Timeout,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: Labels,
    #[serde(default)]
    pub runtime: RuntimeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// The node this pod is bound to; set by the scheduler, never by users of a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A one-word cause for the phase: `NodeLost`, `OutOfMemory`, `CannotRun`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// A pod whose node was lost: its deployment replaces it.
pub const REASON_NODE_LOST: &str = "NodeLost";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    #[serde(default = "one")]
    pub max_surge: u32,
    #[serde(default)]
    pub max_unavailable: u32,
    /// A rollout making no progress for this long is reported stuck.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Timeout,
}

fn default_progress_deadline() -> Timeout {
    Timeout(std::time::Duration::from_secs(600))
}

fn one() -> u32 {
    1
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            max_surge: 1,
            max_unavailable: 0,
            progress_deadline: default_progress_deadline(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::autoscale::Autoscale>,
    #[serde(default)]
    pub strategy: Strategy,
    pub template: PodSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentStatus {
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub updated_replicas: u32,
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_hash: String,
    /// When the rollout last made progress (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressed_at: Option<String>,
    /// Why the rollout is stuck, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<String>,
    /// Why fewer pods exist than wanted, when the tenant's quota holds them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The autoscaler's last decision, when the deployment autoscales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::autoscale::AutoscaleStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub selector: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_root_path")]
    pub path: String,
}

/// A ready pod a Service routes to, and the node proxy that can reach it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub pod: String,
    pub node: String,
    /// The owning node's `--listen` address, for forwarding from other nodes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The deployment that owns the pod, for load accounting and balancing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatus {
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The autoscaled deployments the selector matches: a proxy holds a
    /// request for them while they have no ready pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scalable: Vec<crate::autoscale::ScaleTarget>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pods: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Where other nodes forward requests and the API server fetches logs.
    #[serde(default)]
    pub address: String,
    /// Where this node's proxy takes ingress traffic.
    #[serde(default)]
    pub ingress: String,
    pub capacity: Resources,
    pub allocatable: Resources,
    #[serde(default)]
    pub runtimes: Vec<RuntimeKind>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub unschedulable: bool,
    /// Set by `reef drain`: the node's pods are moved elsewhere, new ones first.
    #[serde(default, skip_serializing_if = "is_default")]
    pub draining: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When the agent last renewed its lease (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

impl NodeStatus {
    pub fn is_ready(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSpec {
    pub size: u64,
}

/// A tenant's quota: each limit caps the sum over its namespace; an absent
/// limit does not cap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<u32>,
}

/// What a tenant's objects ask for, as its quota counts it: deployments'
/// replicas (autoscale: `max`) times their pods' cpu and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    #[serde(default)]
    pub cpu: Cpu,
    #[serde(default)]
    pub memory: Memory,
    #[serde(default)]
    pub pods: u64,
    #[serde(default)]
    pub deployments: u64,
    #[serde(default)]
    pub services: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantStatus {
    /// As of the last admitted write in the namespace.
    #[serde(default)]
    pub used: Usage,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub involved: ObjectRef,
    pub reason: String,
    pub message: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: Kind,
    pub name: String,
}

pub type Deployment = Object<DeploymentSpec, DeploymentStatus>;
pub type Pod = Object<PodSpec, PodStatus>;
pub type Service = Object<ServiceSpec, ServiceStatus>;
pub type Node = Object<NodeSpec, NodeStatus>;
pub type Blob = Object<BlobSpec, Value>;
pub type Tenant = Object<TenantSpec, TenantStatus>;
pub type Event = Object<EventSpec, Value>;
