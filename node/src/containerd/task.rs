//! One pod as a containerd container: its rootfs (the component), its spec
//! (args, env, memory limit, request timeout), and its tasks: one per run of
//! a command pod, one serving for an http pod.

use super::fifo::{self, Pump};
use super::{Containerd, LISTENING, NODE_LABEL, POD_LABEL, RUNTIME};
use crate::proxy::forward::{strip_hop_by_hop, InBody};
use crate::runtime::{Exit, HandleError, OutputSink, Stream};
use anyhow::Context;
use containerd_client::services::v1::{
    container::Runtime, Container, CreateContainerRequest, CreateTaskRequest, StartRequest,
    WaitRequest,
};
use containerd_client::types::Mount;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::net::SocketAddr;
use std::path::PathBuf;
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
}

/// One pod's container; dropping it removes the container and its task.
pub struct TaskPod {
    containerd: Containerd,
    /// The pod's part of its containers' ids; each run adds its number.
    base: String,
    /// The container of each run is made afresh: containerd may still be
    /// closing the last one's shim, which a new task under the same id
    /// would reach.
    template: Container,
    runs: std::sync::atomic::AtomicU32,
    /// The container of the run now, removed with the pod.
    current: Arc<std::sync::Mutex<Option<String>>>,
    dir: PathBuf,
    output: Arc<dyn OutputSink>,
    /// An http pod's task serves (on loopback).
    http: bool,
    timeout: Duration,
}

impl TaskPod {
    /// Writes the component where the shim will mount it; no container or
    /// task exists yet. `http`: the task serves on a loopback port.
    pub async fn create(
        containerd: &Containerd,
        pod_key: &str,
        uid: &str,
        wasm: &[u8],
        spec: TaskSpec,
        http: bool,
        output: Arc<dyn OutputSink>,
    ) -> anyhow::Result<TaskPod> {
        let base = containerd.container_base(pod_key, uid);
        let dir = containerd.dir.join(&base);
        let image = dir.join("image");
        std::fs::create_dir_all(&image).with_context(|| format!("creating {}", image.display()))?;
        std::fs::write(image.join(ENTRYPOINT), wasm)
            .with_context(|| format!("writing the component into {}", image.display()))?;
        // Ours come last: the shim takes the last of a name, so a pod's env
        // cannot move its port off loopback.
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!(
            "REEF_REQUEST_TIMEOUT={}",
            humantime::format_duration(spec.timeout)
        ));
        if http {
            env.push("REEF_LISTEN=127.0.0.1:0".to_string());
        }
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
        let template = Container {
            labels: labels.into_iter().collect(),
            runtime: Some(Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.to_string(),
                value: serde_json::to_vec(&runtime_spec)?,
            }),
            ..Default::default()
        };
        Ok(TaskPod {
            containerd: containerd.clone(),
            base,
            template,
            runs: Default::default(),
            current: Default::default(),
            dir,
            output,
            http,
            timeout: spec.timeout,
        })
    }

    /// Runs a command pod's task once, to its end.
    pub async fn run(&self) -> Exit {
        let started = match self.start().await {
            Ok(started) => started,
            Err(e) => return Exit::Start(format!("{e:#}")),
        };
        started.exit().await
    }

    /// Starts an http pod's task and waits until it listens; its endpoint,
    /// and the task, whose end is a failure of the pod. The shim binds port
    /// 0 on loopback and says which port it got (no other process can take
    /// the port between a choice and the bind).
    pub async fn serve(&self) -> Result<(TaskEndpoint, Started<'_>), Exit> {
        if !self.http {
            return Err(Exit::Start("not an http pod".into()));
        }
        let mut started = self
            .start()
            .await
            .map_err(|e| Exit::Start(format!("{e:#}")))?;
        let said = format!("{}: {LISTENING}", started.id);
        let deadline = Instant::now() + LISTEN_DEADLINE;
        let address = loop {
            let tail = started.stderr();
            let address = tail
                .lines()
                .find_map(|line| line.strip_prefix(&said))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .filter(|a| a.ip().is_loopback());
            if let Some(address) = address {
                break address;
            }
            if started.wait.is_finished() || Instant::now() > deadline {
                if !started.wait.is_finished() {
                    self.containerd.kill(&started.id).await;
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
        };
        Ok((endpoint, started))
    }

    /// Creates the run's container and its task with fresh FIFOs, and
    /// starts it.
    async fn start(&self) -> anyhow::Result<Started<'_>> {
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{run}", self.base);
        let container = Container {
            id: id.clone(),
            ..self.template.clone()
        };
        self.containerd
            .containers()
            .create(Containerd::request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .with_context(|| format!("creating container {id}"))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        let pumps = [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)].map(|(name, s)| {
            let path = self.dir.join(name);
            fifo::make(&path).with_context(|| format!("making the FIFO {}", path.display()))?;
            let pump = Pump::start(path.clone(), s, self.output.clone())
                .with_context(|| format!("opening {}", path.display()))?;
            anyhow::Ok((path, pump))
        });
        let [stdout, stderr] = pumps;
        let ((stdout, out), (stderr, err)) = (stdout?, stderr?);
        let mount = Mount {
            r#type: "bind".into(),
            source: self.dir.join("image").display().to_string(),
            options: vec!["rbind".into(), "ro".into()],
            ..Default::default()
        };
        let mut tasks = self.containerd.tasks();
        tasks
            .create(Containerd::request(CreateTaskRequest {
                container_id: id.clone(),
                rootfs: vec![mount],
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                ..Default::default()
            }))
            .await
            .context("creating the task")?;
        // Waiting from before the start: an exit is never missed.
        let wait = tokio::spawn({
            let mut tasks = tasks.clone();
            let request = Containerd::request(WaitRequest {
                container_id: id.clone(),
                ..Default::default()
            });
            async move {
                tasks
                    .wait(request)
                    .await
                    .map(|r| r.into_inner().exit_status)
            }
        });
        tasks
            .start(Containerd::request(StartRequest {
                container_id: id.clone(),
                ..Default::default()
            }))
            .await
            .context("starting the task")?;
        Ok(Started {
            pod: self,
            id,
            wait,
            waited: None,
            pumps: Some((out, err)),
        })
    }
}

