//! The node agent (kubelet): registers and renews its lease, mirrors the pods bound
//! to this node, and makes the running set match: fetch and verify the component,
//! compile once per digest (cached on disk), give each pod its sandbox (scratch
//! directory, log sink), then serve `http` pods through the proxy's pod table or
//! run `command` pods, restarting them by their policy with back-off; report
//! status and events. It talks to the control plane only through the HTTP API,
//! with its join token.

mod backoff;
mod blobs;
mod command;
mod events;
mod failures;
mod lease;
mod served;

pub use backoff::Backoff;

use crate::containerd::{RunError, TaskPod, TaskSpec};
use crate::logs::NodeLogs;
use crate::pods::LocalPod;
use crate::pods::{pod_dir, pod_key, PodTable};
use crate::reflector::{reflect, Mirror};
use crate::runtime::{CommandPod, HttpPod, PodSettings, Runtime, ScratchDir};
use blobs::BlobCache;
use reef_api::*;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct AgentConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// This node's ingress address, as published in its Node object.
    pub ingress: String,
    /// This node's node-to-node address (forwarding, logs).
    pub address: String,
    pub capacity: Resources,
    pub labels: Labels,
    pub heartbeat: Duration,
    /// Waits between restarts of command pods.
    pub backoff: Backoff,
    /// Where pods' outbound HTTP may connect.
    pub network: Arc<crate::runtime::NetworkPolicy>,
    /// What each pod may hold of this node.
    pub pod_limits: crate::runtime::PodLimits,
    /// Routes pods' calls to the cluster's Services (the node's proxy).
    pub services: Option<Arc<dyn crate::runtime::ServiceCalls>>,
    /// How OCI registries are reached for `oci://` components.
    pub registries: reef_oci::Access,
    /// The runtimes this node offers (registered on its Node): pods name one.
    pub runtimes: Vec<RuntimeKind>,
    /// containerd, when `containerd` is among them.
    pub containerd: Option<crate::containerd::Containerd>,
}

/// A pod this agent has taken on: the task running it (none for a pod that had
/// already finished when this agent found it), and which object it is.
struct Managed {
    uid: String,
    digest: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Agent {
    config: AgentConfig,
    client: Client,
    runtime: Runtime,
    pods: PodTable,
    logs: NodeLogs,
    blobs: BlobCache,
    managed: Mutex<HashMap<String, Managed>>,
    /// Whether leftovers of pods removed while the node was down were swept.
    swept: std::sync::atomic::AtomicBool,
    lease: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Pods being prepared at once (blob fetch, compile): thousands bound in
    /// one batch must not mean thousands of fetches and compiles at once.
    preparing: tokio::sync::Semaphore,
    /// Status writes in flight at once, for the same reason.
    reporting: tokio::sync::Semaphore,
}

/// A pod ready to run.
enum Prepared {
    Http(HttpPod),
    Command(command::Runner),
    /// An http pod as a containerd task.
    Served(TaskPod),
}

/// Characters of a fetch failure kept in a pod's status and events.
const MAX_FETCH_ERROR: usize = 1024;

/// Failures worth retrying (the API or the network) versus ones that will not fix
/// themselves (a component that does not compile).
enum StartError {
    Transient(String),
    Permanent(String),
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        client: Client,
        runtime: Runtime,
        pods: PodTable,
        logs: NodeLogs,
    ) -> Arc<Agent> {
        let blobs = BlobCache::new(
            config.data_dir.join("blobs"),
            client.clone(),
            config.registries.clone(),
        );
        Arc::new(Agent {
            config,
            client,
            runtime,
            pods,
            logs,
            blobs,
            managed: Mutex::new(HashMap::new()),
            swept: Default::default(),
            lease: Mutex::new(None),
            preparing: tokio::sync::Semaphore::new(16),
            reporting: tokio::sync::Semaphore::new(32),
        })
    }

    /// Runs the lease and the pod sync until the process ends.
    pub async fn run(self: Arc<Self>) {
        // Tasks an earlier process of this node left, removed now even if no
        // containerd pod comes; beside the lease, which must not wait for it
        // (each containerd pod's start waits for it, or tries it again).
        if let Some(containerd) = self.config.containerd.clone() {
            tokio::spawn(async move {
                if let Err(e) = containerd.adopt_nothing().await {
                    tracing::warn!("removing tasks an earlier process left: {e:#}");
                }
            });
        }
        let lease = tokio::spawn(lease::keep_alive(self.client.clone(), self.config.clone()));
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        let agent = self.clone();
        let query = vec![("node".to_string(), self.config.name.clone())];
        reflect(self.client.clone(), Kind::Pod, query, move |mirror| {
            agent.sync(mirror)
        })
        .await
    }

