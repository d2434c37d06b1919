//! A whole worker node wired together: runtime, agent and proxy.

use crate::agent::{Agent, AgentConfig};
use crate::pods::PodTable;
use crate::proxy::Proxy;
use crate::runtime::{Runtime, RuntimeConfig};
use reef_api::Client;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub struct NodeConfig {
    pub agent: AgentConfig,
    /// Already bound, so port 0 works and the address is known up front.
    pub ingress: TcpListener,
}

pub struct NodeHandle {
    pub ingress: SocketAddr,
    /// The node-to-node port, when the node takes forwarded requests.
    pub listen: Option<SocketAddr>,
    pub pods: PodTable,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts the node's agent, route sync and ingress server on the current runtime.
/// Without a listen port the node takes no forwarded requests: its pods are
/// reachable through its own ingress only (one node, as in `reef up`).
pub fn start(config: NodeConfig, client: Client) -> anyhow::Result<NodeHandle> {
    start_with_listen(config, None, client)
}

/// [`start`], plus the server for requests other nodes forward on `listen`
/// (already bound; `config.agent.address` is how other nodes reach it).
pub fn start_with_listen(
    config: NodeConfig,
    listen: Option<TcpListener>,
    client: Client,
) -> anyhow::Result<NodeHandle> {
    let ingress = config.ingress.local_addr()?;
    let listen_addr = listen.as_ref().map(|l| l.local_addr()).transpose()?;
    let runtime = Runtime::new(RuntimeConfig::for_pods(config.agent.capacity.pods))?;
    let pods = PodTable::default();
    let proxy = Proxy::new(config.agent.name.clone(), pods.clone());
    let agent = Agent::new(config.agent, client.clone(), runtime, pods.clone());
    let mut tasks = vec![
        proxy.spawn_route_sync(client),
        tokio::spawn(Arc::clone(&proxy).serve(config.ingress)),
        tokio::spawn(agent.run()),
        // Retired pods whose grace ran out while routes did not change.
        tokio::spawn({
            let pods = pods.clone();
            async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    pods.sweep_expired();
                }
            }
        }),
    ];
    if let Some(listen) = listen {
        tasks.push(tokio::spawn(Arc::clone(&proxy).serve_listen(listen)));
    }
    Ok(NodeHandle {
        ingress,
        listen: listen_addr,
        pods,
        tasks,
    })
}
