//! The daemons' tuning flags (node, ports, control plane) and how they become
//! the node agent's settings.

use crate::Failure;
use reef_api::quantity::{Cpu, Memory};
use reef_api::{Labels, Resources};
use reef_control_plane::apiserver::ApiConfig;
use reef_control_plane::scheduler::plan::Policy;
use reef_node::agent::{AgentConfig, Backoff};
use std::path::PathBuf;
#[derive(clap::Args)]
pub struct NodeTuning {
    /// CPU this node offers to pods.
    #[arg(long, env = "REEF_CPU", default_value = "2000m")]
    pub(crate) cpu: Cpu,
    /// Memory this node offers to pods.
    #[arg(long, env = "REEF_MEMORY", default_value = "4Gi")]
    pub(crate) memory: Memory,
    /// How many pods this node runs at most (also sizes the instance pool).
    #[arg(long, env = "REEF_PODS", default_value_t = 1000)]
    pub(crate) pods: u32,
    /// Node labels, k=v,k2=v2.
    #[arg(long, env = "REEF_LABELS", default_value = "")]
    pub(crate) labels: String,
    /// How often the agent renews its lease.
    #[arg(long, env = "REEF_HEARTBEAT", default_value = "5s")]
    pub(crate) heartbeat: reef_api::quantity::Timeout,
    /// First wait before restarting a command pod that ended; doubles per quick restart.
    #[arg(long, env = "REEF_BACKOFF_BASE", default_value = "10s")]
    pub(crate) backoff_base: reef_api::quantity::Timeout,
    /// Longest wait between restarts; a run that lasted this long resets the wait.
    #[arg(long, env = "REEF_BACKOFF_MAX", default_value = "5m")]
    pub(crate) backoff_max: reef_api::quantity::Timeout,
    /// Bytes one run's log file may reach before it rotates (a pod keeps at most 4x on disk).
    #[arg(long, env = "REEF_LOG_MAX_BYTES", default_value_t = 10 << 20)]
    pub(crate) log_max_bytes: u64,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, env = "REEF_DRAIN_TIMEOUT", default_value = "30s")]
    pub(crate) drain_timeout: reef_api::quantity::Timeout,
    /// Private address ranges pods' outbound HTTP may reach (CIDRs, comma-separated);
    /// loopback, private, link-local and this node's and the control plane's
    /// addresses are refused otherwise (the latter two always).
    #[arg(long, env = "REEF_OUTBOUND_ALLOW", value_delimiter = ',')]
    pub(crate) outbound_allow: Vec<reef_node::runtime::Cidr>,
    /// An OCI registry (HOST:PORT) this node pulls components from over plain
    /// HTTP; loopback ones always are, others over HTTPS.
    #[arg(
        long = "insecure-registry",
        env = "REEF_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST:PORT",
        value_parser = registry_name
    )]
    pub(crate) insecure_registries: Vec<String>,
    /// Whose credentials this node pulls `oci://` components with: none
    /// (anonymous), or docker-config (what `docker login` stored for the
    /// node's user). Anonymous by default, because a spec may name any
    /// repository of an allowed registry: with docker-config, every namespace
    /// may run whatever those credentials can read.
    #[arg(long, env = "REEF_REGISTRY_CREDENTIALS", default_value = "none")]
    pub(crate) registry_credentials: RegistryCredentials,
    /// Bytes on disk each pod's scratch directory may hold.
    #[arg(long, env = "REEF_POD_SCRATCH_SIZE", default_value = "64Mi")]
    pub(crate) pod_scratch_size: Memory,
    /// Files and directories each pod's scratch directory may hold.
    #[arg(long, env = "REEF_POD_SCRATCH_FILES", default_value_t = 4096)]
    pub(crate) pod_scratch_files: u64,
    /// Requests one pod may have in flight at once (each holds an instance).
    #[arg(long, env = "REEF_POD_INSTANCES", default_value_t = 256)]
    pub(crate) pod_instances: usize,
    /// Requests this node holds per Service while it scales up from zero;
    /// more get 503 with Retry-After.
    #[arg(long, env = "REEF_ACTIVATION_QUEUE", default_value_t = 1000)]
    pub(crate) activation_queue: u32,
    /// The runtimes this node offers, comma-separated: wasmtime (embedded)
    /// and containerd (pods as tasks of `containerd-shim-reef-v1`). A pod
    /// runs by the `runtime` its spec names, on a node that offers it.
    #[arg(
        long = "runtime",
        env = "REEF_RUNTIMES",
        value_delimiter = ',',
        default_value = "wasmtime",
        value_parser = runtime_kind
    )]
    pub(crate) runtimes: Vec<reef_api::RuntimeKind>,
    /// containerd's socket, for --runtime containerd.
    #[arg(
        long,
        env = "REEF_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub(crate) containerd_socket: PathBuf,
}

