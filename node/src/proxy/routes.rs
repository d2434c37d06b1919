//! The route table: Services → (host, path prefix) → endpoints, rebuilt from the
//! API's service list and watch, and swapped in whole so lookups never see half a table.
//! A route orders its endpoints by load for each request ([`Route::by_load`]).

use super::load::Outstanding;
use rand::Rng;
use reef_api::{Endpoint, Labels, ScaleTarget, Service};
use std::sync::Arc;

/// A pod with this many times its deployment's `concurrency` in flight from
/// this proxy is passed over while another has room.
pub const BURST_FACTOR: u32 = 2;

pub struct Route {
    pub namespace: String,
    pub service: String,
    pub host: Option<String>,
    pub path: String,
    pub endpoints: Vec<Endpoint>,
    /// Autoscaled deployments behind the service: requests wait for them.
    pub scalable: Vec<ScaleTarget>,
    /// The Service's pod selector, to pick a pod ready on this node before
    /// the endpoints controller has listed it.
    pub selector: Labels,
}

impl Route {
    pub fn new(service: &Service) -> Route {
        Route {
            namespace: service.namespace().to_string(),
            service: service.metadata.name.clone(),
            host: service.spec.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path: service.spec.path.clone(),
            endpoints: service.status.endpoints.clone(),
            scalable: service.status.scalable.clone(),
            selector: service.spec.selector.clone(),
        }
    }

    /// This route with other endpoints.
    pub fn with_endpoints(&self, endpoints: Vec<Endpoint>) -> Route {
        Route {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            endpoints,
            scalable: self.scalable.clone(),
            selector: self.selector.clone(),
        }
    }

    /// The most requests `endpoint` should have in flight from one proxy
    /// before others are preferred; unbounded for deployments that do not
    /// autoscale.
    fn cap(&self, endpoint: &Endpoint) -> u32 {
        self.scalable
            .iter()
            .find(|t| t.deployment == endpoint.deployment)
            .map_or(u32::MAX, |t| t.concurrency.saturating_mul(BURST_FACTOR))
    }

    /// Endpoints in the order to try them: least outstanding requests first
    /// (pods past their cap last), this node's pods before others' at equal
    /// load, and a random order among equals so proxies do not herd.
    pub fn by_load(&self, node: &str, outstanding: &Outstanding) -> Vec<&Endpoint> {
        let mut rng = rand::thread_rng();
        let mut ranked: Vec<((bool, u32, bool, u32), &Endpoint)> = self
            .endpoints
            .iter()
            .map(|e| {
                let load = outstanding.of(&crate::pods::pod_key(&self.namespace, &e.pod));
                let rank = (load >= self.cap(e), load, e.node != node, rng.gen::<u32>());
                (rank, e)
            })
            .collect();
        ranked.sort_unstable_by_key(|(rank, _)| *rank);
        ranked.into_iter().map(|(_, e)| e).collect()
    }

    /// The longest a request may wait for an autoscaled deployment to have a
    /// ready pod: its pods' per-request timeout.
    pub fn activation_timeout(&self) -> Option<std::time::Duration> {
        self.scalable.iter().map(|t| t.timeout.0).max()
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }
}

