//! Where the proxy sends an http pod's requests when containerd runs it: the
//! loopback port its task serves on. The endpoint holds the task's run, so a
//! pod being retired keeps its task until routing no longer lists it.

use super::run::RunGuard;
use crate::proxy::forward::{strip_hop_by_hop, InBody};
use crate::runtime::HandleError;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct TaskEndpoint {
    pub(super) address: SocketAddr,
    pub(super) timeout: Duration,
    pub(super) client: Client<HttpConnector, InBody>,
    /// The run serving here: removed once the last holder lets go.
    pub(super) _run: Arc<RunGuard>,
}

impl TaskEndpoint {
    /// Sends one request to the task. The shim answers 504 itself at the
    /// pod's timeout; the node gives up a second later.
    pub async fn handle(
        &self,
        req: hyper::Request<InBody>,
    ) -> Result<hyper::Response<Incoming>, HandleError> {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("http://{}{path}", self.address)
            .parse()
            .map_err(|e| HandleError::BadRequest(format!("{e}")))?;
        let request = hyper::Request::from_parts(parts, body);
        let answer = tokio::time::timeout(self.timeout + Duration::from_secs(1), async {
            self.client.request(request).await
        });
        match answer.await {
            Err(_) => Err(HandleError::Timeout),
            Ok(Ok(mut response)) => {
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Ok(Err(e)) if e.is_connect() => Err(HandleError::Unavailable(format!(
                "the pod's task does not take connections: {e}"
            ))),
            Ok(Err(e)) => Err(HandleError::NoResponse(format!("the pod's task: {e}"))),
        }
    }
}
