//! Calls from a pod to Services of the cluster: the runtime recognises them
//! (it sees every outbound request) and hands them to whoever routes inside
//! the cluster (the node's proxy, through [`ServiceCalls`]), so they never
//! leave the node for a pod here and cross one hop to a pod elsewhere.
//!
//! Which calls stay inside:
//! - `NAME.NAMESPACE.svc`: a Service of the pod's own namespace by name, no
//!   `outbound` entry needed; another namespace's this way is refused;
//! - a Service's host, for the pod's own namespace's Services.
//!
//! Another namespace's Service is reached only as any client reaches it: out
//! through the pod's `outbound` list and the network, never routed inside by
//! its host (a tenant could claim `api.example.com` and capture others' calls).

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// Where a pod's request goes inside the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceTarget {
    /// A Service named in `NAME.NAMESPACE.svc`.
    Named { namespace: String, service: String },
    /// Whichever Service has this host (and the request's path).
    Host(String),
}

pub type ServiceResponse = http::Response<UnsyncBoxBody<Bytes, HttpError>>;
pub type ServiceFuture = futures::future::BoxFuture<'static, ServiceResponse>;

/// Routes requests to Services inside the cluster.
pub trait ServiceCalls: Send + Sync {
    /// The namespace of the Service that `host` and `path` route to, if any.
    fn namespace_of(&self, host: &str, path: &str) -> Option<String>;

    /// Sends `request` to `target` as the node's proxy would route it.
    fn call(
        self: Arc<Self>,
        target: ServiceTarget,
        request: http::Request<WasiBody>,
    ) -> ServiceFuture;
}

/// A pod's way to its cluster's Services.
#[derive(Clone)]
pub struct ServiceAccess {
    /// The pod's namespace: its tenant.
    pub namespace: String,
    pub router: Arc<dyn ServiceCalls>,
}

/// What to do with a request to `host`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Route it to this Service inside the cluster.
    Inside(ServiceTarget),
    /// Refuse it: another namespace's Service by name.
    Refused,
    /// Not a Service: the outbound list and network policy decide.
    Outside,
}

impl ServiceAccess {
    /// Where a request to `host` (lower case, no port) and `path` goes.
    pub(crate) fn verdict(&self, host: &str, path: &str) -> Verdict {
        if let Some(name) = host.strip_suffix(".svc") {
            return match name.split_once('.') {
                Some((service, namespace)) if namespace == self.namespace => {
                    Verdict::Inside(ServiceTarget::Named {
                        namespace: namespace.to_string(),
                        service: service.to_string(),
                    })
                }
                _ => Verdict::Refused,
            };
        }
        match self.router.namespace_of(host, path) {
            Some(namespace) if namespace == self.namespace => {
                Verdict::Inside(ServiceTarget::Host(host.to_string()))
            }
            _ => Verdict::Outside,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hosts;
    impl ServiceCalls for Hosts {
        fn namespace_of(&self, host: &str, _path: &str) -> Option<String> {
            match host {
                "mine.example" => Some("a".into()),
                "theirs.example" => Some("b".into()),
                _ => None,
            }
        }
        fn call(self: Arc<Self>, _: ServiceTarget, _: http::Request<WasiBody>) -> ServiceFuture {
            unreachable!("not called by verdict")
        }
    }

    #[test]
    fn own_services_by_name_or_host_others_never_inside() {
        let access = ServiceAccess {
            namespace: "a".into(),
            router: Arc::new(Hosts),
        };
        let named = |service: &str| {
            Verdict::Inside(ServiceTarget::Named {
                namespace: "a".into(),
                service: service.into(),
            })
        };
        assert_eq!(access.verdict("f.a.svc", "/"), named("f"));
        assert_eq!(access.verdict("f.b.svc", "/"), Verdict::Refused);
        assert_eq!(access.verdict("svc", "/"), Verdict::Outside);
        assert_eq!(access.verdict("x.svc", "/"), Verdict::Refused);
        let host = |h: &str| Verdict::Inside(ServiceTarget::Host(h.into()));
        assert_eq!(access.verdict("mine.example", "/"), host("mine.example"));
        assert_eq!(access.verdict("theirs.example", "/"), Verdict::Outside);
        // Another tenant's host goes out like any egress: a claim captures nothing.
        assert_eq!(access.verdict("elsewhere.example", "/"), Verdict::Outside);
    }
}
