//! The pods this node is running right now, shared by the agent (which adds and
//! retires them) and the proxy (which dispatches requests to them).
//!
//! A deleted pod is retired rather than dropped: it keeps answering until the
//! proxy's route table no longer lists it (the endpoints update travels through
//! the control plane after the deletion), so a rollout loses no request. Requests
//! already holding a pod always finish.

use crate::containerd::TaskEndpoint;
use crate::runtime::HttpPod;
use reef_api::Labels;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The longest a retired pod waits for the route table to drop it.
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// The least time a retired pod keeps answering, even once this node's routes no
/// longer list it: other nodes' route tables update a little later and may still
/// forward to it.
const RETIRE_MIN: Duration = Duration::from_secs(5);

/// `namespace/name`: pod names are unique per namespace.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `namespace/name_uid`: where one pod object's files live under a node's
/// `logs/` and `scratch/` (a new pod under an old name starts clean).
pub fn pod_dir(namespace: &str, name: &str, uid: &str) -> std::path::PathBuf {
    std::path::Path::new(namespace).join(format!("{name}_{uid}"))
}

/// What serves an http pod on this node: the embedded runtime, in-process, or
/// a containerd task the proxy forwards to over loopback.
#[derive(Clone)]
pub enum LocalPod {
    Wasm(HttpPod),
    Task(TaskEndpoint),
}

impl LocalPod {
    /// GETs `path` from the pod (its readiness check): the answer's status.
    pub async fn probe(
        &self,
        path: &str,
    ) -> Result<hyper::StatusCode, crate::runtime::HandleError> {
        let bad = |e: hyper::http::Error| crate::runtime::HandleError::BadRequest(e.to_string());
        let request = hyper::Request::get(path).header(hyper::header::HOST, "localhost");
        match self {
            LocalPod::Wasm(pod) => {
                let request = request
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .map_err(bad)?;
                pod.handle(request).await.map(|r| r.status())
            }
            LocalPod::Task(task) => {
                use http_body_util::BodyExt;
                let empty = http_body_util::Empty::<bytes::Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let request = request.body(empty).map_err(bad)?;
                task.handle(request).await.map(|r| r.status())
            }
        }
    }
}

#[derive(Default)]
struct Pods {
    live: HashMap<String, LocalPod>,
    retiring: HashMap<String, (LocalPod, Instant)>,
    /// Live pods that passed their readiness check.
    ready: HashMap<String, Ready>,
}

/// What a Service's route needs of a ready pod to pick it.
struct Ready {
    deployment: String,
    labels: Labels,
}

#[derive(Clone)]
pub struct PodTable {
    inner: Arc<RwLock<Pods>>,
    /// Bumped when a pod here becomes ready: requests held for a function
    /// at zero take it at once, before the Service's endpoints say so.
    became_ready: Arc<tokio::sync::watch::Sender<()>>,
}

impl Default for PodTable {
    fn default() -> Self {
        PodTable {
            inner: Arc::default(),
            became_ready: Arc::new(tokio::sync::watch::Sender::new(())),
        }
    }
}

impl PodTable {
    pub fn insert(&self, key: String, pod: LocalPod) {
        let mut pods = self.write();
        pods.retiring.remove(&key);
        pods.ready.remove(&key);
        pods.live.insert(key, pod);
    }

    /// Marks the live pod `key` (of `deployment`, labelled `labels`) ready.
    pub fn mark_ready(&self, key: &str, deployment: &str, labels: &Labels) {
        let mut pods = self.write();
        if pods.live.contains_key(key) {
            let ready = Ready {
                deployment: deployment.to_string(),
                labels: labels.clone(),
            };
            pods.ready.insert(key.to_string(), ready);
            drop(pods);
            self.became_ready.send_replace(());
        }
    }

    /// A live, ready pod of `namespace` on this node whose labels `selector`
    /// selects, as the endpoints controller would list it: its name and
    /// deployment.
    pub fn ready_pod_selected(
        &self,
        namespace: &str,
        selector: &Labels,
    ) -> Option<(String, String)> {
        let prefix = pod_key(namespace, "");
        let selects = |labels: &Labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        self.read()
            .ready
            .iter()
            .find(|(key, r)| key.starts_with(&prefix) && selects(&r.labels))
            .map(|(key, r)| (key[prefix.len()..].to_string(), r.deployment.clone()))
    }

    /// Changes when a pod here becomes ready.
    pub fn readiness(&self) -> tokio::sync::watch::Receiver<()> {
        self.became_ready.subscribe()
    }

    /// Stops giving the pod new work once routing has caught up; true if it was live.
    pub fn retire(&self, key: &str) -> bool {
        let mut pods = self.write();
        pods.ready.remove(key);
        match pods.live.remove(key) {
            Some(pod) => {
                pods.retiring
                    .insert(key.to_string(), (pod, Instant::now() + RETIRE_GRACE));
                true
            }
            None => false,
        }
    }

    /// Forgets a pod that can take no more requests (its task died): unlike
    /// a retired one, nothing is routed to it meanwhile.
    pub fn remove(&self, key: &str) {
        let mut pods = self.write();
        pods.ready.remove(key);
        pods.live.remove(key);
        pods.retiring.remove(key);
    }

    /// Drops retired pods that no route lists any more (after `RETIRE_MIN`), or
    /// whose grace has run out.
    pub fn sweep(&self, still_routed: &HashSet<String>) {
        let now = Instant::now();
        self.write().retiring.retain(|key, (_, deadline)| {
            let retired_at = *deadline - RETIRE_GRACE;
            let young = now < retired_at + RETIRE_MIN;
            (young || still_routed.contains(key)) && *deadline > now
        });
    }

    /// Drops retired pods whose grace has run out (`RETIRE_GRACE`), and those no
    /// route listed at the last sweep once `RETIRE_MIN` has passed.
    pub fn sweep_expired(&self) {
        let now = Instant::now();
        self.write()
            .retiring
            .retain(|_, (_, deadline)| *deadline > now);
    }

    pub fn get(&self, key: &str) -> Option<LocalPod> {
        let pods = self.read();
        pods.live
            .get(key)
            .or_else(|| pods.retiring.get(key).map(|(pod, _)| pod))
            .cloned()
    }

    /// Pods taking new work (retired ones excluded).
    pub fn len(&self) -> usize {
        self.read().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn retiring(&self) -> usize {
        self.read().retiring.len()
    }

    // A panic while holding the lock cannot leave the maps half-updated (each
    // method's change is a single insert/remove/retain), so poison is safe to ignore.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Pods> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Pods> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}