/// True if `prefix` matches `path` on segment boundaries: "/api" matches "/api" and
/// "/api/x" but not "/apix".
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[derive(Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(services: &[Service]) -> RouteTable {
        let mut routes: Vec<Arc<Route>> =
            services.iter().map(|s| Arc::new(Route::new(s))).collect();
        // A route naming the host beats a host-less one; then the longest prefix wins;
        // then name order, so duplicates resolve the same way on every node.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path.len().cmp(&a.path.len()))
                .then(a.name().cmp(&b.name()))
        });
        RouteTable { routes }
    }

    /// The route of Service `namespace/service`, whatever its host and path.
    pub fn service(&self, namespace: &str, service: &str) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .find(|r| r.namespace == namespace && r.service == service)
            .cloned()
    }

    /// The route for a request's host (without port) and path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Arc<Route>> {
        let host = host.to_ascii_lowercase();
        self.routes
            .iter()
            .find(|r| r.host.as_deref().is_none_or(|h| h == host) && prefix_matches(&r.path, path))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Pod keys (`namespace/name`) of every endpoint on `node`.
    pub fn local_pods(&self, node: &str) -> std::collections::HashSet<String> {
        self.routes
            .iter()
            .flat_map(|r| {
                r.endpoints
                    .iter()
                    .filter(|e| e.node == node)
                    .map(|e| crate::pods::pod_key(&r.namespace, &e.pod))
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every autoscaled deployment some route names, as (namespace, name).
    pub fn scalable(&self) -> std::collections::HashSet<(String, String)> {
        self.routes
            .iter()
            .flat_map(|r| {
                r.scalable
                    .iter()
                    .map(|t| (r.namespace.clone(), t.deployment.clone()))
            })
            .collect()
    }

    /// `namespace/service` of every route.
    pub fn names(&self) -> std::collections::HashSet<String> {
        self.routes.iter().map(|r| r.name()).collect()
    }

    /// Pod keys of every endpoint in the table.
    pub fn all_pods(&self) -> std::collections::HashSet<String> {
        self.routes
            .iter()
            .flat_map(|r| {
                r.endpoints
                    .iter()
                    .map(|e| crate::pods::pod_key(&r.namespace, &e.pod))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, host: Option<&str>, path: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name}, "host": host, "path": path},
        }))
        .expect("service")
    }

    #[test]
    fn host_then_longest_prefix() {
        let table = RouteTable::new(&[
            service("root", Some("a.local"), "/"),
            service("api", Some("a.local"), "/api"),
            service("any", None, "/"),
        ]);
        let name = |h: &str, p: &str| table.lookup(h, p).map(|r| r.service.clone());
        assert_eq!(name("a.local", "/api/v1").as_deref(), Some("api"));
        assert_eq!(name("a.local", "/apix").as_deref(), Some("root"));
        assert_eq!(name("A.LOCAL", "/").as_deref(), Some("root"));
        assert_eq!(name("b.local", "/x").as_deref(), Some("any"));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let table = RouteTable::new(&[service("s", Some("a.local"), "/app")]);
        assert!(table.lookup("a.local", "/other").is_none());
        assert!(table.lookup("b.local", "/app").is_none());
    }

    fn endpoint(pod: &str, node: &str) -> Endpoint {
        Endpoint {
            pod: pod.into(),
            node: node.into(),
            address: String::new(),
            deployment: "f".into(),
        }
    }

    #[test]
    fn least_outstanding_first_then_local_and_capped_pods_last() {
        let mut route = Route::new(&service("s", None, "/"));
        route.endpoints = vec![
            endpoint("a", "n1"),
            endpoint("b", "n2"),
            endpoint("c", "n2"),
        ];
        route.scalable = vec![ScaleTarget {
            deployment: "f".into(),
            concurrency: 2,
            timeout: reef_api::quantity::Timeout(std::time::Duration::from_secs(1)),
        }];
        let outstanding = Outstanding::default();
        let pods = |order: Vec<&Endpoint>| order.iter().map(|e| e.pod.clone()).collect::<Vec<_>>();
        // Equal loads: the local pod first.
        assert_eq!(pods(route.by_load("n1", &outstanding))[0], "a");
        let _a = outstanding.start("default/a");
        let _b = (
            outstanding.start("default/b"),
            outstanding.start("default/b"),
        );
        // c has none, a one, b two.
        assert_eq!(pods(route.by_load("n1", &outstanding)), ["c", "a", "b"]);
        let _more = [
            outstanding.start("default/c"),
            outstanding.start("default/c"),
            outstanding.start("default/c"),
            outstanding.start("default/c"),
            outstanding.start("default/c"),
        ];
        // c holds 5, past its cap of 2 × 2: last, behind the busier b.
        assert_eq!(pods(route.by_load("n1", &outstanding))[0], "a");
        assert_eq!(pods(route.by_load("n1", &outstanding))[2], "c");
    }

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
    }
}