    /// Removes this node's containerd tasks when the node stops.
    pub async fn sweep_tasks(&self) {
        if let Some(containerd) = &self.config.containerd {
            if let Err(e) = containerd.sweep().await {
                tracing::warn!("removing this node's containerd tasks: {e:#}");
            }
        }
    }

    fn managed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Managed>> {
        self.managed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node stops: every pod's task ends (command runs included), and so
    /// does the lease.
    pub fn stop_all(&self) {
        for managed in self.managed().values() {
            if let Some(task) = &managed.task {
                task.abort();
            }
        }
        if let Some(lease) = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take() {
            lease.abort();
        }
        self.logs.finish_all();
    }

    fn scratch_root(&self) -> PathBuf {
        self.config.data_dir.join("scratch")
    }

    /// A pod's scratch directory: one per pod object, gone with the pod.
    fn scratch_dir(&self, pod: &Pod) -> PathBuf {
        self.scratch_root().join(pod_dir(
            pod.namespace(),
            &pod.metadata.name,
            &pod.metadata.uid,
        ))
    }

    /// Starts pods that are bound here and not yet managed; stops those that are
    /// gone. A pod that has finished (Succeeded or Failed) is not started again,
    /// also not after a node restart; its logs stay readable.
    fn sync(self: &Arc<Self>, mirror: &Mirror) {
        let mut managed = self.managed();
        // Runs on every batch of changes: with thousands of pods here, only the
        // ones not yet managed are decoded; the rest are matched by uid.
        let here = |raw: &RawObject| {
            raw.spec.get("node").and_then(|n| n.as_str()) == Some(self.config.name.as_str())
        };
        let bound: HashMap<&str, &RawObject> = mirror
            .iter()
            .filter(|(_, raw)| here(raw))
            .map(|(key, raw)| (key.as_str(), raw))
            .collect();
        if !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // The first full list: anything on disk for pods not in it is left
            // over from pods removed while this node was down.
            let keep: HashSet<String> = bound
                .values()
                .map(|p| {
                    pod_dir(p.namespace(), &p.metadata.name, &p.metadata.uid)
                        .display()
                        .to_string()
                })
                .collect();
            crate::logs::sweep_two_levels(&self.scratch_root(), &keep);
            self.logs.sweep(&keep);
        }
        let mut stopped: HashSet<String> = HashSet::new();
        managed.retain(|key, m| {
            let keep = bound
                .get(key.as_str())
                .is_some_and(|p| p.metadata.uid == m.uid);
            if !keep {
                self.stop(key, m);
                stopped.insert(m.digest.clone());
            }
            keep
        });
        // A component no pod here runs any more leaves memory (its compiled code
        // stays on disk, so it comes back quickly if it is needed again).
        for digest in stopped {
            if !managed.values().any(|m| m.digest == digest) {
                self.runtime.forget(&self.blobs.content_digest(&digest));
            }
        }
        for (key, raw) in bound {
            if managed.contains_key(key) {
                continue;
            }
            let Ok(pod) = raw.typed::<PodSpec, PodStatus>() else {
                tracing::warn!(pod = %key, "cannot read the pod object; skipping it");
                continue;
            };
            let key = key.to_string();
            let uid = pod.metadata.uid.clone();
            let digest = pod.spec.component.clone();
            if matches!(pod.status.phase, Phase::Succeeded | Phase::Failed) {
                let (log, _) = self
                    .logs
                    .open(&key, pod.namespace(), &pod.metadata.name, &uid);
                log.finish();
                managed.insert(
                    key,
                    Managed {
                        uid,
                        digest,
                        task: None,
                    },
                );
                continue;
            }
            let agent = self.clone();
            let task = tokio::spawn(async move { agent.start(key_for(&pod), pod).await });
            managed.insert(
                key,
                Managed {
                    uid,
                    digest,
                    task: Some(task),
                },
            );
        }
    }

    /// A pod no longer bound here: stop it and delete its logs. Its scratch dir
    /// goes with the last request still running in it (a retired http pod
    /// finishes what was routed to it).
    fn stop(&self, key: &str, managed: &Managed) {
        if let Some(task) = &managed.task {
            task.abort();
        }
        let was_serving = self.pods.retire(key);
        let had_logs = self.logs.get(key).is_some();
        self.logs.remove(key);
        if let Some((namespace, name)) = key.split_once('/') {
            if was_serving || had_logs {
                tracing::info!(pod = %key, "stopped");
                let message = format!("stopped on node {}: no longer bound here", self.config.name);
                events::record(&self.client, namespace, name, "Killed", message);
            }
        }
    }

