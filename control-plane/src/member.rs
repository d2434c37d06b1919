//! One control-plane member wired together: store, API server, scheduler and
//! controllers, serving on one port (API and Raft share it).
//!
//! A member with an empty data dir either starts a cluster (`Bootstrap::Init`) or
//! joins one (`Bootstrap::Join`: fetch the Raft secret with the member token,
//! start serving, ask any member to add it; it becomes a learner, catches up,
//! then a voter). A member whose data dir holds state resumes and ignores both.

use crate::apiserver::cluster::JoinInfo;
use crate::apiserver::{self, ApiConfig};
use crate::credentials::{self, BootstrapTokens, Credentials};
use crate::registry::Registry;
use crate::scheduler::{plan::Policy, Scheduler};
use crate::store::{Store, StoreConfig};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How a member with an empty data dir comes to be part of a cluster.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// Only resume from the data dir.
    Resume,
    /// Start a new cluster with this member as its only voter.
    Init,
    /// Join the cluster that `url` (any member) belongs to, with the member token.
    Join { url: String, token: String },
}

pub struct MemberConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    /// Already bound, so callers can pass port 0 and learn the port before starting.
    pub listener: TcpListener,
    /// The address other members and nodes use; defaults to the bound one.
    pub advertise: Option<String>,
    pub bootstrap: Bootstrap,
    pub policy: Policy,
    pub api: ApiConfig,
    /// Connection bounds of the API port.
    pub serve: reef_net::ServeConfig,
    /// Take a Raft snapshot (and compact the log) every this many entries.
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot for followers that lag a little.
    pub keep_logs: Option<u64>,
    pub controllers: crate::controllers::ControllerConfig,
}

pub struct Member {
    pub store: Arc<Store>,
    pub registry: Registry,
    pub address: SocketAddr,
    /// The admin, join and member tokens, for a member that created the cluster.
    pub tokens: Option<BootstrapTokens>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const SECRET_FILE: &str = "raft.secret";

/// The Raft secret: from the data dir, or minted (init), or fetched (join).
async fn raft_secret(data_dir: &Path, bootstrap: &Bootstrap) -> anyhow::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    if let Ok(secret) = std::fs::read_to_string(&path) {
        if !secret.trim().is_empty() {
            return Ok(secret.trim().to_string());
        }
    }
    let secret = match bootstrap {
        Bootstrap::Init => credentials::new_secret(),
        Bootstrap::Join { url, token } => fetch_join_info(url, token).await?.raft_secret,
        Bootstrap::Resume => bail!(
            "{} holds no cluster state: pass --init to start a cluster or --join URL to join one",
            data_dir.display()
        ),
    };
    reef_api::config::write_private(&path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

fn join_client(url: &str, token: &str) -> anyhow::Result<reef_api::Client> {
    Ok(reef_api::Client::new(
        reef_api::config::parse_servers(url),
        Some(token.to_string()),
    )?
    .with_retry_for(Duration::from_secs(60)))
}

async fn fetch_join_info(url: &str, token: &str) -> anyhow::Result<JoinInfo> {
    let client = join_client(url, token)?;
    let response = client
        .get_raw("/api/v1/cluster/join")
        .await
        .with_context(|| format!("asking {url} to join"))?;
    response.json().await.context("reading the join answer")
}

/// Asks the cluster to add this member; returns once it is a voter.
async fn request_membership(
    url: &str,
    token: &str,
    id: u64,
    advertise: &str,
) -> anyhow::Result<()> {
    let client = join_client(url, token)?;
    client.add_member(id, advertise).await.with_context(|| {
        format!("joining the cluster through {url} as member {id} at {advertise}")
    })?;
    Ok(())
}

impl Member {
    pub async fn start(config: MemberConfig) -> anyhow::Result<Member> {
        let address = config.listener.local_addr()?;
        let advertise = match config.advertise {
            Some(advertise) => advertise,
            None if address.ip().is_unspecified() => bail!(
                "listening on {address}: give --advertise HOST:PORT, the address other members and nodes can reach"
            ),
            None => address.to_string(),
        };
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let secret = raft_secret(&config.data_dir, &config.bootstrap).await?;
        let mut store_config = StoreConfig::new(
            config.id,
            config.data_dir.join("store"),
            advertise.clone(),
            secret.clone(),
        );
        if let Some(every) = config.snapshot_every {
            store_config.snapshot_every = every;
        }
        if let Some(keep) = config.keep_logs {
            store_config.keep_logs = keep;
        }
        let store = Store::open(store_config)
            .await
            .context("opening the store")?;
        // Decided before serving: once the RPC routes are up, the leader may write here.
        let fresh = !store.is_initialized();
        if fresh && matches!(config.bootstrap, Bootstrap::Resume) {
            bail!(
                "{} holds no cluster state: pass --init to start a cluster or --join URL to join one",
                config.data_dir.display()
            );
        }
        let registry = Registry::new(store.clone());
        let router = apiserver::router(registry.clone(), config.api);
        let service = hyper_util::service::TowerToHyperService::new(router);
        let server = tokio::spawn(reef_net::serve(
            config.listener,
            config.serve,
            move |_peer| service.clone(),
            None,
        ));
        match (&config.bootstrap, fresh) {
            (Bootstrap::Init, true) => store
                .initialize_single()
                .await
                .context("initialising the cluster")?,
            (Bootstrap::Join { url, token }, true) => {
                request_membership(url, token, config.id, &advertise).await?;
            }
            // A join that was cut short left a learner: ask again to be promoted.
            (Bootstrap::Join { url, token }, false) if is_learner(&store, config.id) => {
                request_membership(url, token, config.id, &advertise).await?;
            }
            (Bootstrap::Init | Bootstrap::Join { .. }, false) => {
                tracing::info!(
                    "the data dir holds cluster state; resuming (--init/--join ignored)"
                );
            }
            (Bootstrap::Resume, _) => {}
        }
        wait_for_leader(&store).await;
        let credentials = Credentials::new(store.clone());
        if store.is_leader() {
            credentials
                .publish_raft_secret(&secret)
                .await
                .context("publishing the Raft secret")?;
        }
        let tokens = match config.bootstrap {
            Bootstrap::Init => Some(credentials.bootstrap(&config.data_dir).await?),
            _ => None,
        };
        let mut tasks = vec![server];
        tasks.push(tokio::spawn(
            Scheduler::new(registry.clone(), config.policy).run(),
        ));
        tasks.extend(crate::controllers::spawn_all(&registry, config.controllers));
        Ok(Member {
            store,
            registry,
            address,
            tokens,
            tasks,
        })
    }

    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.store.shutdown().await {
            tracing::warn!("store shutdown: {e}");
        }
    }
}

fn is_learner(store: &Store, id: u64) -> bool {
    store
        .members()
        .iter()
        .any(|m| m.id == id && m.role == crate::store::MemberRole::Learner)
}

/// Waits, however long it takes, for a leader: after a full restart members come
/// back one by one, and the first must not give up before a quorum is back.
async fn wait_for_leader(store: &Store) {
    let started = Instant::now();
    let mut next_report = Duration::from_secs(10);
    while store.leader_id().is_none() {
        if started.elapsed() >= next_report {
            tracing::warn!("no Raft leader after {next_report:?}; waiting for a quorum of members");
            next_report *= 2;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
