//! The node proxy (kube-proxy): takes ingress HTTP, finds the Service by Host and
//! longest path prefix, and dispatches to a ready endpoint: in-process for pods on
//! this node. Answers say why when no pod can take the request.

pub mod routes;

use crate::pods::{pod_key, PodTable};
use crate::runtime::HandleError;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use reef_api::{Client, Kind, Service};
use routes::RouteTable;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub struct Proxy {
    node: String,
    pods: PodTable,
    table: RwLock<Arc<RouteTable>>,
}

fn text(status: StatusCode, message: String) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(message + "\n"))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The request's host without port: from the Host header, else the URI authority.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    match raw.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
        _ => raw.to_string(),
    }
}

impl Proxy {
    pub fn new(node: String, pods: PodTable) -> Arc<Proxy> {
        Arc::new(Proxy {
            node,
            pods,
            table: RwLock::new(Arc::new(RouteTable::default())),
        })
    }

    fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps the route table in step with the cluster's Services.
    pub fn spawn_route_sync(self: &Arc<Self>, client: Client) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            crate::reflector::reflect(client, Kind::Service, vec![], |mirror| {
                let services: Vec<Service> =
                    mirror.values().filter_map(|raw| raw.typed().ok()).collect();
                let table = Arc::new(RouteTable::new(&services));
                let routed = table.local_pods(&proxy.node);
                *proxy.table.write().unwrap_or_else(|e| e.into_inner()) = table;
                // Only now that no route names them may retired pods go.
                proxy.pods.sweep(&routed);
            })
            .await
        })
    }

    /// Serves ingress on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("ingress accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                if let Err(e) = builder.serve_connection(io, service).await {
                    tracing::debug!("ingress connection ended: {e}");
                }
            });
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let host = request_host(&req);
        let path = req.uri().path().to_string();
        let Some(route) = self.table().lookup(&host, &path) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("reef: no service matches host {host:?} and path {path:?}"),
            );
        };
        let local = route
            .endpoints_in_turn()
            .filter(|e| e.node == self.node)
            .find_map(|e| self.pods.get(&pod_key(&route.namespace, &e.pod)));
        let Some(pod) = local else {
            let reason = if route.endpoints.is_empty() {
                "has no ready endpoint"
            } else {
                "has no ready endpoint on this node (forwarding to other nodes is not built yet)"
            };
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reef: service {} {reason}", route.name()),
            );
        };
        match pod.handle(req).await {
            Ok(response) => response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed()),
            Err(HandleError::Timeout) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "reef: service {} did not answer within its timeout",
                    route.name()
                ),
            ),
            Err(e) => text(e.status(), format!("reef: service {}: {e}", route.name())),
        }
    }
}
