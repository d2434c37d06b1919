//! Pods' calls to the cluster's Services ([`crate::runtime::ServiceCalls`]):
//! routed like ingress, by name or by host, from the calling pod's node, so a
//! call to a pod on this node stays in-process and a call to one elsewhere
//! crosses one hop; a Service at zero activates as for any request.

use super::{BoxError, Lookup, Proxy};
use crate::runtime::{ServiceCalls, ServiceFuture, ServiceTarget};
use http_body_util::BodyExt as _;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

impl ServiceCalls for Proxy {
    fn namespace_of(&self, host: &str, path: &str) -> Option<String> {
        // A Service that names this host; never a catch-all, which would
        // capture every outbound call.
        self.table()
            .lookup(host, path)
            .filter(|r| r.host.is_some())
            .map(|r| r.namespace.clone())
    }

    fn call(
        self: Arc<Self>,
        target: ServiceTarget,
        request: http::Request<WasiBody>,
    ) -> ServiceFuture {
        Box::pin(async move {
            let lookup = match target {
                ServiceTarget::Named { namespace, service } => {
                    Lookup::Service { namespace, service }
                }
                ServiceTarget::Host(host) => Lookup::Host(host),
            };
            let mut request =
                request.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
            // As on ingress: only proxies name pods, and a guest's claims of
            // where the request came from are not passed on.
            let headers = request.headers_mut();
            super::forward::strip_internal(headers);
            headers.remove(super::headers::FORWARDED_FOR);
            let host = match &lookup {
                Lookup::Host(host) => host.clone(),
                Lookup::Service { namespace, service } => format!("{service}.{namespace}.svc"),
            };
            super::headers::on_ingress(headers, None, &host);
            let response = self.route(&lookup, request).await;
            response.map(|b| {
                b.map_err(|e| HttpError::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::PodTable;
    use crate::proxy::access::NodeAccess;
    use crate::proxy::routes::RouteTable;

    fn service(namespace: &str, name: &str, host: Option<&str>) -> reef_api::Service {
        serde_json::from_value(serde_json::json!({
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "host": host, "path": "/"},
        }))
        .expect("service")
    }

    #[test]
    fn a_catch_all_service_does_not_capture_pods_outbound_calls() {
        let proxy = Proxy::new("n1".into(), PodTable::default(), NodeAccess::default());
        proxy.set_routes(RouteTable::new(&[
            service("default", "everything", None),
            service("a", "mine", Some("mine.example")),
        ]));
        assert_eq!(proxy.namespace_of("api.example.com", "/"), None);
        assert_eq!(
            proxy.namespace_of("mine.example", "/x").as_deref(),
            Some("a")
        );
    }
}
