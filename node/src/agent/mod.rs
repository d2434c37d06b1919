//! The node agent (kubelet): registers and renews its lease, mirrors the pods bound
//! to this node, and makes the running set match: fetch and verify the component,
//! compile once per digest, pre-instantiate, probe, report status. It talks to the
//! control plane only through the HTTP API, with its join token.

mod blobs;
mod events;
mod lease;

use crate::pods::{pod_key, PodTable};
use crate::reflector::{reflect, Mirror};
use crate::runtime::{HttpPod, PodSettings, Runtime};
use blobs::BlobCache;
use reef_api::*;
use std::collections::HashMap;
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
}

/// A pod this agent has taken on: the task bringing it up, and which object it is.
struct Managed {
    uid: String,
    task: tokio::task::JoinHandle<()>,
}

pub struct Agent {
    config: AgentConfig,
    client: Client,
    runtime: Runtime,
    pods: PodTable,
    blobs: BlobCache,
    managed: Mutex<HashMap<String, Managed>>,
}

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
    ) -> Arc<Agent> {
        let blobs = BlobCache::new(config.data_dir.join("blobs"), client.clone());
        Arc::new(Agent {
            config,
            client,
            runtime,
            pods,
            blobs,
            managed: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the lease and the pod sync until the process ends.
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(lease::keep_alive(self.client.clone(), self.config.clone()));
        let agent = self.clone();
        let query = vec![("node".to_string(), self.config.name.clone())];
        reflect(self.client.clone(), Kind::Pod, query, move |mirror| {
            agent.sync(mirror)
        })
        .await
    }

    fn managed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Managed>> {
        self.managed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts pods that are bound here and not yet managed; stops those that are gone.
    fn sync(self: &Arc<Self>, mirror: &Mirror) {
        let mut managed = self.managed();
        let wanted: HashMap<String, Pod> = mirror
            .values()
            .filter_map(|raw| raw.typed::<PodSpec, PodStatus>().ok())
            .filter(|p| p.spec.node.as_deref() == Some(self.config.name.as_str()))
            .map(|p| (pod_key(p.namespace(), &p.metadata.name), p))
            .collect();
        managed.retain(|key, m| {
            let keep = wanted.get(key).is_some_and(|p| p.metadata.uid == m.uid);
            if !keep {
                m.task.abort();
                if self.pods.retire(key) {
                    tracing::info!(pod = %key, "stopped");
                    if let Some((namespace, name)) = key.split_once('/') {
                        let message =
                            format!("stopped on node {}: no longer bound here", self.config.name);
                        events::record(&self.client, namespace, name, "Killed", message);
                    }
                }
            }
            keep
        });
        for (key, pod) in wanted {
            if managed.contains_key(&key) {
                continue;
            }
            let agent = self.clone();
            let uid = pod.metadata.uid.clone();
            let task = tokio::spawn(async move { agent.start(key_for(&pod), pod).await });
            managed.insert(key, Managed { uid, task });
        }
    }

    /// Brings one pod up, retrying transient failures with back-off.
    async fn start(self: Arc<Self>, key: String, pod: Pod) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.prepare(&pod).await {
                Ok(http) => {
                    // Under the lock, so a pod removed meanwhile is not resurrected.
                    {
                        let managed = self.managed();
                        if managed.get(&key).is_none_or(|m| m.uid != pod.metadata.uid) {
                            return;
                        }
                        self.pods.insert(key.clone(), http.clone());
                    }
                    let mut status = PodStatus {
                        phase: Phase::Running,
                        ready: self.probe(&pod, &http).await,
                        started_at: Some(now_rfc3339()),
                        last_error: None,
                        reason: None,
                        ..pod.status.clone()
                    };
                    tracing::info!(pod = %key, ready = status.ready, "running");
                    let message = format!(
                        "started on node {} ({})",
                        self.config.name, pod.spec.component
                    );
                    events::record(
                        &self.client,
                        pod.namespace(),
                        &pod.metadata.name,
                        "Started",
                        message,
                    );
                    self.report(&pod, status.clone()).await;
                    // Not ready yet: keep probing; the pod gets traffic once it answers.
                    while !status.ready {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        status.ready = self.probe(&pod, &http).await;
                        if status.ready {
                            self.report(&pod, status.clone()).await;
                        }
                    }
                    return;
                }
                Err(StartError::Permanent(message)) => {
                    tracing::warn!(pod = %key, "cannot run: {message}");
                    events::record(
                        &self.client,
                        pod.namespace(),
                        &pod.metadata.name,
                        "Failed",
                        message.clone(),
                    );
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

    async fn prepare(&self, pod: &Pod) -> Result<HttpPod, StartError> {
        if pod.spec.world != World::Http {
            return Err(StartError::Permanent(
                "this node does not run command-world pods yet; only world = \"http\" is supported"
                    .into(),
            ));
        }
        let digest = &pod.spec.component;
        let bytes =
            self.blobs.get(digest).await.map_err(|e| {
                StartError::Transient(format!("fetching component {digest}: {e:#}"))
            })?;
        let component = self
            .runtime
            .prepare_http(digest, &bytes)
            .await
            .map_err(|e| {
                StartError::Permanent(format!(
                    "component {digest} cannot run as wasi:http/proxy: {e:#}"
                ))
            })?;
        let settings = PodSettings {
            env: pod
                .spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_bytes: pod.spec.memory.bytes(),
            timeout: pod.spec.timeout.0,
            outbound: pod.spec.outbound.clone(),
        };
        Ok(HttpPod::new(component, settings))
    }

    /// Ready means pre-instantiated and, with a `ready_path`, answering it with 2xx.
    async fn probe(&self, pod: &Pod, http: &HttpPod) -> bool {
        let Some(path) = &pod.spec.ready_path else {
            return true;
        };
        let request = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new());
        match request {
            Ok(request) => match http.handle(request).await {
                Ok(response) => response.status().is_success(),
                Err(e) => {
                    tracing::warn!(pod = %pod.metadata.name, "readiness probe failed: {e}");
                    false
                }
            },
            Err(_) => false,
        }
    }

    /// Writes a pod's status; the agent is its only writer, so no compare-and-swap.
    async fn report(&self, pod: &Pod, status: PodStatus) {
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
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

fn key_for(pod: &Pod) -> String {
    pod_key(pod.namespace(), &pod.metadata.name)
}