fn runtime_kind(text: &str) -> Result<reef_api::RuntimeKind, String> {
    match text {
        "wasmtime" => Ok(reef_api::RuntimeKind::Wasmtime),
        "containerd" => Ok(reef_api::RuntimeKind::Containerd),
        _ => Err(format!("{text:?} is not a runtime: wasmtime or containerd")),
    }
}

impl NodeTuning {
    pub(crate) fn logs(&self) -> reef_node::logs::LogLimits {
        reef_node::logs::LogLimits {
            file_bytes: self.log_max_bytes,
        }
    }
}

/// Connection bounds of every port a daemon listens on.
#[derive(clap::Args)]
pub struct ServeTuning {
    /// Connections one port holds open at once; when full, the oldest that
    /// has sent nothing yet is dropped for a new one.
    #[arg(long, env = "REEF_MAX_CONNECTIONS", default_value_t = 4096)]
    pub(crate) max_connections: usize,
    /// How long a client may take to send its first byte, and then a whole
    /// request head.
    #[arg(long, env = "REEF_HEADER_TIMEOUT", default_value = "10s")]
    pub(crate) header_timeout: reef_api::quantity::Timeout,
}

impl ServeTuning {
    pub(crate) fn config(&self, name: &'static str) -> reef_net::ServeConfig {
        reef_net::ServeConfig {
            name,
            max_connections: self.max_connections,
            first_byte_timeout: self.header_timeout.0,
            header_timeout: self.header_timeout.0,
            tls: None,
        }
    }
}

#[derive(clap::Args)]
pub struct ControlPlaneTuning {
    /// spread (least allocated first) or binpack.
    #[arg(long, env = "REEF_SCHEDULER_POLICY", default_value = "spread")]
    pub(crate) scheduler_policy: Policy,
    /// An OCI registry (HOST[:PORT]) whose components manifests may name;
    /// repeat for more. None by default: nodes fetch from what specs name.
    #[arg(
        long = "oci-registry",
        env = "REEF_OCI_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST[:PORT]",
        value_parser = registry_name
    )]
    pub(crate) oci_registries: Vec<String>,
    /// Largest component upload accepted, in bytes.
    #[arg(long, env = "REEF_MAX_BLOB_SIZE", default_value_t = 64 << 20)]
    pub(crate) max_blob_size: usize,
    /// Snapshot the store and compact its log every this many Raft entries.
    /// Each snapshot rewrites the whole key space, blobs included, so it is
    /// taken rarely (etcd's default is 100,000).
    #[arg(long, env = "REEF_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub(crate) snapshot_every: u64,
    /// How long a node may go without renewing its lease before it is NotReady
    /// and its pods are replaced on other nodes.
    #[arg(long, env = "REEF_NODE_GRACE", default_value = "40s")]
    pub(crate) node_grace: reef_api::quantity::Timeout,
    /// Raft log entries kept behind a snapshot, so briefly lagging members catch up from the log.
    #[arg(long, env = "REEF_KEEP_LOGS", default_value_t = 200)]
    pub(crate) keep_logs: u64,
    /// Watch streams one token may hold open at once.
    #[arg(long, env = "REEF_MAX_WATCHES_PER_TOKEN", default_value_t = 100)]
    pub(crate) max_watches_per_token: usize,
    /// Raft election timeout: a follower that hears no leader for about 2.5x
    /// this campaigns, so a dead leader is replaced that fast (docs/operations.md).
    #[arg(long, env = "REEF_ELECTION_TIMEOUT", default_value = "120ms")]
    pub(crate) election_timeout: reef_api::quantity::Timeout,
    /// Raft leader heartbeat; must be well below the election timeout.
    #[arg(long, env = "REEF_RAFT_HEARTBEAT", default_value = "40ms")]
    pub(crate) raft_heartbeat: reef_api::quantity::Timeout,
}

