//! A whole worker node wired together: runtime, agent, logs and proxy.
//!
//! Under `DATA_DIR`: `blobs/` (components by digest), `artifacts/` (compiled
//! components), `logs/` and `scratch/` (per pod, gone with the pod), and with
//! containerd, `containerd/` (each task's rootfs and output FIFOs).

use crate::agent::{Agent, AgentConfig};
use crate::logs::{LogLimits, NodeLogs};
use crate::pods::PodTable;
use crate::proxy::access::NodeAccess;
use crate::proxy::Proxy;
use crate::runtime::{Runtime, RuntimeConfig};
use reef_api::Client;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct NodeConfig {
    pub agent: AgentConfig,
    /// Already bound, so port 0 works and the address is known up front.
    pub ingress: TcpListener,
    pub logs: LogLimits,
    /// Connection bounds of the ingress and listen ports.
    pub serve: reef_net::ServeConfig,
    /// Requests held per Service while it scales up from zero.
    pub activation_queue: u32,
}

pub struct NodeHandle {
    pub ingress: SocketAddr,
    /// The node-to-node port, when the node takes forwarded requests.
    pub listen: Option<SocketAddr>,
    pub pods: PodTable,
    pub runtime: Runtime,
    agent: Arc<Agent>,
    logs: NodeLogs,
    stop: tokio::sync::watch::Sender<bool>,
    /// The ingress and listen servers, which drain on `stop`.
    servers: Vec<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops at once: requests in flight are cut off, command pods stopped.
    pub fn shutdown(self) {
        self.agent.stop_all();
        for task in self.servers.into_iter().chain(self.tasks) {
            task.abort();
        }
    }

    /// Takes no new connections, lets requests in flight finish (for up to
    /// `grace`), then stops everything, command pods included. Log followers
    /// are told to finish at once.
    pub async fn drain(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        self.logs.finish_all();
        let drained = {
            let servers = futures::future::join_all(self.servers.iter_mut());
            tokio::time::timeout(grace, servers).await.is_ok()
        };
        if !drained {
            tracing::warn!(
                ?grace,
                "requests still in flight after the grace period: cutting them off"
            );
        }
        // containerd tasks outlive this process unless removed here.
        self.agent.stop_all();
        // Longer than one removal may wait for a killed task (10 s), so a
        // slow one is still deleted.
        let swept = self.agent.sweep_tasks();
        if tokio::time::timeout(Duration::from_secs(15), swept)
            .await
            .is_err()
        {
            tracing::warn!("containerd did not remove this node's tasks within 15 s");
        }
        self.shutdown();
    }
}

/// Starts the node's agent, route sync and ingress server on the current runtime.
/// Without a listen port the node takes no forwarded requests and serves no logs:
/// its pods are reachable through its own ingress only.
pub fn start(config: NodeConfig, client: Client) -> anyhow::Result<NodeHandle> {
    start_with_listen(config, None, client)
}

/// [`start`], plus the server for requests other nodes forward and for the
/// control plane's log requests on `listen` (already bound;
/// `config.agent.address` is how others reach it).
pub fn start_with_listen(
    config: NodeConfig,
    listen: Option<TcpListener>,
    client: Client,
) -> anyhow::Result<NodeHandle> {
    let ingress = config.ingress.local_addr()?;
    let listen_addr = listen.as_ref().map(|l| l.local_addr()).transpose()?;
    let data_dir = config.agent.data_dir.clone();
    let capacity = config.agent.capacity;
    let runtime = Runtime::new(RuntimeConfig {
        artifact_dir: Some(data_dir.join("artifacts")),
        // No instance may hold more memory than the node offers in all.
        max_memory_per_instance: capacity
            .memory
            .bytes()
            .clamp(64 << 10, RuntimeConfig::default().max_memory_per_instance),
        ..RuntimeConfig::for_pods(capacity.pods)
    })?;
    let pods = PodTable::default();
    let logs = NodeLogs::new(data_dir.join("logs"), config.logs);
    let access = NodeAccess::default();
    let proxy = Proxy::with_node_endpoints(
        config.agent.name.clone(),
        pods.clone(),
        logs.clone(),
        access.clone(),
        config.serve.clone(),
        config.activation_queue,
    );
    let node_name = config.agent.name.clone();
    let mut config = config;
    config.agent.services = Some(proxy.clone());
    let agent = Agent::new(
        config.agent,
        client.clone(),
        runtime.clone(),
        pods.clone(),
        logs.clone(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = vec![tokio::spawn(
        Arc::clone(&proxy).serve_until(config.ingress, stopped.clone()),
    )];
    if let Some(listen) = listen {
        servers.push(tokio::spawn(
            Arc::clone(&proxy).serve_listen_until(listen, stopped),
        ));
    }
    let tasks = vec![
        proxy.spawn_route_sync(client.clone()),
        tokio::spawn(crate::proxy::load::report_forever(
            proxy.meter(),
            client.clone(),
            node_name,
        )),
        tokio::spawn(agent.clone().run()),
        tokio::spawn(logs.clone().flush_forever()),
        tokio::spawn(access.keep_fetched(client)),
        // Retired pods whose grace ran out while routes did not change.
        tokio::spawn({
            let pods = pods.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    pods.sweep_expired();
                }
            }
        }),
    ];
    Ok(NodeHandle {
        ingress,
        listen: listen_addr,
        pods,
        runtime,
        agent,
        logs,
        stop,
        servers,
        tasks,
    })
}
