//! One control-plane member wired together: store, API server, scheduler and
//! controllers, serving on one port (API and Raft share it).

use crate::apiserver::{self, auth, ApiConfig};
use crate::registry::Registry;
use crate::scheduler::{plan::Policy, Scheduler};
use crate::store::{Store, StoreConfig};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub struct MemberConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    /// Already bound, so callers can pass port 0 and learn the port before starting.
    pub listener: TcpListener,
    /// The address other members and nodes use; defaults to the bound one.
    pub advertise: Option<String>,
    /// Make this the first member of a new cluster if its data dir is empty.
    pub init: bool,
    pub policy: Policy,
    pub api: ApiConfig,
}

pub struct Member {
    pub store: Arc<Store>,
    pub registry: Registry,
    pub address: SocketAddr,
    /// The admin and join tokens, for a member that created the cluster.
    pub tokens: Option<auth::BootstrapTokens>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    pub async fn start(config: MemberConfig) -> anyhow::Result<Member> {
        let address = config.listener.local_addr()?;
        let advertise = config.advertise.unwrap_or_else(|| address.to_string());
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        // Members authenticate Raft RPCs with their own secret, not the join token:
        // nodes hold that one and must not be able to speak Raft.
        let secret = auth::token_file(&config.data_dir, "raft.secret")
            .with_context(|| format!("reading the Raft secret in {}", config.data_dir.display()))?;
        let store = Store::open(StoreConfig::new(
            config.id,
            config.data_dir.join("store"),
            advertise,
            secret,
        ))
        .await
        .context("opening the store")?;
        let registry = Registry::new(store.clone());
        let router = apiserver::router(registry.clone(), config.api);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(config.listener, router).await {
                tracing::error!("API server stopped: {e}");
            }
        });
        if config.init {
            store
                .initialize_single()
                .await
                .context("initialising the cluster")?;
        }
        wait_for_leader(&store, Duration::from_secs(30)).await?;
        let tokens = if config.init {
            Some(auth::bootstrap(&registry, &config.data_dir).await?)
        } else {
            None
        };
        let mut tasks = vec![server];
        tasks.push(tokio::spawn(
            Scheduler::new(registry.clone(), config.policy).run(),
        ));
        tasks.extend(crate::controllers::spawn_all(&registry));
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

async fn wait_for_leader(store: &Store, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while store.leader_id().is_none() {
        if Instant::now() > deadline {
            anyhow::bail!("no Raft leader elected within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
