//! The daemons: `reef up` (everything in one process), `reef control-plane` and
//! `reef node`. Each binds its ports first (port 0 works), prints one
//! `reef: listening …` line and writes the same to `DATA_DIR/addresses`.

use crate::tuning::{agent_config, ControlPlaneTuning, NodeTuning, ServeTuning};
use crate::{verbs, CliResult, Failure};
use anyhow::Context;
use reef_api::config::{self, ClientConfig};
use reef_api::{Client, Kind, NodeSpec, NodeStatus};
use reef_control_plane::member::{Bootstrap, Member, MemberConfig};
use reef_node::daemon::{self, NodeConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state [default: $XDG_DATA_HOME/reef].
    #[arg(long, env = "REEF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// API address (port 0 picks a free port).
    #[arg(long, env = "REEF_API", default_value = "127.0.0.1:7070")]
    api: String,
    /// Ingress address of the node proxy.
    #[arg(long, env = "REEF_INGRESS", default_value = "127.0.0.1:8080")]
    ingress: String,
    /// Manifests to apply once the cluster is ready.
    #[arg(long)]
    apply: Vec<PathBuf>,
    /// Serve the API over HTTPS even on loopback (beyond loopback it always is).
    #[arg(long, env = "REEF_TLS")]
    tls: bool,
    /// Name of the node inside this process.
    #[arg(long, env = "REEF_NODE_NAME", default_value = "local")]
    node_name: String,
    /// The node's own port (logs, forwarded requests; port 0 picks a free port).
    #[arg(long, env = "REEF_NODE_LISTEN", default_value = "127.0.0.1:0")]
    node_listen: String,
    #[command(flatten)]
    node: NodeTuning,
    #[command(flatten)]
    control_plane: ControlPlaneTuning,
    #[command(flatten)]
    serve: ServeTuning,
}

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
    /// This member's id, unique in the cluster.
    #[arg(long, env = "REEF_ID")]
    id: u64,
    #[arg(long, env = "REEF_DATA_DIR")]
    data_dir: PathBuf,
    /// API and Raft address (port 0 picks a free port).
    #[arg(long, env = "REEF_LISTEN")]
    listen: String,
    /// The address others use to reach this member [default: the bound one].
    #[arg(long, env = "REEF_ADVERTISE")]
    advertise: Option<String>,
    /// Create a new cluster with this member as its first voter (ignored once the data dir holds state).
    #[arg(long, conflicts_with = "join")]
    init: bool,
    /// Join the cluster of this member URL (ignored once the data dir holds state).
    #[arg(long, env = "REEF_JOIN")]
    join: Option<String>,
    /// File holding the cluster's member token (the first member's
    /// `member.token`), for --join (or set REEF_JOIN_TOKEN).
    #[arg(long, env = "REEF_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// The cluster CA (the first member's `ca.crt`), to trust an https:// --join URL.
    #[arg(long, env = "REEF_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Serve HTTPS even on loopback (beyond loopback a member always does).
    #[arg(long, env = "REEF_TLS")]
    tls: bool,
    #[command(flatten)]
    tuning: ControlPlaneTuning,
    #[command(flatten)]
    serve: ServeTuning,
}

#[derive(clap::Args)]
pub struct NodeArgs {
    #[arg(long, env = "REEF_NAME")]
    name: String,
    #[arg(long, env = "REEF_DATA_DIR")]
    data_dir: PathBuf,
    /// Control-plane URLs, comma-separated.
    #[arg(long, env = "REEF_SERVER")]
    server: String,
    /// File holding the cluster's join token (or set REEF_JOIN_TOKEN); used once,
    /// to obtain this node's own credential (kept in the data dir).
    #[arg(long, env = "REEF_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// The cluster CA (a member's `ca.crt`), to trust https:// servers.
    #[arg(long, env = "REEF_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Ingress address of this node's proxy.
    #[arg(long, env = "REEF_INGRESS")]
    ingress: String,
    /// Node-to-node address: requests other nodes forward to this node's pods
    /// (port 0 picks a free port).
    #[arg(long, env = "REEF_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// The address other nodes use to reach --listen [default: the bound one].
    #[arg(long, env = "REEF_ADVERTISE")]
    advertise: Option<String>,
    #[command(flatten)]
    tuning: NodeTuning,
    #[command(flatten)]
    serve: ServeTuning,
}

fn create_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::other(format!("error: cannot create {}: {e}", dir.display())))
}

async fn bind(what: &str, address: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(address).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(" (is another reef running? pick another with --{what}, or port 0 for any free port)")
        } else {
            String::new()
        };
        Failure::other(format!("error: cannot listen on {address} for {what}: {e}{hint}"))
    })
}