impl Drop for TaskPod {
    fn drop(&mut self) {
        let (containerd, dir) = (self.containerd.clone(), self.dir.clone());
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Dropped by a task being aborted: the removal goes on without it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(id) = current {
                    containerd.remove(&id).await;
                }
                let _ = std::fs::remove_dir_all(dir);
            });
        }
    }
}

/// A started task of a pod.
pub struct Started<'a> {
    pod: &'a TaskPod,
    /// The run's container.
    id: String,
    wait: tokio::task::JoinHandle<Waited>,
    waited: Option<Result<Waited, tokio::task::JoinError>>,
    pumps: Option<(Pump, Pump)>,
}

type Waited = Result<u32, containerd_client::tonic::Status>;

impl Started<'_> {
    /// Waits for the task's end: how it ended, as the embedded runtime would
    /// say it (the shim's last stderr line names a trap or out-of-memory).
    pub async fn exit(mut self) -> Exit {
        self.ended().await;
        let waited = self.waited.take().unwrap_or_else(|| Ok(Ok(255)));
        // The run is over: its container goes (the pod's next run makes its own).
        self.pod.containerd.remove(&self.id).await;
        self.pod
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_if(|current| *current == self.id);
        let tail = match self.pumps.take() {
            Some((out, err)) => {
                out.finish().await;
                err.finish().await
            }
            None => String::new(),
        };
        match waited {
            Ok(Ok(code)) => {
                let prefix = format!("{}: ", self.id);
                let report = tail.lines().rev().find_map(|l| l.strip_prefix(&prefix));
                Exit::reported(code as i32, report)
            }
            Ok(Err(status)) => Exit::Start(format!("waiting for the task: {}", status.message())),
            Err(e) => Exit::Start(format!("waiting for the task: {e}")),
        }
    }

    /// What the task wrote on stderr so far (its end).
    fn stderr(&self) -> String {
        self.pumps
            .as_ref()
            .map(|(_, err)| err.tail())
            .unwrap_or_default()
    }

    /// Returns once the task has ended; cancel-safe, so it can race
    /// other work (an http pod's readiness checks).
    pub async fn ended(&mut self) {
        if self.waited.is_none() {
            self.waited = Some((&mut self.wait).await);
        }
    }
}

/// Where the proxy sends an http pod's requests when containerd runs it.
#[derive(Clone)]
pub struct TaskEndpoint {
    address: SocketAddr,
    timeout: Duration,
    client: Client<HttpConnector, InBody>,
}

impl TaskEndpoint {
    /// Sends one request to the task. The shim answers 504 itself at the
    /// pod's timeout; the node gives up a second later.
    pub async fn handle(
        &self,
        req: hyper::Request<InBody>,
    ) -> Result<hyper::Response<Incoming>, HandleError> {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("http://{}{path}", self.address)
            .parse()
            .map_err(|e| HandleError::BadRequest(format!("{e}")))?;
        let request = hyper::Request::from_parts(parts, body);
        let answer = tokio::time::timeout(self.timeout + Duration::from_secs(1), async {
            self.client.request(request).await
        });
        match answer.await {
            Err(_) => Err(HandleError::Timeout),
            Ok(Ok(mut response)) => {
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Ok(Err(e)) if e.is_connect() => Err(HandleError::Unavailable(format!(
                "the pod's task does not take connections: {e}"
            ))),
            Ok(Err(e)) => Err(HandleError::NoResponse(format!("the pod's task: {e}"))),
        }
    }
}
