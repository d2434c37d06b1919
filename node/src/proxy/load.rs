//! What this node's proxy knows about load: requests in flight per endpoint
//! (for balancing, [`Outstanding`]) and per autoscaled deployment (for the
//! autoscaler, [`LoadMeter`]), each counted by a guard that lives as long as
//! the request, its streamed answer included ([`Tracked`]).
//!
//! A request is counted for its deployment on the node whose ingress took it,
//! forwarded or not, so the cluster's sum counts it once.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use reef_api::{DeploymentLoad, LoadReport};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// Counts one thing for as long as it lives.
pub struct Count(Arc<AtomicU32>);

impl Count {
    pub fn new(counter: &Arc<AtomicU32>) -> Count {
        counter.fetch_add(1, Ordering::Relaxed);
        Count(counter.clone())
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests this proxy has sent to each pod and not yet seen answered.
#[derive(Default)]
pub struct Outstanding {
    pods: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

impl Outstanding {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicU32>>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests outstanding at the pod `key`.
    pub fn of(&self, key: &str) -> u32 {
        self.lock()
            .get(key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts a request to pod `key` while the guard lives.
    pub fn start(&self, key: &str) -> Count {
        let counter = self.lock().entry(key.to_string()).or_default().clone();
        Count::new(&counter)
    }

    /// [`Outstanding::start`] unless `key` already counts `max`.
    pub fn try_start(&self, key: &str, max: u32) -> Option<Count> {
        let counter = self.lock().entry(key.to_string()).or_default().clone();
        let count = Count::new(&counter);
        (counter.load(Ordering::Relaxed) <= max).then_some(count)
    }

    /// Forgets idle pods no route names any more.
    pub fn retain(&self, routed: &std::collections::HashSet<String>) {
        self.lock()
            .retain(|k, c| routed.contains(k) || c.load(Ordering::Relaxed) > 0);
    }
}

#[derive(Default)]
struct Counters {
    in_flight: Arc<AtomicU32>,
    waiting: Arc<AtomicU32>,
    requests: AtomicU64,
}

/// Per autoscaled deployment: requests in flight and waiting here, and
/// requests taken since this proxy started.
#[derive(Default)]
pub struct LoadMeter {
    deployments: Mutex<HashMap<(String, String), Arc<Counters>>>,
    /// Woken when a request starts waiting: the autoscaler hears of it at once.
    urgent: Notify,
}

impl LoadMeter {
    fn counters(&self, namespace: &str, deployment: &str) -> Arc<Counters> {
        let mut map = self.deployments.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((namespace.to_string(), deployment.to_string()))
            .or_default()
            .clone()
    }

    /// Counts a request being served for `deployment` while the guard lives.
    pub fn serving(&self, namespace: &str, deployment: &str) -> Count {
        let counters = self.counters(namespace, deployment);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        Count::new(&counters.in_flight)
    }

    /// Counts a request waiting for `deployment` to have a ready pod.
    pub fn waiting(&self, namespace: &str, deployment: &str) -> Count {
        let counters = self.counters(namespace, deployment);
        let count = Count::new(&counters.waiting);
        self.urgent.notify_one();
        count
    }

    /// Requests waiting for `deployment` now.
    pub fn waiting_now(&self, namespace: &str, deployment: &str) -> u32 {
        self.counters(namespace, deployment)
            .waiting
            .load(Ordering::Relaxed)
    }

    /// The report of what this proxy counts now.
    pub fn report(&self) -> LoadReport {
        let map = self.deployments.lock().unwrap_or_else(|e| e.into_inner());
        let mut deployments: Vec<DeploymentLoad> = map
            .iter()
            .map(|((namespace, deployment), c)| DeploymentLoad {
                namespace: namespace.clone(),
                deployment: deployment.clone(),
                in_flight: c.in_flight.load(Ordering::Relaxed),
                waiting: c.waiting.load(Ordering::Relaxed),
                requests: c.requests.load(Ordering::Relaxed),
            })
            .collect();
        deployments
            .sort_by(|a, b| (&a.namespace, &a.deployment).cmp(&(&b.namespace, &b.deployment)));
        LoadReport { deployments }
    }

    /// Forgets idle deployments no route names any more.
    pub fn retain(&self, scalable: &std::collections::HashSet<(String, String)>) {
        self.deployments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, c| {
                scalable.contains(k)
                    || c.in_flight.load(Ordering::Relaxed) > 0
                    || c.waiting.load(Ordering::Relaxed) > 0
            });
    }

    /// Returns when a request has started waiting.
    pub async fn urgent(&self) {
        self.urgent.notified().await
    }
}

/// How often a node reports while it has load, or load changed.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often an idle node reports all the same, so a new leader learns it.
const IDLE_REPORT_EVERY: Duration = Duration::from_secs(10);

/// How often the reporter looks for a surge.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// The least time between two reports: a stream of waiting requests makes
/// at most twenty a second.
const MIN_GAP: Duration = Duration::from_millis(50);

/// Whether some deployment's demand has at least doubled (by 4 or more)
/// since `sent`: a burst the autoscaler should hear of before the next second.
fn surged(sent: &LoadReport, now: &LoadReport) -> bool {
    now.deployments.iter().any(|d| {
        let before = sent
            .deployments
            .iter()
            .find(|s| s.namespace == d.namespace && s.deployment == d.deployment)
            .map_or(0, DeploymentLoad::demand);
        d.demand() >= before.saturating_mul(2) && d.demand() >= before + 4
    })
}

/// Sends `meter`'s report as node `node`: every [`REPORT_EVERY`] while
/// requests are in flight or counts changed, every ten seconds otherwise, and
/// at once when a request starts waiting for a pod or a deployment's demand
/// surges. One report per node, not one write per request: the control plane
/// keeps it in memory.
pub async fn report_forever(meter: Arc<LoadMeter>, client: reef_api::Client, node: String) {
    // A report is stale after a couple of seconds: do not retry one for long.
    let client = client.with_retry_for(Duration::from_secs(1));
    let mut last: Option<(LoadReport, tokio::time::Instant)> = None;
    loop {
        let urgent = tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => false,
            () = meter.urgent() => true,
        };
        let report = meter.report();
        let busy = report.deployments.iter().any(|d| d.demand() > 0);
        let due = match &last {
            None => !report.deployments.is_empty(),
            Some((sent, at)) => {
                let since = at.elapsed();
                urgent
                    || surged(sent, &report)
                    || (since >= REPORT_EVERY && (busy || *sent != report))
                    || since >= IDLE_REPORT_EVERY
            }
        };
        if !due {
            continue;
        }
        let report = match &last {
            Some((_, at)) if at.elapsed() < MIN_GAP => {
                tokio::time::sleep_until(*at + MIN_GAP).await;
                meter.report()
            }
            _ => report,
        };
        match client.report_load(&node, &report).await {
            Ok(()) => last = Some((report, tokio::time::Instant::now())),
            Err(e) => tracing::debug!("load report not taken: {e}"),
        }
    }
}

/// A response body that holds its request's counts until it has been sent
/// in full or dropped.
pub struct Tracked<B> {
    body: B,
    _counts: Vec<Count>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, counts: Vec<Count>) -> Tracked<B> {
        Tracked {
            body,
            _counts: counts,
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubling_of_four_or_more_is_a_surge() {
        let load = |demand: u32| LoadReport {
            deployments: vec![DeploymentLoad {
                namespace: "ns".into(),
                deployment: "f".into(),
                in_flight: demand,
                ..DeploymentLoad::default()
            }],
        };
        assert!(surged(&load(0), &load(4)));
        assert!(!surged(&load(0), &load(3)));
        assert!(surged(&load(10), &load(20)));
        assert!(!surged(&load(10), &load(19)));
        assert!(!surged(&load(20), &load(1)));
        assert!(surged(&LoadReport::default(), &load(32)));
    }

    #[test]
    fn counts_live_as_long_as_their_guards() {
        let meter = LoadMeter::default();
        let a = meter.serving("ns", "f");
        let b = meter.serving("ns", "f");
        let w = meter.waiting("ns", "f");
        let report = meter.report();
        assert_eq!(report.deployments[0].in_flight, 2);
        assert_eq!(report.deployments[0].waiting, 1);
        drop((a, w));
        let report = meter.report();
        assert_eq!(report.deployments[0].in_flight, 1);
        assert_eq!(report.deployments[0].waiting, 0);
        assert_eq!(report.deployments[0].requests, 2);
        drop(b);
        meter.retain(&Default::default());
        assert!(meter.report().deployments.is_empty());
    }
}