/// Prints the `reef: listening` line and writes it to `DATA_DIR/addresses`.
fn announce(data_dir: &Path, parts: &[(&str, String)]) -> anyhow::Result<()> {
    let text: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let line = format!("reef: listening {}", text.join(" "));
    println!("{line}");
    let path = data_dir.join("addresses");
    let tmp = data_dir.join("addresses.tmp");
    std::fs::write(&tmp, format!("{line}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

async fn wait_for_shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}

/// Polls until the node has registered and is Ready, so applied pods schedule at once.
async fn wait_for_node(client: &Client, name: &str, timeout: Duration) -> CliResult {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(raw) = client.get(Kind::Node, None, name).await {
            if raw
                .typed::<NodeSpec, NodeStatus>()
                .is_ok_and(|n| n.status.is_ready())
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::other(format!(
                "error: node {name} did not become ready within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn up(args: UpArgs) -> CliResult {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    // Bad manifests fail before anything starts, like `reef apply` would.
    let manifests = args
        .apply
        .iter()
        .map(|file| reef_api::manifest::load(file, "default"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(e.to_string()))?;
    create_dir(&data_dir)?;
    let api_listener = bind("api", &args.api).await?;
    let ingress_listener = bind("ingress", &args.ingress).await?;
    let api_addr = api_listener.local_addr().map_err(anyhow::Error::from)?;
    let member = Member::start(MemberConfig {
        id: 1,
        data_dir: data_dir.clone(),
        listener: api_listener,
        advertise: None,
        bootstrap: Bootstrap::Init,
        policy: args.control_plane.scheduler_policy,
        oci_registries: args.control_plane.oci_registries.clone(),
        api: args.control_plane.api(),
        serve: args.serve.config("api"),
        snapshot_every: Some(args.control_plane.snapshot_every),
        keep_logs: Some(args.control_plane.keep_logs),
        raft_timers: args.control_plane.raft_timers(),
        controllers: args.control_plane.controllers(),
        tls: args.tls,
    })
    .await?;
    let tokens = member
        .tokens
        .as_ref()
        .ok_or_else(|| Failure::other("error: the first member has no tokens"))?;
    let server = format!("{}://{api_addr}", member.scheme);
    let with_ca = |client: Client| -> Result<Client, Failure> {
        Ok(match &member.ca_pem {
            Some(ca) if member.scheme == "https" => client.with_ca(ca)?,
            _ => client,
        })
    };
    let node_data = data_dir.join("node");
    create_dir(&node_data)?;
    let joining = with_ca(Client::new(
        vec![server.clone()],
        Some(tokens.join.clone()),
    )?)?;
    let credential = reef_node::credential::obtain(joining, &args.node_name, &node_data).await?;
    let node_client = with_ca(Client::new(vec![server.clone()], Some(credential))?)?;
    let ingress_addr = ingress_listener.local_addr().map_err(anyhow::Error::from)?;
    let node_listener = bind("node-listen", &args.node_listen).await?;
    let node_addr = node_listener.local_addr().map_err(anyhow::Error::from)?;
    let agent = agent_config(
        args.node_name.clone(),
        node_data,
        ingress_addr.to_string(),
        node_addr.to_string(),
        std::slice::from_ref(&server),
        &args.node,
    )
    .await?;
    let node = daemon::start_with_listen(
        NodeConfig {
            agent,
            ingress: ingress_listener,
            logs: args.node.logs(),
            serve: args.serve.config("ingress"),
            activation_queue: args.node.activation_queue,
        },
        Some(node_listener),
        node_client,
    )?;
    // Keep the user's default namespace; point server and token at this cluster.
    let client_config = ClientConfig {
        server: vec![server.clone()],
        token: Some(tokens.admin.clone()),
        namespace: ClientConfig::load().ok().and_then(|c| c.namespace),
        ca: member.ca_pem.clone().filter(|_| member.scheme == "https"),
    };
    let config_path = client_config
        .save()
        .map_err(|e| Failure::other(format!("error: cannot write the client config: {e}")))?;
    announce(
        &data_dir,
        &[
            ("api", api_addr.to_string()),
            ("ingress", ingress_addr.to_string()),
            ("listen", node_addr.to_string()),
        ],
    )?;
    tracing::info!(data_dir = %data_dir.display(), config = %config_path.display(), "cluster ready");
    if !manifests.is_empty() {
        let admin = with_ca(Client::new(vec![server], Some(tokens.admin.clone()))?)?;
        wait_for_node(&admin, &args.node_name, Duration::from_secs(60)).await?;
        for (file, manifest) in args.apply.iter().zip(&manifests) {
            // The cluster is up and may hold other work: report, keep serving.
            if let Err(failure) = verbs::apply_manifest(&admin, manifest).await {
                tracing::error!(file = %file.display(), "--apply failed: {}", failure.message);
            }
        }
    }
    wait_for_shutdown().await;
    node.drain(args.node.drain_timeout.0).await;
    member.shutdown().await;
    Ok(())
}

/// The cluster CA from `--ca-file`, if given.
fn read_ca(file: Option<&Path>) -> Result<Option<String>, Failure> {
    file.map(|file| {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::usage(format!("error: --ca-file {}: {e}", file.display())))
    })
    .transpose()
}

/// The join token from `--join-token-file FILE`, else `REEF_JOIN_TOKEN`.
fn join_token(file: Option<&Path>) -> Result<String, Failure> {
    match (file, std::env::var("REEF_JOIN_TOKEN")) {
        (Some(file), _) => Ok(std::fs::read_to_string(file)
            .map_err(|e| {
                Failure::usage(format!("error: --join-token-file {}: {e}", file.display()))
            })?
            .trim()
            .to_string()),
        (None, Ok(token)) => Ok(token),
        (None, Err(_)) => Err(Failure::usage(
            "error: give --join-token-file FILE or set REEF_JOIN_TOKEN",
        )),
    }
}

pub async fn control_plane(args: ControlPlaneArgs) -> CliResult {
    let bootstrap = match (&args.join, args.init) {
        (Some(url), _) => Bootstrap::Join {
            url: url.clone(),
            token: join_token(args.join_token_file.as_deref())?,
            ca: read_ca(args.ca_file.as_deref())?,
        },
        (None, true) => Bootstrap::Init,
        (None, false) => Bootstrap::Resume,
    };
    create_dir(&args.data_dir)?;
    let listener = bind("listen", &args.listen).await?;
    let address = listener.local_addr().map_err(anyhow::Error::from)?;
    // Announced once bound (DESIGN §5); joining and electing may take a while yet.
    announce(&args.data_dir, &[("api", address.to_string())])?;
    let member = Member::start(MemberConfig {
        id: args.id,
        data_dir: args.data_dir.clone(),
        listener,
        advertise: args.advertise.clone(),
        bootstrap,
        policy: args.tuning.scheduler_policy,
        oci_registries: args.tuning.oci_registries.clone(),
        api: args.tuning.api(),
        serve: args.serve.config("api"),
        snapshot_every: Some(args.tuning.snapshot_every),
        keep_logs: Some(args.tuning.keep_logs),
        raft_timers: args.tuning.raft_timers(),
        controllers: args.tuning.controllers(),
        tls: args.tls,
    })
    .await?;
    tracing::info!(id = args.id, "member ready");
    wait_for_shutdown().await;
    member.shutdown().await;
    Ok(())
}

pub async fn node(args: NodeArgs) -> CliResult {
    create_dir(&args.data_dir)?;
    let token = join_token(args.join_token_file.as_deref())?;
    let servers = config::parse_servers(&args.server);
    let ca = read_ca(args.ca_file.as_deref())?;
    let with_ca = |client: Client| -> Result<Client, Failure> {
        Ok(match &ca {
            Some(ca) => client.with_ca(ca)?,
            None => client,
        })
    };
    let joining = with_ca(Client::new(servers.clone(), Some(token))?)?;
    let credential = reef_node::credential::obtain(joining, &args.name, &args.data_dir).await?;
    let client = with_ca(Client::new(servers, Some(credential))?)?;
    let ingress = bind("ingress", &args.ingress).await?;
    let ingress_addr = ingress.local_addr().map_err(anyhow::Error::from)?;
    let listen = bind("listen", &args.listen).await?;
    let listen_addr = listen.local_addr().map_err(anyhow::Error::from)?;
    // What other nodes dial: published as the Node's `spec.address`.
    let advertise = match args.advertise.clone() {
        None if listen_addr.ip().is_unspecified() => {
            return Err(Failure::usage(format!(
                "error: --listen {listen_addr} is no address other nodes can reach: \
                 give --advertise HOST:PORT"
            )));
        }
        None => listen_addr.to_string(),
        Some(advertise) => {
            let port = advertise.rsplit_once(':').and_then(|(host, port)| {
                let port = port.parse::<u16>().ok()?;
                (!host.is_empty() && port != 0).then_some(port)
            });
            if port.is_none() {
                return Err(Failure::usage(format!(
                    "error: --advertise {advertise:?} is not HOST:PORT"
                )));
            }
            advertise
        }
    };
    let mut control_plane = config::parse_servers(&args.server);
    control_plane.push(listen_addr.to_string());
    let agent = agent_config(
        args.name.clone(),
        args.data_dir.clone(),
        ingress_addr.to_string(),
        advertise,
        &control_plane,
        &args.tuning,
    )
    .await?;
    let logs = args.tuning.logs();
    let drain = args.tuning.drain_timeout.0;
    let node = daemon::start_with_listen(
        NodeConfig {
            agent,
            ingress,
            logs,
            serve: args.serve.config("ingress"),
            activation_queue: args.tuning.activation_queue,
        },
        Some(listen),
        client,
    )?;
    let parts = vec![
        ("ingress", ingress_addr.to_string()),
        ("listen", listen_addr.to_string()),
    ];
    announce(&args.data_dir, &parts)?;
    wait_for_shutdown().await;
    node.drain(drain).await;
    Ok(())
}
