//! The route table: Services → (host, path prefix) → endpoints, rebuilt from the
//! API's service list and watch, and swapped in whole so lookups never see half a table.

use reef_api::{Endpoint, Service};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Route {
    pub namespace: String,
    pub service: String,
    pub host: Option<String>,
    pub path: String,
    pub endpoints: Vec<Endpoint>,
    /// Round-robin cursor over `endpoints`.
    next: AtomicUsize,
}

impl Route {
    pub fn new(service: &Service) -> Route {
        Route {
            namespace: service.namespace().to_string(),
            service: service.metadata.name.clone(),
            host: service.spec.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path: service.spec.path.clone(),
            endpoints: service.status.endpoints.clone(),
            next: AtomicUsize::new(0),
        }
    }

    /// Endpoints in the order to try them: round-robin start, then the rest.
    pub fn endpoints_in_turn(&self) -> impl Iterator<Item = &Endpoint> {
        let n = self.endpoints.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.endpoints
            .iter()
            .cycle()
            .skip(start)
            .take(self.endpoints.len())
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

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
    }
}