impl ControlPlaneTuning {
    pub(crate) fn controllers(&self) -> reef_control_plane::controllers::ControllerConfig {
        reef_control_plane::controllers::ControllerConfig {
            node_grace: self.node_grace.0,
        }
    }

    pub(crate) fn raft_timers(&self) -> reef_control_plane::member::RaftTimers {
        reef_control_plane::member::RaftTimers {
            heartbeat: self.raft_heartbeat.0,
            election: self.election_timeout.0,
        }
    }

    pub(crate) fn api(&self) -> ApiConfig {
        ApiConfig {
            max_blob_size: self.max_blob_size,
            max_watches_per_token: self.max_watches_per_token,
            ..ApiConfig::default()
        }
    }
}

fn parse_labels(text: &str) -> Result<Labels, Failure> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    Failure::usage(format!("error: --labels: {pair:?} is not key=value"))
                })
        })
        .collect()
}

/// The IP addresses of `host:port` or `http://host:port` strings, for the
/// outbound policy to refuse (a name that does not resolve adds nothing).
fn addresses_of(endpoints: &[String]) -> Vec<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<std::net::IpAddr> = endpoints
        .iter()
        .map(|e| e.split("://").last().unwrap_or(e).trim_end_matches('/'))
        .filter_map(|authority| authority.to_socket_addrs().ok())
        .flatten()
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The agent's settings; with `--runtime containerd`, after connecting to
/// containerd (a node that cannot reach it does not start).
pub async fn agent_config(
    name: String,
    data_dir: PathBuf,
    ingress: String,
    address: String,
    control_plane: &[String],
    tuning: &NodeTuning,
) -> Result<AgentConfig, Failure> {
    let mut own = vec![ingress.clone(), address.clone()];
    own.extend(control_plane.iter().cloned());
    let network = reef_node::runtime::NetworkPolicy {
        allowed: tuning.outbound_allow.clone(),
        refused: addresses_of(&own),
    };
    let containerd = match tuning.runtimes.contains(&reef_api::RuntimeKind::Containerd) {
        false => None,
        true => Some(
            reef_node::containerd::Containerd::connect(
                &tuning.containerd_socket,
                &name,
                data_dir.join("containerd"),
            )
            .await
            .map_err(|e| Failure::other(format!("error: --runtime containerd: {e:#}")))?,
        ),
    };
    let mut runtimes: Vec<reef_api::RuntimeKind> = Vec::new();
    for runtime in &tuning.runtimes {
        if !runtimes.contains(runtime) {
            runtimes.push(*runtime);
        }
    }
    Ok(AgentConfig {
        services: None,
        runtimes,
        containerd,
        registries: reef_oci::Access {
            insecure: tuning.insecure_registries.clone(),
            credentials: match tuning.registry_credentials {
                RegistryCredentials::None => reef_oci::Credentials::Anonymous,
                RegistryCredentials::DockerConfig => reef_oci::Credentials::DockerConfig,
            },
        },
        network: std::sync::Arc::new(network),
        pod_limits: reef_node::runtime::PodLimits {
            scratch: reef_node::runtime::ScratchQuota {
                bytes: tuning.pod_scratch_size.bytes(),
                files: tuning.pod_scratch_files,
            },
            max_instances: tuning.pod_instances,
        },
        name,
        data_dir,
        ingress,
        address,
        capacity: Resources {
            cpu: tuning.cpu,
            memory: tuning.memory,
            pods: tuning.pods,
        },
        labels: parse_labels(&tuning.labels)?,
        heartbeat: tuning.heartbeat.0,
        backoff: Backoff {
            base: tuning.backoff_base.0,
            max: tuning.backoff_max.0.max(tuning.backoff_base.0),
        },
    })
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum RegistryCredentials {
    None,
    DockerConfig,
}

/// A registry as `--oci-registry` and `--insecure-registry` name it,
/// lowercased: `HOST`, `HOST:PORT` or `[V6]:PORT`.
pub(crate) fn registry_name(text: &str) -> Result<String, String> {
    if reef_api::component_ref::valid_registry(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a registry: expected HOST, HOST:PORT or [IPV6]:PORT"
        ))
    }
}
