//! `reef`: the one binary. Client verbs (`apply`, `get`, `describe`, `delete`) talk to
//! the API; `up`, `control-plane` and `node` run daemons (DESIGN §5).
//!
//! Exit codes: 0 ok; 2 bad usage or bad input (including the server's 400/422);
//! 1 anything else that failed.

mod admin;
mod daemons;
mod oci;
mod ops;
mod output;
mod terminal;
mod tokens;
mod tuning;
mod verbs;

use clap::{Parser, Subcommand};
use reef_api::ClientError;
use std::path::PathBuf;
use std::process::ExitCode;

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    pub fn other(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e.status() {
            Some(400 | 422) => 2,
            _ => 1,
        };
        let message = match &e {
            ClientError::Api(api) => match &api.field {
                Some(field) => format!("error: {field}: {}", api.message),
                None => format!("error: {}", api.message),
            },
            other => format!("error: {other}"),
        };
        Failure { code, message }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::other(format!("error: {e:#}"))
    }
}

pub type CliResult = Result<(), Failure>;

#[derive(Parser)]
#[command(
    name = "reef",
    version,
    about = "A Kubernetes-style orchestrator for WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a dev cluster in one process: a control-plane member, a node and its proxy.
    Up(daemons::UpArgs),
    /// Run one control-plane member.
    ControlPlane(daemons::ControlPlaneArgs),
    /// Run one worker node.
    Node(daemons::NodeArgs),
    /// Create or update the objects of a manifest file, as one transaction.
    Apply {
        /// The TOML manifest.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Wait until every deployment in the file has rolled out.
        #[arg(long)]
        wait: bool,
    },
    /// List objects, or show one.
    Get(verbs::GetArgs),
    /// Show an object, its status and its recent events.
    Describe {
        kind: String,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print a pod's stdout and stderr.
    Logs {
        pod: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Keep printing new output as the pod writes it.
        #[arg(short, long)]
        follow: bool,
        /// The run before the last restart.
        #[arg(short, long)]
        previous: bool,
    },
    /// Stop scheduling new pods onto a node.
    Cordon { node: String },
    /// Allow scheduling onto a node again (also ends a drain).
    Uncordon { node: String },
    /// Cordon a node and move its pods elsewhere, replacements first.
    Drain {
        node: String,
        #[arg(long, default_value = "5m")]
        timeout: reef_api::quantity::Timeout,
    },
    /// Set a deployment's replica count.
    Scale {
        kind: String,
        name: String,
        #[arg(long)]
        replicas: u32,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Follow a deployment's rollout.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Tenants' bearer tokens: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Cluster operations: members, backup, restore.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Push a component to an OCI registry as a Wasm OCI artifact.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// oci://HOST[:PORT]/REPO:TAG
        reference: String,
        #[command(flatten)]
        registry: oci::RegistryArgs,
    },
    /// Pull a component from an OCI registry, checking its digests.
    Pull {
        /// oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX
        reference: String,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        registry: oci::RegistryArgs,
    },
    /// Component images for containerd.
    Image {
        #[command(subcommand)]
        command: oci::ImageCommand,
    },
    /// Print a shell completion script: `source <(reef completion bash)`.
    Completion { shell: clap_complete::Shell },
    /// Delete an object, or every object of a manifest file.
    Delete {
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
        file: Option<PathBuf>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Wait until every replica runs the current template, or say why it cannot.
    Status {
        kind: String,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(long, default_value = "5m")]
        timeout: reef_api::quantity::Timeout,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,cranelift=warn,wasmtime=warn")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "reef", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let daemon = matches!(
        cli.command,
        Command::Up(_) | Command::ControlPlane(_) | Command::Node(_)
    );
    if daemon {
        init_tracing();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => daemons::up(args).await,
            Command::ControlPlane(args) => daemons::control_plane(args).await,
            Command::Node(args) => daemons::node(args).await,
            Command::Apply {
                file,
                namespace,
                wait,
            } => verbs::apply(&file, namespace, wait).await,
            Command::Get(args) => verbs::get(args).await,
            Command::Logs {
                pod,
                namespace,
                follow,
                previous,
            } => verbs::logs(&pod, namespace, follow, previous).await,
            Command::Admin { command } => admin::run(command).await,
            Command::Token { command } => tokens::run(command).await,
            Command::Cordon { node } => ops::cordon(&node, true).await,
            Command::Uncordon { node } => ops::cordon(&node, false).await,
            Command::Drain { node, timeout } => ops::drain(&node, timeout.0).await,
            Command::Scale {
                kind,
                name,
                replicas,
                namespace,
            } => ops::scale(&kind, &name, replicas, namespace).await,
            Command::Rollout {
                command:
                    RolloutCommand::Status {
                        kind,
                        name,
                        namespace,
                        timeout,
                    },
            } => ops::rollout_status(&kind, &name, namespace, timeout.0).await,
            Command::Describe {
                kind,
                name,
                namespace,
            } => verbs::describe(&kind, &name, namespace).await,
            Command::Delete {
                kind,
                name,
                file,
                namespace,
            } => verbs::delete(kind, name, file, namespace).await,
            Command::Image { command } => oci::image(command),
            Command::Push {
                file,
                reference,
                registry,
            } => oci::push(&file, &reference, &registry).await,
            Command::Pull {
                reference,
                output,
                registry,
            } => oci::pull(&reference, &output, &registry).await,
            // Answered before the runtime starts.
            Command::Completion { .. } => Ok(()),
        }
    });
    // Daemons leave tasks behind (servers, aborted loops) that still hold the
    // store: dropping them lets RocksDB close before `exit` runs C++ static
    // destructors; racing the two aborts the process ("pthread lock: Invalid
    // argument"). Bounded, so a stuck blocking call cannot hold the exit forever.
    if daemon {
        runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    } else {
        runtime.shutdown_background();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
