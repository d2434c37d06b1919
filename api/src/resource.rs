//! The resource model of DESIGN §3: every object is `{kind, metadata, spec, status}`.
//!
//! Specs reject unknown fields so a typo in an API call is a 422 with the field path,
//! not a silently ignored setting.

use crate::quantity::{Cpu, Memory, Timeout};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// The kinds of object the API serves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Tenant,
    Node,
    Deployment,
    Pod,
    Service,
    Event,
    Blob,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Tenant,
        Kind::Node,
        Kind::Deployment,
        Kind::Pod,
        Kind::Service,
        Kind::Event,
        Kind::Blob,
    ];

    /// The lower-case plural used in URLs and store keys.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Tenant => "tenants",
            Kind::Node => "nodes",
            Kind::Deployment => "deployments",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Event => "events",
            Kind::Blob => "blobs",
        }
    }

    pub fn singular(self) -> &'static str {
        let plural = self.plural();
        &plural[..plural.len() - 1]
    }

    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::Pod | Kind::Service | Kind::Event
        )
    }

    /// Accepts what a kubectl user would type: singular, plural, short names, any case.
    pub fn parse(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let short = match lower.as_str() {
            "deploy" => Some(Kind::Deployment),
            "svc" => Some(Kind::Service),
            "po" => Some(Kind::Pod),
            "no" => Some(Kind::Node),
            "ev" => Some(Kind::Event),
            _ => None,
        };
        short.or_else(|| {
            Kind::ALL
                .into_iter()
                .find(|k| lower == k.plural() || lower == k.singular())
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Names the object that owns this one; deleting the owner deletes its dependents.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRef {
    pub kind: Kind,
    pub name: String,
    pub uid: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The Raft log index of the write that produced this version.
    #[serde(default)]
    pub resource_version: u64,
    /// Bumped when the spec changes; status writes leave it alone.
    #[serde(default)]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
}

/// An object with a typed spec and status. `Object<Value, Value>` is the untyped form
/// the API server stores and streams.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object<S, T = Value> {
    pub kind: Kind,
    pub metadata: Metadata,
    /// The kind's spec (see docs/manifest.md); validated per kind.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: S,
    /// Written by the control plane and agents; null until then.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub status: T,
}

pub type RawObject = Object<Value, Value>;

impl<S, T> Object<S, T> {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }
}

impl RawObject {
    /// Reads a typed view; fails if the stored JSON does not match the kind's schema.
    pub fn typed<S: DeserializeOwned, T: DeserializeOwned + Default>(
        &self,
    ) -> Result<Object<S, T>, serde_json::Error> {
        let status = if self.status.is_null() {
            T::default()
        } else {
            serde_json::from_value(self.status.clone())?
        };
        Ok(Object {
            kind: self.kind,
            metadata: self.metadata.clone(),
            spec: serde_json::from_value(self.spec.clone())?,
            status,
        })
    }
}

impl<S: Serialize, T: Serialize> Object<S, T> {
    pub fn to_raw(&self) -> Result<RawObject, serde_json::Error> {
        Ok(Object {
            kind: self.kind,
            metadata: self.metadata.clone(),
            spec: serde_json::to_value(&self.spec)?,
            status: serde_json::to_value(&self.status)?,
        })
    }
}

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

/// A list answer: the items and the revision to start a watch from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct List<T = RawObject> {
    pub items: Vec<T>,
    pub resource_version: u64,
}

/// One line of a watch stream.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    pub object: Value,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

/// The JSON body of every API error.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// For 422: the path of the offending field, e.g. `spec.template.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {}", field, self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_like_kubectl() {
        assert_eq!(Kind::parse("pods"), Some(Kind::Pod));
        assert_eq!(Kind::parse("Pod"), Some(Kind::Pod));
        assert_eq!(Kind::parse("deploy"), Some(Kind::Deployment));
        assert_eq!(Kind::parse("svc"), Some(Kind::Service));
        assert_eq!(Kind::parse("nodes"), Some(Kind::Node));
        assert_eq!(Kind::parse("gadgets"), None);
        assert_eq!(Kind::Deployment.singular(), "deployment");
    }

    #[test]
    fn pod_spec_fills_defaults() {
        let spec: PodSpec =
            serde_json::from_str(r#"{"component": "sha256:00"}"#).expect("minimal spec");
        assert_eq!(spec.cpu, DEFAULT_CPU);
        assert_eq!(spec.memory, DEFAULT_MEMORY);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.world, World::Http);
        let json = serde_json::to_value(&spec).expect("serialises");
        assert_eq!(json["memory"], "64Mi");
        assert_eq!(json["restart"], "always");
    }
}

/// What `POST /api/v1/apply` did to each object.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResult {
    pub items: Vec<AppliedObject>,
    pub resource_version: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppliedObject {
    /// "created", "configured" or "unchanged".
    pub action: String,
    pub object: RawObject,
}
