//! One pod under containerd: its rootfs (the component), the spec its runs'
//! containers share (args, env, memory limit, request timeout, world), and
//! its runs: one per run of a command pod, one serving for an http pod.

use super::endpoint::TaskEndpoint;
use super::run::{self, Created, RunError, Started};
use super::{Containerd, LISTENING, NODE_LABEL, POD_LABEL, RUNTIME};
use crate::runtime::{Exit, OutputSink};
use containerd_client::services::v1::{container::Runtime, Container};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The component's name in the rootfs the shim mounts.
const ENTRYPOINT: &str = "component.wasm";
/// How the runtime spec travels in a container record (containerd's typeurl).
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// How long a started http task may take to listen before it counts as failed.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// What the pod's spec gives its task.
pub struct TaskSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// An http pod (else a command).
    pub http: bool,
}

/// One pod under containerd; dropping it removes its files (each run's
/// container goes with the run).
pub struct TaskPod {
    containerd: Containerd,
    /// The pod's part of its containers' ids; each run adds its number.
    base: String,
    template: Container,
    runs: AtomicU32,
    /// The first run, made when the pod was prepared, so a component the
    /// shim refuses fails the pod for good, as it would on the embedded
    /// runtime.
    first: tokio::sync::Mutex<Option<Created>>,
    dir: PathBuf,
    output: Arc<dyn OutputSink>,
    http: bool,
    timeout: Duration,
}

impl TaskPod {
    /// Writes the component where the shim will mount it and makes the
    /// first run's container and task (not started).
    pub async fn create(
        containerd: &Containerd,
        pod_key: &str,
        uid: &str,
        wasm: &[u8],
        spec: TaskSpec,
        output: Arc<dyn OutputSink>,
    ) -> Result<TaskPod, RunError> {
        let base = containerd.container_base(pod_key, uid);
        let dir = containerd.dir.join(&base);
        let image = dir.join("image");
        let failed = |what: &str, e: std::io::Error| {
            RunError::Failed(format!("{what} {}: {e}", image.display()))
        };
        tokio::fs::create_dir_all(&image)
            .await
            .map_err(|e| failed("creating", e))?;
        tokio::fs::write(image.join(ENTRYPOINT), wasm)
            .await
            .map_err(|e| failed("writing the component into", e))?;
        // Ours come last: the shim takes the last of a name, so a pod's env
        // moves neither its port off loopback nor its world.
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!(
            "REEF_REQUEST_TIMEOUT={}",
            humantime::format_duration(spec.timeout)
        ));
        env.push("REEF_LISTEN=127.0.0.1:0".into());
        env.push(format!(
            "REEF_WORLD={}",
            if spec.http { "http" } else { "command" }
        ));
        let mut args = vec![format!("/{ENTRYPOINT}")];
        args.extend(spec.args.iter().cloned());
        let runtime_spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": { "args": args, "env": env, "cwd": "/" },
            "root": { "path": "rootfs", "readonly": true },
            "linux": { "resources": { "memory": { "limit": spec.memory_bytes } } },
        });
        let labels = [
            (NODE_LABEL.to_string(), containerd.node.clone()),
            (POD_LABEL.to_string(), pod_key.to_string()),
        ];
        let spec_bytes = serde_json::to_vec(&runtime_spec)
            .map_err(|e| RunError::Failed(format!("encoding the spec: {e}")))?;
        let template = Container {
            labels: labels.into_iter().collect(),
            runtime: Some(Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.to_string(),
                value: spec_bytes,
            }),
            ..Default::default()
        };
        let pod = TaskPod {
            containerd: containerd.clone(),
            base,
            template,
            runs: AtomicU32::new(0),
            first: tokio::sync::Mutex::new(None),
            dir,
            output,
            http: spec.http,
            timeout: spec.timeout,
        };
        let first = pod.create_run().await?;
        *pod.first.lock().await = Some(first);
        Ok(pod)
    }

    async fn create_run(&self) -> Result<Created, RunError> {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{run}", self.base);
        run::create(
            &self.containerd,
            id,
            &self.template,
            &self.dir,
            &self.output,
        )
        .await
    }

    /// The next run, started.
    async fn start(&self) -> Result<Started, RunError> {
        let first = self.first.lock().await.take();
        let created = match first {
            Some(created) => created,
            None => self.create_run().await?,
        };
        created.start().await
    }

    /// Runs a command pod's task once, to its end.
    pub async fn run(&self) -> Exit {
        match self.start().await {
            Ok(started) => started.exit().await,
            Err(e) => Exit::Start(e.message().to_string()),
        }
    }

    /// Starts an http pod's task and waits until it listens: its endpoint,
    /// and the run, whose end is a failure of the pod. The shim binds port
    /// 0 on loopback and says which port it got (no other process can take
    /// the port between a choice and the bind); the pod's world is forced
    /// to http, so no guest code runs before that line.
    pub async fn serve(&self) -> Result<(TaskEndpoint, Started), Exit> {
        if !self.http {
            return Err(Exit::Start("not an http pod".into()));
        }
        let mut started = self
            .start()
            .await
            .map_err(|e| Exit::Start(e.message().to_string()))?;
        let said = format!("{}: {LISTENING}", started.guard.id);
        let deadline = Instant::now() + LISTEN_DEADLINE;
        let address = loop {
            let address = started
                .stderr()
                .lines()
                .find_map(|line| line.strip_prefix(&said))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .filter(|a| a.ip().is_loopback());
            if let Some(address) = address {
                break address;
            }
            if started.has_ended() || Instant::now() > deadline {
                if !started.has_ended() {
                    started.kill().await;
                }
                started.ended().await;
                return Err(started.exit().await);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let endpoint = TaskEndpoint {
            address,
            timeout: self.timeout,
            client: self.containerd.client.clone(),
            _run: started.guard.clone(),
        };
        Ok((endpoint, started))
    }
}

impl Drop for TaskPod {
    fn drop(&mut self) {
        // The runs' containers go with their guards; the files go here.
        let dir = self.dir.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(dir);
            });
        }
    }
}
