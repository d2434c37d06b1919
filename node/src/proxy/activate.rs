//! Activation: a request for a Service whose autoscaled deployments have no
//! ready pod waits here, on the node it arrived at, while the autoscaler
//! (told at once, see [`super::load::LoadMeter::waiting`]) brings a pod up
//! anywhere in the cluster. The wait is bounded twice: by the deployment's
//! `timeout`, and by a queue per Service past which requests get 503 with
//! `Retry-After` at once rather than pile up.

use super::routes::Route;
use super::{text, Lookup, Proxy, ProxyBody};
use hyper::{Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Requests that may wait per Service on one node, unless the node says otherwise.
pub const DEFAULT_QUEUE: u32 = 1000;
/// Requests that may wait on one node across all Services.
const NODE_QUEUE: u32 = 10_000;
/// The key of the node-wide count among the per-Service ones (no route name has a space).
pub(super) const ALL: &str = "all services";
/// How long a held request may wait when the Service names no timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

fn busy(route: &Route, queue: u32) -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "reef: service {} is starting and {queue} requests already wait for it here; retry shortly",
            route.name()
        ),
    );
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}

impl Proxy {
    /// Waits until the Service `lookup` finds has a ready endpoint, and
    /// returns its route then; or the answer to give instead.
    pub(super) async fn activate(
        &self,
        lookup: &Lookup,
        path: &str,
        route: Arc<Route>,
    ) -> Result<Arc<Route>, Response<ProxyBody>> {
        let Some(_queued) = self.queued.try_start(&route.name(), self.activation_queue) else {
            return Err(busy(&route, self.activation_queue));
        };
        let Some(_held) = self.queued.try_start(ALL, NODE_QUEUE) else {
            return Err(busy(&route, NODE_QUEUE));
        };
        // Counted as waiting (and so reported at once) until this returns.
        let _waiting: Vec<_> = route
            .scalable
            .iter()
            .map(|t| self.meter.waiting(&route.namespace, &t.deployment))
            .collect();
        let wait = route.activation_timeout().unwrap_or(DEFAULT_WAIT);
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(wait).unwrap_or(now);
        let mut changed = self.routes_changed.subscribe();
        let mut ready_here = self.pods.readiness();
        loop {
            let Some(now) = self.find(lookup, path) else {
                return Err(text(
                    StatusCode::NOT_FOUND,
                    format!("reef: no service matches {lookup} and path {path:?}"),
                ));
            };
            if !now.endpoints.is_empty() {
                return Ok(now);
            }
            if now.scalable.is_empty() {
                return Err(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("reef: service {} has no ready endpoint", now.name()),
                ));
            }
            if let Some(here) = self.ready_here(&now) {
                return Ok(here);
            }
            let woken = async {
                tokio::select! {
                    changed = changed.changed() => changed,
                    ready = ready_here.changed() => ready,
                }
            };
            match tokio::time::timeout_at(deadline, woken).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "reef: the proxy is shutting down".into(),
                    ))
                }
                Err(_) => {
                    return Err(text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "reef: service {} had no ready pod within its timeout of {wait:?} (scaling up from zero)",
                            route.name()
                        ),
                    ))
                }
            }
        }
    }
}
