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
use crate::tls::ClusterCa;
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
    /// Join the cluster that `url` (any member) belongs to, with the member
    /// token, trusting `ca` (PEM) when `url` is HTTPS.
    Join {
        url: String,
        token: String,
        ca: Option<String>,
    },
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
    pub raft_timers: RaftTimers,
    pub controllers: crate::controllers::ControllerConfig,
    /// Serve HTTPS even on loopback (beyond loopback a member always does).
    pub tls: bool,
    /// OCI registries whose components specs may name.
    pub oci_registries: Vec<String>,
}

/// Raft's timers (see [`StoreConfig::heartbeat`] and
/// [`StoreConfig::election_min`]); the election maximum is 4/3 of the minimum.
#[derive(Clone, Copy, Debug)]
pub struct RaftTimers {
    pub heartbeat: std::time::Duration,
    pub election: std::time::Duration,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            heartbeat: crate::store::DEFAULT_HEARTBEAT,
            election: crate::store::DEFAULT_ELECTION_MIN,
        }
    }
}

pub struct Member {
    pub store: Arc<Store>,
    pub registry: Registry,
    pub address: SocketAddr,
    /// The admin, join and member tokens, for a member that created the cluster.
    pub tokens: Option<BootstrapTokens>,
    /// The cluster CA's certificate (PEM), which clients of an HTTPS member trust.
    pub ca_pem: Option<String>,
    /// "https" or "http".
    pub scheme: &'static str,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const SECRET_FILE: &str = "raft.secret";
/// The cluster CA, kept in the data dir so a member can serve before its
/// store is open (`ca.crt` is also what nodes and clients are given).
const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";

/// What a member needs from its cluster before it serves.
struct Material {
    secret: String,
    ca: Option<ClusterCa>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .filter(|text| !text.trim().is_empty())
}

fn save_ca(data_dir: &Path, ca: &ClusterCa) -> anyhow::Result<()> {
    let cert = data_dir.join(CA_CERT_FILE);
    std::fs::write(&cert, &ca.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    let key = data_dir.join(CA_KEY_FILE);
    reef_api::config::write_private(&key, ca.key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))
}

/// The Raft secret and the CA: from the data dir, or minted (init), or
/// fetched (join). A restored member finds its CA in its store later.
async fn material(data_dir: &Path, bootstrap: &Bootstrap) -> anyhow::Result<Material> {
    let secret_path = data_dir.join(SECRET_FILE);
    let secret = read_trimmed(&secret_path).map(|s| s.trim().to_string());
    let ca = match (
        read_trimmed(&data_dir.join(CA_CERT_FILE)),
        read_trimmed(&data_dir.join(CA_KEY_FILE)),
    ) {
        (Some(cert_pem), Some(key_pem)) => Some(ClusterCa { cert_pem, key_pem }),
        _ => None,
    };
    let (secret, ca) = match (secret, bootstrap) {
        (Some(secret), _) => (secret, ca),
        (None, Bootstrap::Init) => (
            credentials::new_secret(),
            Some(match ca {
                Some(ca) => ca,
                None => ClusterCa::generate()?,
            }),
        ),
        (
            None,
            Bootstrap::Join {
                url,
                token,
                ca: trusted,
            },
        ) => {
            let info = fetch_join_info(url, token, trusted.as_deref()).await?;
            (info.raft_secret, info.ca)
        }
        (None, Bootstrap::Resume) => bail!(
            "{} holds no cluster state: pass --init to start a cluster or --join URL to join one",
            data_dir.display()
        ),
    };
    reef_api::config::write_private(&secret_path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("writing {}", secret_path.display()))?;
    if let Some(ca) = &ca {
        save_ca(data_dir, ca)?;
    }
    Ok(Material { secret, ca })
}

fn join_client(url: &str, token: &str, ca: Option<&str>) -> anyhow::Result<reef_api::Client> {
    let mut client = reef_api::Client::new(
        reef_api::config::parse_servers(url),
        Some(token.to_string()),
    )?
    .with_retry_for(Duration::from_secs(60));
    if let Some(ca) = ca {
        client = client.with_ca(ca)?;
    }
    Ok(client)
}

async fn fetch_join_info(url: &str, token: &str, ca: Option<&str>) -> anyhow::Result<JoinInfo> {
    let client = join_client(url, token, ca)?;
    let response = client
        .get_raw("/api/v1/cluster/join")
        .await
        .with_context(|| format!("asking {url} to join"))?;
    response.json().await.context("reading the join answer")
}

/// The names a member's certificate covers: how members, nodes and local
/// clients reach it.
fn certificate_names(address: SocketAddr, advertise: &str) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !address.ip().is_unspecified() {
        names.push(address.ip().to_string());
    }
    let host = match advertise.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => advertise,
    };
    names.push(host.to_string());
    names
}

