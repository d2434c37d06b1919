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
        self.table().lookup(host, path).map(|r| r.namespace.clone())
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
            let request = request.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
            let response = self.route(&lookup, request).await;
            response.map(|b| {
                b.map_err(|e| HttpError::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            })
        })
    }
}
