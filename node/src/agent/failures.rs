//! Failed requests of `http` pods, recorded where users look: the pod's
//! `status.last_error` and `reason` (it stays Running) and an Event.
//!
//! The proxy reports from the request's task, so reporting must not block
//! and must not turn a flood of failing requests into a flood of writes: the
//! first failure is written at once, later ones at most every `QUIET` with a
//! count of how many there were.

use super::{events, Agent};
use crate::runtime::{FailureSink, HandleError};
use reef_api::{Kind, Pod, PodStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const QUIET: Duration = Duration::from_secs(5);

/// The one-word reason for failures worth recording; `None` for the rest
/// (timeouts and a full pool are the caller's answer, not the pod's fault).
fn reason_of(e: &HandleError) -> Option<&'static str> {
    match e {
        HandleError::OutOfMemory(_) => Some("OutOfMemory"),
        HandleError::Trap(_) => Some("Trapped"),
        _ => None,
    }
}

#[derive(Default)]
struct Pending {
    count: AtomicU64,
    last: Mutex<Option<(&'static str, String)>>,
}

/// A sink for the pod's failures, and the task that writes them down. The
/// task ends once the pod (holding the sink) is gone.
pub(super) fn reporter(agent: Arc<Agent>, pod: &Pod) -> FailureSink {
    let pending = Arc::new(Pending::default());
    let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
    let (namespace, name) = (pod.namespace().to_string(), pod.metadata.name.clone());
    let uid = pod.metadata.uid.clone();
    let shared = pending.clone();
    tokio::spawn(async move {
        while woken.recv().await.is_some() {
            let count = shared.count.swap(0, Ordering::AcqRel);
            let last = shared.last.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((reason, message)) = last {
                record(&agent, &namespace, &name, &uid, reason, &message, count).await;
            }
            tokio::time::sleep(QUIET).await;
        }
    });
    Arc::new(move |e: &HandleError| {
        let Some(reason) = reason_of(e) else {
            return;
        };
        pending.count.fetch_add(1, Ordering::AcqRel);
        *pending.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((reason, e.to_string()));
        // Full: a wake-up is already due.
        let _ = wake.try_send(());
    })
}

async fn record(
    agent: &Agent,
    namespace: &str,
    name: &str,
    uid: &str,
    reason: &'static str,
    message: &str,
    count: u64,
) {
    let what = if count > 1 {
        format!("{count} requests failed; the last: {message}")
    } else {
        format!("a request failed: {message}")
    };
    tracing::warn!(pod = %format!("{namespace}/{name}"), "{what}");
    events::record(&agent.client, namespace, name, reason, what);
    // The pod stays Running; only the cause changes. Read-modify-write: the
    // agent is the status's only writer.
    let Ok(raw) = agent.client.get(Kind::Pod, Some(namespace), name).await else {
        return;
    };
    let Ok(pod) = raw.typed::<reef_api::PodSpec, PodStatus>() else {
        return;
    };
    if pod.metadata.uid != uid {
        // A new pod under the same name: not the one that failed.
        return;
    }
    let status = PodStatus {
        last_error: Some(message.to_string()),
        reason: Some(reason.to_string()),
        ..pod.status.clone()
    };
    agent.report(&pod, status).await;
}