/// Asks the cluster to add this member; returns once it is a voter.
async fn request_membership(
    url: &str,
    token: &str,
    ca: Option<&str>,
    id: u64,
    advertise: &str,
) -> anyhow::Result<()> {
    let client = join_client(url, token, ca)?;
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
        let Material { secret, mut ca } = material(&config.data_dir, &config.bootstrap).await?;
        // Beyond loopback a member always serves HTTPS; on loopback when asked.
        let tls = config.tls || !address.ip().is_loopback();
        // Members reach each other at this address; its scheme says HTTPS.
        let member_address = if tls {
            format!("https://{advertise}")
        } else {
            advertise.clone()
        };
        let mut store_config = StoreConfig::new(
            config.id,
            config.data_dir.join("store"),
            member_address.clone(),
            secret.clone(),
        );
        store_config.ca_pem = ca.as_ref().map(|ca| ca.cert_pem.clone());
        if let Some(every) = config.snapshot_every {
            store_config.snapshot_every = every;
        }
        if let Some(keep) = config.keep_logs {
            store_config.keep_logs = keep;
        }
        store_config.heartbeat = config.raft_timers.heartbeat;
        store_config.election_min = config.raft_timers.election;
        store_config.election_max = config.raft_timers.election * 4 / 3;
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
        let credentials = Credentials::new(store.clone());
        if ca.is_none() {
            // A restored member: the CA came with the backup.
            ca = credentials.cluster_ca()?;
            if let Some(ca) = &ca {
                save_ca(&config.data_dir, ca)?;
            }
        }
        let mut serve = config.serve;
        if tls {
            let Some(ca) = &ca else {
                bail!(
                    "this member must serve HTTPS (it listens on {address}) but its cluster has no CA: \
                     the cluster was made before reef had one; start it on loopback, or start a new cluster"
                );
            };
            let cert = ca.issue_server(&certificate_names(address, &advertise))?;
            serve.tls = Some(
                reef_net::tls::server_config(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
            );
        }
        let registry = Registry::new(store.clone()).allow_oci_registries(config.oci_registries);
        let board = crate::autoscaler::board::LoadBoard::default();
        let router = apiserver::router(registry.clone(), config.api, board.clone());
        let service = hyper_util::service::TowerToHyperService::new(router);
        let server = tokio::spawn(reef_net::serve(
            config.listener,
            serve,
            move |_peer| service.clone(),
            None,
        ));
        match (&config.bootstrap, fresh) {
            (Bootstrap::Init, true) => store
                .initialize_single()
                .await
                .context("initialising the cluster")?,
            (Bootstrap::Join { url, token, ca }, true) => {
                request_membership(url, token, ca.as_deref(), config.id, &member_address).await?;
            }
            // A join that was cut short left a learner: ask again to be promoted.
            (Bootstrap::Join { url, token, ca }, false) if is_learner(&store, config.id) => {
                request_membership(url, token, ca.as_deref(), config.id, &member_address).await?;
            }
            (Bootstrap::Init | Bootstrap::Join { .. }, false) => {
                tracing::info!(
                    "the data dir holds cluster state; resuming (--init/--join ignored)"
                );
            }
            (Bootstrap::Resume, _) => {}
        }
        wait_for_leader(&store).await;
        if store.is_leader() {
            credentials
                .publish_raft_secret(&secret)
                .await
                .context("publishing the Raft secret")?;
            if let Some(ca) = &ca {
                credentials
                    .publish_ca(ca)
                    .await
                    .context("publishing the cluster CA")?;
            }
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
        tasks.push(tokio::spawn(crate::autoscaler::run(
            registry.clone(),
            board,
        )));
        Ok(Member {
            store,
            registry,
            address,
            tokens,
            ca_pem: ca.map(|ca| ca.cert_pem),
            scheme: if tls { "https" } else { "http" },
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