    /// Brings one pod up, retrying transient failures with back-off, then
    /// serves or runs it.
    async fn start(self: Arc<Self>, key: String, pod: Pod) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let prepared = {
                // Never closed, so acquiring cannot fail.
                let _permit = self.preparing.acquire().await;
                self.prepare(&key, &pod).await
            };
            match prepared {
                Ok(Prepared::Http(http)) => return self.serve_http(key, pod, http).await,
                Ok(Prepared::Command(command)) => {
                    return command::run(&self, &key, pod, command).await
                }
                Ok(Prepared::Served(task)) => return served::serve(&self, &key, pod, task).await,
                Err(StartError::Permanent(message)) => {
                    tracing::warn!(pod = %key, "cannot run: {message}");
                    self.event(&pod, "Failed", message.clone());
                    let status = PodStatus {
                        phase: Phase::Failed,
                        ready: false,
                        reason: Some("CannotRun".into()),
                        last_error: Some(message),
                        ..pod.status.clone()
                    };
                    self.report(&pod, status).await;
                    return;
                }
                Err(StartError::Transient(message)) => {
                    tracing::warn!(pod = %key, "start failed, retrying in {backoff:?}: {message}");
                    self.event(
                        &pod,
                        "BackOff",
                        format!(
                            "retrying the start in {}: {message}",
                            humantime::format_duration(backoff)
                        ),
                    );
                    let status = PodStatus {
                        phase: Phase::Pending,
                        ready: false,
                        last_error: Some(message),
                        ..pod.status.clone()
                    };
                    self.report(&pod, status).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// An http pod takes requests once it is in the pod table and ready.
    async fn serve_http(&self, key: String, pod: Pod, http: HttpPod) {
        // Each start on a node is a run: output from before a node restart is `--previous`.
        if let Some(log) = self.logs.get(&key) {
            log.start_run();
        }
        // Under the lock, so a pod removed meanwhile is not resurrected.
        {
            let managed = self.managed();
            if managed.get(&key).is_none_or(|m| m.uid != pod.metadata.uid) {
                return;
            }
            self.pods.insert(key.clone(), LocalPod::Wasm(http.clone()));
        }
        let mut status = PodStatus {
            phase: Phase::Running,
            ready: self.probe(&pod, &LocalPod::Wasm(http.clone())).await,
            started_at: Some(now_rfc3339()),
            last_error: None,
            reason: None,
            ..pod.status.clone()
        };
        let deployment = deployment_of(&pod);
        if status.ready {
            self.pods
                .mark_ready(&key, &deployment, &pod.metadata.labels);
        }
        tracing::info!(pod = %key, ready = status.ready, "running");
        let message = format!(
            "started on node {} ({})",
            self.config.name, pod.spec.component
        );
        self.event(&pod, "Started", message);
        self.report(&pod, status.clone()).await;
        // Not ready yet: keep probing; the pod gets traffic once it answers.
        while !status.ready {
            tokio::time::sleep(Duration::from_secs(1)).await;
            status.ready = self.probe(&pod, &LocalPod::Wasm(http.clone())).await;
            if status.ready {
                self.pods
                    .mark_ready(&key, &deployment, &pod.metadata.labels);
                self.report(&pod, status.clone()).await;
            }
        }
    }

    async fn prepare(self: &Arc<Self>, key: &str, pod: &Pod) -> Result<Prepared, StartError> {
        let named = &pod.spec.component;
        let (digest, bytes) = self.blobs.component(named).await.map_err(|e| {
            // A registry's error text can be any size; a status holds 4 KiB.
            let message = reef_api::limits::clip(
                &format!("fetching component {named}: {e:#}"),
                MAX_FETCH_ERROR,
            );
            match e.downcast_ref::<reef_oci::OciError>() {
                Some(e) if e.is_permanent() => StartError::Permanent(message),
                _ => StartError::Transient(message),
            }
        })?;
        let digest = &digest;
        let (_, output) =
            self.logs
                .open(key, pod.namespace(), &pod.metadata.name, &pod.metadata.uid);
        // Where it runs, as Kubernetes' downward API would tell it; the
        // manifest's own entries win.
        let mut env: Vec<(String, String)> = vec![
            ("REEF_POD".into(), pod.metadata.name.clone()),
            ("REEF_NAMESPACE".into(), pod.namespace().to_string()),
            ("REEF_NODE".into(), self.config.name.clone()),
        ];
        env.retain(|(k, _)| !pod.spec.env.contains_key(k));
        env.extend(pod.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if pod.spec.runtime == RuntimeKind::Containerd {
            return self.prepare_task(key, pod, &bytes, env, output).await;
        }
        let dir = self.scratch_dir(pod);
        let scratch =
            ScratchDir::create(dir.clone(), self.config.pod_limits.scratch).map_err(|e| {
                StartError::Transient(format!("creating scratch dir {}: {e}", dir.display()))
            })?;
        let mut settings =
            PodSettings {
                env,
                args: pod.spec.args.clone(),
                memory_bytes: pod.spec.memory.bytes(),
                timeout: pod.spec.timeout.0,
                outbound: pod.spec.outbound.clone(),
                scratch: Some(scratch),
                output: Some(output),
                on_failure: None,
                network: self.config.network.clone(),
                max_instances: self.config.pod_limits.max_instances,
                services: self.config.services.clone().map(|router| {
                    crate::runtime::ServiceAccess {
                        namespace: pod.namespace().to_string(),
                        router,
                    }
                }),
            };
        let cannot_run = |world: &str, e: crate::runtime::PrepareError| {
            StartError::Permanent(format!(
                "component {digest} cannot run as world \"{world}\": {e:#}"
            ))
        };
        match pod.spec.world {
            World::Http => {
                let component = self
                    .runtime
                    .prepare_http(digest, &bytes)
                    .await
                    .map_err(|e| cannot_run("http", e))?;
                settings.on_failure = Some(failures::reporter(self.clone(), pod));
                Ok(Prepared::Http(HttpPod::new(component, settings)))
            }
            World::Command => {
                let component = self
                    .runtime
                    .prepare_command(digest, &bytes)
                    .await
                    .map_err(|e| cannot_run("command", e))?;
                Ok(Prepared::Command(command::Runner::Wasm(CommandPod::new(
                    component,
                    &pod.metadata.name,
                    &settings,
                ))))
            }
        }
    }

    /// A pod whose spec names containerd: its container, which runs the
    /// component through the shim with the pod's args, env and limits.
    async fn prepare_task(
        &self,
        key: &str,
        pod: &Pod,
        bytes: &[u8],
        env: Vec<(String, String)>,
        output: Arc<dyn crate::runtime::OutputSink>,
    ) -> Result<Prepared, StartError> {
        let Some(containerd) = &self.config.containerd else {
            return Err(StartError::Permanent(format!(
                "node {} does not run containerd pods (start it with --runtime containerd)",
                self.config.name
            )));
        };
        containerd.adopt_nothing().await.map_err(|e| {
            StartError::Transient(format!("removing tasks an earlier process left: {e:#}"))
        })?;
        let http = pod.spec.world == World::Http;
        let spec = TaskSpec {
            args: pod.spec.args.clone(),
            env,
            memory_bytes: pod.spec.memory.bytes(),
            timeout: pod.spec.timeout.0,
            http,
        };
        let task = TaskPod::create(containerd, key, &pod.metadata.uid, bytes, spec, output)
            .await
            .map_err(|e| match e {
                RunError::Refused(m) => StartError::Permanent(format!(
                    "component {} cannot run as world \"{}\": {m}",
                    pod.spec.component,
                    if http { "http" } else { "command" }
                )),
                RunError::Failed(m) => StartError::Transient(m),
            })?;
        Ok(if http {
            Prepared::Served(task)
        } else {
            Prepared::Command(command::Runner::Task(task))
        })
    }

    /// Ready means pre-instantiated (or listening) and, with a `ready_path`,
    /// answering it with 2xx.
    async fn probe(&self, pod: &Pod, target: &LocalPod) -> bool {
        let Some(path) = &pod.spec.ready_path else {
            return true;
        };
        match target.probe(path).await {
            Ok(status) => status.is_success(),
            Err(e) => {
                tracing::warn!(pod = %pod.metadata.name, "readiness probe failed: {e}");
                false
            }
        }
    }

    fn event(&self, pod: &Pod, reason: &'static str, message: String) {
        events::record(
            &self.client,
            pod.namespace(),
            &pod.metadata.name,
            reason,
            message,
        );
    }

    /// Writes a pod's status; the agent is its only writer, so no compare-and-swap.
    async fn report(&self, pod: &Pod, status: PodStatus) {
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        let _permit = self.reporting.acquire().await;
        for attempt in 0..5u32 {
            match self
                .client
                .put_status(
                    Kind::Pod,
                    Some(pod.namespace()),
                    &pod.metadata.name,
                    &value,
                    None,
                )
                .await
            {
                Ok(_) => return,
                Err(e) if e.is_not_found() => return,
                Err(e) => {
                    tracing::warn!(pod = %pod.metadata.name, "status report failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
}

/// The deployment a pod belongs to ("" for one of its own): routes pick
/// ready pods by it.
fn deployment_of(pod: &Pod) -> String {
    pod.metadata
        .owner
        .as_ref()
        .filter(|o| o.kind == Kind::Deployment)
        .map(|o| o.name.clone())
        .unwrap_or_default()
}

fn key_for(pod: &Pod) -> String {
    pod_key(pod.namespace(), &pod.metadata.name)
}
