//! Node-to-node forwarding: the ingress proxy sends a request for a pod on
//! another node, once, to that node's `--listen` port, naming the pod in
//! [`POD_HEADER`]. The receiving node dispatches in-process and never forwards
//! again, so a request crosses at most one hop.
//!
//! One pooled HTTP/1.1 client per proxy keeps connections to other nodes alive.
//! Bodies stream both ways. The request body waits in a [`BodySlot`] until an
//! attempt first reads it, so an attempt whose connect failed (nothing sent)
//! leaves it for the next endpoint.

use super::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// `NAMESPACE/POD`: the pod a forwarded request is for.
pub const POD_HEADER: &str = "x-reef-pod";
/// The name of the node that forwarded the request: its presence marks a
/// request that must not be forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-reef-forwarded-by";

/// Headers only proxies may set: removed from everything arriving on ingress
/// and from forwarded requests before a component sees them.
const INTERNAL: [&str; 3] = [
    POD_HEADER,
    FORWARDED_BY_HEADER,
    reef_api::signing::SIGNATURE_HEADER,
];

/// Connection-level headers a proxy must not pass on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// How long a connect to another node may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle pooled connection to another node is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

pub fn strip_internal(headers: &mut HeaderMap) {
    for name in INTERNAL {
        headers.remove(name);
    }
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A request body from a client or from a pod's own call.
pub type InBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A request body shared by the attempts to deliver one request.
#[derive(Clone)]
pub struct BodySlot(Arc<Mutex<Option<InBody>>>);

impl BodySlot {
    pub fn new(body: InBody) -> BodySlot {
        BodySlot(Arc::new(Mutex::new(Some(body))))
    }

    /// True while no attempt has started reading the body.
    pub fn is_untouched(&self) -> bool {
        self.lock().is_some()
    }

    /// A body for one attempt: it takes the request body on its first read.
    pub fn body(&self) -> SlotBody {
        SlotBody {
            slot: self.clone(),
            taken: None,
        }
    }

    // The critical sections are a take or a peek: poison leaves nothing half done.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<InBody>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct SlotBody {
    slot: BodySlot,
    taken: Option<InBody>,
}

impl Body for SlotBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this.slot.lock().take();
            if this.taken.is_none() {
                // Only a connect failure hands the body on, so this is a bug.
                return Poll::Ready(Some(Err(
                    "the request body was already sent to another endpoint".into(),
                )));
            }
        }
        match this.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.slot.lock().as_ref().is_some_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self
                .slot
                .lock()
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_default(),
        }
    }
}

/// Why a forward failed.
#[derive(Debug)]
pub enum ForwardError {
    /// Nothing was sent: the connect was refused, unreachable or timed out.
    Connect(String),
    /// The other node took the connection and then failed.
    Failed(String),
}

/// The error and its causes on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// The target URI for a node address given as `host:port` or as a URL.
fn target(address: &str, path_and_query: &str) -> Result<Uri, String> {
    let base = address.trim_end_matches('/');
    let text = if base.contains("://") {
        format!("{base}{path_and_query}")
    } else {
        format!("http://{base}{path_and_query}")
    };
    text.parse()
        .map_err(|e| format!("the node address {address:?} is not host:port: {e}"))
}

pub struct Forwarder {
    client: Client<HttpConnector, SlotBody>,
}

impl Default for Forwarder {
    fn default() -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Forwarder { client }
    }
}

impl Forwarder {
    /// Sends the request described by `parts` with the body in `body` to the
    /// node at `address`, for the pod `pod_key`, as node `from`; the answer's
    /// body streams back as it arrives.
    pub async fn forward(
        &self,
        parts: &hyper::http::request::Parts,
        body: &BodySlot,
        address: &str,
        pod_key: &str,
        from: &str,
        access: &super::access::NodeAccess,
    ) -> Result<Response<Incoming>, ForwardError> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri = target(address, path).map_err(ForwardError::Connect)?;
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        // The component sees the host the client asked for, not the node's.
        if !headers.contains_key(hyper::header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                    headers.insert(hyper::header::HOST, value);
                }
            }
        }
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| ForwardError::Connect(format!("{v:?} is not a valid header value")))
        };
        headers.insert(POD_HEADER, value(pod_key)?);
        headers.insert(FORWARDED_BY_HEADER, value(from)?);
        let signature = access
            .sign(from, parts.method.as_str(), path, pod_key)
            .ok_or_else(|| {
                ForwardError::Connect("this node has not fetched the node-access key yet".into())
            })?;
        headers.insert(reef_api::signing::SIGNATURE_HEADER, value(&signature)?);

        let mut request = Request::new(body.body());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match self.client.request(request).await {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Err(e) if e.is_connect() => Err(ForwardError::Connect(chain(&e))),
            Err(e) => Err(ForwardError::Failed(chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_addresses() {
        assert_eq!(
            target("10.0.0.2:7443", "/a?b=1").unwrap().to_string(),
            "http://10.0.0.2:7443/a?b=1"
        );
        assert_eq!(
            target("http://node-b:80/", "/").unwrap().to_string(),
            "http://node-b:80/"
        );
        assert!(target("not an address", "/").is_err());
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("close, x-private"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }
}
