//! Pods as containerd tasks (`reef node --runtime containerd`): each run of
//! a pod whose spec names the `containerd` runtime is a container in
//! containerd's `reef` namespace, run by `containerd-shim-reef-v1` (this
//! workspace's `shim/`) with the same runtime code, memory budget and
//! request deadline as the embedded runtime (not its egress policy, Service
//! calls or scratch quota: see docs/containerd.md).
//!
//! The node hands containerd no image: the component it already fetched and
//! verified is written to a directory of the pod's own, which the shim mounts
//! read-only as the container's rootfs. A command pod is one task per run; an
//! http pod is one task serving on a loopback port the proxy forwards to.
//! The node fixes the world (`REEF_WORLD`) and the port (`REEF_LISTEN`) in
//! each spec after the pod's env, so a pod's env changes neither.
//!
//! Invariants:
//! - every container this node makes carries its name in the `reef.node`
//!   label, and a node owns none at its start: no pod starts under
//!   containerd until [`Containerd::adopt_nothing`] has removed what an
//!   earlier process of this node left (a `kill -9` leaves tasks running),
//!   so a pod never runs twice;
//! - a container is one run's, never reused, and goes when the run ends or
//!   its last holder lets go (the pod's task, or its endpoint while routing
//!   still lists it).

mod endpoint;
mod fifo;
mod run;
mod task;

pub use endpoint::TaskEndpoint;
pub use run::RunError;
pub use task::{TaskPod, TaskSpec};

use crate::proxy::forward::InBody;
use anyhow::Context;
use containerd_client::services::v1::{
    containers_client::ContainersClient, tasks_client::TasksClient, version_client::VersionClient,
    DeleteContainerRequest, DeleteTaskRequest, KillRequest, ListContainersRequest, WaitRequest,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// The containerd namespace all nodes' pods live in; each node's are told
/// apart by their `reef.node` label.
pub const NAMESPACE: &str = "reef";
/// The runtime containerd starts `containerd-shim-reef-v1` for.
pub const RUNTIME: &str = "io.containerd.reef.v1";
/// What the shim writes on stderr once an http component has bound its
/// port, after `ID: `: how the node learns the port the shim picked.
pub const LISTENING: &str = "listening on ";
const NODE_LABEL: &str = "reef.node";
const POD_LABEL: &str = "reef.pod";
const SIGKILL: u32 = 9;
/// How long a killed task may take to end before its removal goes on anyway.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to one containerd, on behalf of one node.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    node: String,
    /// Where pods' rootfs directories and output FIFOs live.
    dir: PathBuf,
    /// Pooled connections to http tasks' loopback ports.
    client: Client<HttpConnector, InBody>,
    /// Set once the startup sweep has succeeded.
    swept: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl Containerd {
    /// Connects and asks containerd its version, so a wrong socket fails the
    /// node's start rather than its first pod.
    pub async fn connect(socket: &Path, node: &str, dir: PathBuf) -> anyhow::Result<Containerd> {
        let channel = containerd_client::connect(socket)
            .await
            .with_context(|| format!("connecting to containerd at {}", socket.display()))?;
        VersionClient::new(channel.clone())
            .version(())
            .await
            .with_context(|| format!("containerd at {} does not answer", socket.display()))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector);
        Ok(Containerd {
            channel,
            node: node.to_string(),
            dir,
            client,
            swept: Default::default(),
        })
    }

    fn request<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "containerd-namespace",
            MetadataValue::from_static(NAMESPACE),
        );
        request
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// The part of a pod's container ids that names this pod object on this
    /// node, as taken on now: its runs' containers are `BASE-RUN`. It is new
    /// each time (the time is in it), so no id is used twice while
    /// containerd may still be closing a shim under it. containerd allows 76
    /// characters of `[A-Za-z0-9_.-]`: fewer than a namespace and a pod name
    /// may take, more than this needs.
    fn container_base(&self, pod_key: &str, uid: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut hash = sha2::Sha256::new();
        for part in [self.node.as_str(), pod_key, uid, &now.to_string()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        format!("reef-{}", &hex::encode(hash.finalize())[..32])
    }

    /// Once per process, before its first pod: removes what an earlier
    /// process of this node left (a `kill -9` leaves tasks running). Until
    /// it has succeeded no pod starts here, so none runs twice.
    pub async fn adopt_nothing(&self) -> anyhow::Result<()> {
        self.swept
            .get_or_try_init(|| async {
                let n = self.sweep().await?;
                if n > 0 {
                    tracing::info!("removed {n} containerd tasks this node no longer owns");
                }
                anyhow::Ok(())
            })
            .await?;
        Ok(())
    }

    /// Removes every container of this node's and its task, at once: those
    /// an earlier process left, or all of them when the node stops. Returns
    /// how many there were.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let filter = format!("labels.\"{NODE_LABEL}\"==\"{}\"", self.node);
        let listed = self
            .containers()
            .list(Self::request(ListContainersRequest {
                filters: vec![filter],
            }))
            .await
            .context("listing containerd's containers")?
            .into_inner()
            .containers;
        let removals = listed.iter().map(|container| {
            let pod = container.labels.get(POD_LABEL).cloned().unwrap_or_default();
            tracing::info!(container = %container.id, %pod, "removing a task of this node's");
            self.remove(&container.id)
        });
        futures::future::join_all(removals).await;
        // Their rootfs directories and FIFOs.
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        })
        .await;
        Ok(listed.len())
    }

    /// Kills the task, waits for its end (containerd deletes no running
    /// task), deletes it, then the container; what is not there is already
    /// done.
    async fn remove(&self, id: &str) {
        self.kill(id).await;
        let mut tasks = self.tasks();
        let waited = tasks.wait(Self::request(WaitRequest {
            container_id: id.to_string(),
            ..Default::default()
        }));
        match tokio::time::timeout(STOP_DEADLINE, waited).await {
            Ok(waited) => {
                if let Err(e) = removed(waited) {
                    tracing::warn!(container = %id, "waiting for the killed task: {e}");
                }
            }
            Err(_) => {
                tracing::warn!(container = %id, "the killed task has not ended in {STOP_DEADLINE:?}")
            }
        }
        self.delete_task(id).await;
        let deleted = self
            .containers()
            .delete(Self::request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        if let Err(e) = removed(deleted) {
            tracing::warn!(container = %id, "deleting the container: {e}");
        }
    }

    async fn kill(&self, id: &str) {
        let killed = self
            .tasks()
            .kill(Self::request(KillRequest {
                container_id: id.to_string(),
                signal: SIGKILL,
                all: true,
                ..Default::default()
            }))
            .await;
        if let Err(e) = removed(killed) {
            tracing::warn!(container = %id, "killing the task: {e}");
        }
    }

    /// Deletes a stopped task (containerd refuses to delete a running one).
    async fn delete_task(&self, id: &str) {
        let deleted = self
            .tasks()
            .delete(Self::request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        if let Err(e) = removed(deleted) {
            tracing::warn!(container = %id, "deleting the task: {e}");
        }
    }
}

/// A removal's outcome: not found is what removing wanted.
fn removed<T>(result: Result<T, Status>) -> Result<(), Status> {
    match result {
        Err(e) if e.code() != Code::NotFound => Err(e),
        _ => Ok(()),
    }
}
