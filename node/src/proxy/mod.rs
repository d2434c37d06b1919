//! The node proxy (kube-proxy): takes ingress HTTP, finds the Service by Host and
//! longest path prefix, and sends it to the Service's ready endpoint with the
//! fewest requests outstanding ([`routes`], [`load`]) on any node: in-process
//! for pods on this node, forwarded once to the owning node's `--listen` port
//! for the others ([`forward`]). A failed connect moves on to the next
//! endpoint. A Service whose autoscaled deployment has no ready pod holds the
//! request while it activates ([`activate`]). Answers say why when no pod can
//! take the request.
//!
//! The listen port takes only signed requests ([`access`]): forwarded ones,
//! dispatched to pods in this node's table (retiring ones included, so work
//! routed to a pod being removed still finishes), and the control plane's log
//! requests. It never forwards, which bounds every request to one hop.

pub mod access;
mod activate;
mod calls;
pub mod forward;
pub mod headers;
pub mod internal;
pub mod load;
pub mod routes;

use crate::logs::NodeLogs;
use crate::pods::{pod_key, LocalPod, PodTable};
use crate::runtime::HandleError;
use access::NodeAccess;
use bytes::Bytes;
use forward::{BodySlot, ForwardError, Forwarder, InBody, FORWARDED_BY_HEADER, POD_HEADER};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use load::{LoadMeter, Outstanding, Tracked};
use reef_api::{Client, Kind, Service};
use routes::RouteTable;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Turns true when a server should stop taking connections and drain.
pub type Stop = tokio::sync::watch::Receiver<bool>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub struct Proxy {
    node: String,
    pods: PodTable,
    table: RwLock<Arc<RouteTable>>,
    /// One pooled client to the other nodes.
    forwarder: Forwarder,
    /// Signs what this node forwards, checks what its listen port gets.
    access: NodeAccess,
    /// The node's own endpoints (logs), when this node serves them.
    logs: Option<NodeLogs>,
    /// Connection bounds of the ingress and listen ports.
    serve: reef_net::ServeConfig,
    /// Bumped whenever the route table is swapped: held requests look again.
    routes_changed: tokio::sync::watch::Sender<()>,
    /// Requests this proxy has in flight at each pod, for balancing.
    outstanding: Outstanding,
    /// Load per autoscaled deployment, for the autoscaler.
    meter: Arc<LoadMeter>,
    /// Requests held per Service while it activates, and their bound.
    queued: Outstanding,
    activation_queue: u32,
}

/// How a request names its Service.
#[derive(Clone, Debug)]
pub(crate) enum Lookup {
    /// By the Host header (ingress, and pods' calls to a public host).
    Host(String),
    /// By name (pods' calls to `NAME.NAMESPACE.svc`).
    Service { namespace: String, service: String },
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Host(host) => write!(f, "host {host:?}"),
            Lookup::Service { namespace, service } => write!(f, "service {namespace}/{service}"),
        }
    }
}

/// Which port a connection came in on.
#[derive(Clone, Copy)]
enum Port {
    /// From clients: routed by Service, internal headers distrusted.
    Ingress,
    /// From other nodes' proxies: dispatched to the named pod, never forwarded.
    Listen,
}

pub(crate) fn text(status: StatusCode, message: String) -> Response<ProxyBody> {
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
    pub fn new(node: String, pods: PodTable, access: NodeAccess) -> Arc<Proxy> {
        Arc::new(Proxy::bare(
            node,
            pods,
            access,
            reef_net::ServeConfig::new("ingress"),
        ))
    }

    fn bare(
        node: String,
        pods: PodTable,
        access: NodeAccess,
        serve: reef_net::ServeConfig,
    ) -> Proxy {
        Proxy {
            node,
            pods,
            table: RwLock::new(Arc::new(RouteTable::default())),
            forwarder: Forwarder::default(),
            access,
            logs: None,
            serve,
            routes_changed: tokio::sync::watch::Sender::new(()),
            outstanding: Outstanding::default(),
            meter: Arc::default(),
            queued: Outstanding::default(),
            activation_queue: activate::DEFAULT_QUEUE,
        }
    }

    /// A proxy whose listen port also serves the node's own endpoints (logs),
    /// with the given connection bounds on its ports.
    pub fn with_node_endpoints(
        node: String,
        pods: PodTable,
        logs: NodeLogs,
        access: NodeAccess,
        serve: reef_net::ServeConfig,
        activation_queue: u32,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            logs: Some(logs),
            activation_queue,
            ..Proxy::bare(node, pods, access, serve)
        })
    }

    /// The load this proxy counts, for the reporter.
    pub fn meter(&self) -> Arc<LoadMeter> {
        self.meter.clone()
    }

    fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in a new route table whole.
    pub fn set_routes(&self, table: RouteTable) {
        self.outstanding.retain(&table.all_pods());
        let mut names = table.names();
        names.insert(activate::ALL.to_string());
        self.queued.retain(&names);
        self.meter.retain(&table.scalable());
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.routes_changed.send_replace(());
    }

    /// Keeps the route table in step with the cluster's Services.
    pub fn spawn_route_sync(self: &Arc<Self>, client: Client) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            crate::reflector::reflect(client, Kind::Service, vec![], |mirror| {
                let services: Vec<Service> =
                    mirror.values().filter_map(|raw| raw.typed().ok()).collect();
                let table = RouteTable::new(&services);
                let routed = table.local_pods(&proxy.node);
                proxy.set_routes(table);
                // Only now that no route names them may retired pods go.
                proxy.pods.sweep(&routed);
            })
            .await
        })
    }

    /// Serves ingress on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.serve_port(listener, Port::Ingress, None).await
    }

    /// Serves requests forwarded by other nodes on `listener` (the node's
    /// `--listen` port) until the task is dropped.
    pub async fn serve_listen(self: Arc<Self>, listener: TcpListener) {
        self.serve_port(listener, Port::Listen, None).await
    }

    /// [`Proxy::serve`] until `stop` turns true; then takes no new connections
    /// and returns once the open ones have finished their requests.
    pub async fn serve_until(self: Arc<Self>, listener: TcpListener, stop: Stop) {
        self.serve_port(listener, Port::Ingress, Some(stop)).await
    }

    /// [`Proxy::serve_listen`] until `stop` turns true, then drains like
    /// [`Proxy::serve_until`].
    pub async fn serve_listen_until(self: Arc<Self>, listener: TcpListener, stop: Stop) {
        self.serve_port(listener, Port::Listen, Some(stop)).await
    }

    async fn serve_port(self: Arc<Self>, listener: TcpListener, port: Port, stop: Option<Stop>) {
        let mut config = self.serve.clone();
        config.name = match port {
            Port::Ingress => "ingress",
            Port::Listen => "listen",
        };
        let proxy = self.clone();
        let make_service = move |peer: SocketAddr| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move {
                    Ok::<_, Infallible>(match port {
                        Port::Ingress => proxy.handle_from(Some(peer), req).await,
                        Port::Listen => proxy.handle_forwarded(req).await,
                    })
                }
            })
        };
        reef_net::serve(listener, config, make_service, stop).await
    }

    /// An ingress request: routed by Service to any ready endpoint in the cluster.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        self.handle_from(None, req).await
    }

    /// [`Proxy::handle`] for a request from `peer`; the answer carries the
    /// request's id.
    pub async fn handle_from(
        &self,
        peer: Option<SocketAddr>,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        // Only proxies name pods: a client's claims are dropped, never trusted.
        forward::strip_internal(req.headers_mut());
        let host = request_host(&req);
        let id = headers::on_ingress(req.headers_mut(), peer, &host);
        let req = req.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
        let mut response = self.route(&Lookup::Host(host), req).await;
        response.headers_mut().insert(headers::REQUEST_ID, id);
        response
    }

    /// The route for `lookup` and `path` in the current table.
    fn find(&self, lookup: &Lookup, path: &str) -> Option<Arc<routes::Route>> {
        match lookup {
            Lookup::Host(host) => self.table().lookup(host, path),
            Lookup::Service { namespace, service } => self.table().service(namespace, service),
        }
    }

    /// A pod ready on this node that the route's Service selects, as the
    /// route's only endpoint: it serves at once, before its endpoint has
    /// travelled through the control plane and back (a status write, an
    /// endpoints write and this node's watch: most of a new deployment's
    /// time to its first answer).
    fn ready_here(&self, route: &routes::Route) -> Option<Arc<routes::Route>> {
        let (pod, deployment) = self
            .pods
            .ready_pod_selected(&route.namespace, &route.selector)?;
        Some(Arc::new(route.with_endpoints(vec![reef_api::Endpoint {
            pod,
            node: self.node.clone(),
            address: String::new(),
            deployment,
        }])))
    }

    /// Routes a request to a ready endpoint of the Service `lookup` finds:
    /// in-process on this node, or forwarded once to another.
    pub(crate) async fn route(&self, lookup: &Lookup, req: Request<InBody>) -> Response<ProxyBody> {
        let path = req.uri().path().to_string();
        let Some(mut route) = self.find(lookup, &path) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("reef: no service matches {lookup} and path {path:?}"),
            );
        };
        if route.endpoints.is_empty() {
            if let Some(here) = self.ready_here(&route) {
                route = here;
            } else if route.scalable.is_empty() {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("reef: service {} has no ready endpoint", route.name()),
                );
            } else {
                route = match self.activate(lookup, &path, route).await {
                    Ok(route) => route,
                    Err(answer) => return answer,
                };
            }
        }
        let (parts, body) = req.into_parts();
        let body = BodySlot::new(body);
        // Why each endpoint tried could not take the request.
        let mut passed: Vec<String> = Vec::new();
        // A bodiless read that failed on its way (a pooled connection to a node
        // that just died) can safely go to another endpoint.
        let retryable = matches!(
            parts.method,
            hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
        ) && !parts.headers.contains_key(hyper::header::TRANSFER_ENCODING)
            && parts
                .headers
                .get(hyper::header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        let mut remote_failure = None;
        for endpoint in route.by_load(&self.node, &self.outstanding) {
            let key = pod_key(&route.namespace, &endpoint.pod);
            // Held until the answer has streamed out: outstanding at the pod,
            // and in flight for its deployment when it autoscales.
            let mut counts = vec![self.outstanding.start(&key)];
            if route
                .scalable
                .iter()
                .any(|t| t.deployment == endpoint.deployment)
            {
                counts.push(self.meter.serving(&route.namespace, &endpoint.deployment));
            }
            if endpoint.node == self.node {
                match self.pods.get(&key) {
                    Some(pod) => {
                        let req = Request::from_parts(parts, body.body());
                        let what = format!("service {}", route.name());
                        return dispatch(&what, &pod, req)
                            .await
                            .map(|b| Tracked::new(b, counts).boxed());
                    }
                    None => {
                        passed.push(format!("pod {} is not running here", endpoint.pod));
                        continue;
                    }
                }
            }
            if endpoint.address.is_empty() {
                passed.push(format!(
                    "pod {} is on node {}, which takes no forwarded requests",
                    endpoint.pod, endpoint.node
                ));
                continue;
            }
            let sent = self
                .forwarder
                .forward(
                    &parts,
                    &body,
                    &endpoint.address,
                    &key,
                    &self.node,
                    &self.access,
                )
                .await;
            match sent {
                Ok(response) => {
                    return response.map(|b| {
                        Tracked::new(b, counts)
                            .map_err(|e| Box::new(e) as BoxError)
                            .boxed()
                    })
                }
                Err(ForwardError::Connect(e)) if body.is_untouched() || retryable => {
                    tracing::warn!(
                        node = %endpoint.node,
                        address = %endpoint.address,
                        "cannot reach node, trying the next endpoint: {e}"
                    );
                    passed.push(format!(
                        "node {} ({}) could not be reached: {e}",
                        endpoint.node, endpoint.address
                    ));
                }
                Err(ForwardError::Failed(e)) if retryable => {
                    tracing::warn!(
                        node = %endpoint.node,
                        address = %endpoint.address,
                        "forward failed, retrying a bodiless read elsewhere: {e}"
                    );
                    let failure =
                        format!("node {} ({}) failed: {e}", endpoint.node, endpoint.address);
                    passed.push(failure.clone());
                    remote_failure = Some(failure);
                }
                Err(ForwardError::Connect(e) | ForwardError::Failed(e)) => {
                    tracing::warn!(
                        node = %endpoint.node,
                        address = %endpoint.address,
                        "forward failed: {e}"
                    );
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "reef: service {}: node {} ({}) failed: {e}",
                            route.name(),
                            endpoint.node,
                            endpoint.address
                        ),
                    );
                }
            }
        }
        // A node that took the request and failed is a bad gateway, not a lack of endpoints.
        if let Some(failure) = remote_failure {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("reef: service {}: {failure}", route.name()),
            );
        }
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "reef: service {} has no ready endpoint that node {} can reach ({})",
                route.name(),
                self.node,
                passed.join("; ")
            ),
        )
    }

    /// A request forwarded by another node's proxy: dispatched to the pod it
    /// names if that pod is here, and never forwarded again.
    pub async fn handle_forwarded(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let pod = header(POD_HEADER);
        // Every request on this port is signed, for the pod it names (or none).
        if let Err(why) = self.access.verify(&req, pod.as_deref().unwrap_or("")) {
            return text(
                StatusCode::UNAUTHORIZED,
                format!(
                    "reef: node {}: {why}: this port takes only requests signed by the cluster's nodes and control plane",
                    self.node
                ),
            );
        }
        let Some(key) = pod else {
            if let Some(logs) = &self.logs {
                if req.uri().path().starts_with(internal::PREFIX) {
                    return internal::handle(&self.node, logs, req).await;
                }
            }
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "reef: node {} takes only requests forwarded by other nodes, \
                     which name their pod in {POD_HEADER}",
                    self.node
                ),
            );
        };
        let from = header(FORWARDED_BY_HEADER).unwrap_or_else(|| "unknown".to_string());
        forward::strip_internal(req.headers_mut());
        // Live or retiring: a pod being removed finishes what was routed to it.
        let Some(pod) = self.pods.get(&key) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "reef: pod {key} is not on node {} (forwarded by node {from}; \
                     a forwarded request is not forwarded again)",
                    self.node
                ),
            );
        };
        let what = format!("pod {key} on node {}", self.node);
        dispatch(&what, &pod, req).await
    }
}

/// Runs the request in `pod`: in-process, or through its containerd task;
/// `what` names the target in answers.
async fn dispatch<B>(what: &str, pod: &LocalPod, req: Request<B>) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let answer = match pod {
        LocalPod::Wasm(pod) => pod
            .handle(req)
            .await
            .map(|r| r.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed())),
        LocalPod::Task(task) => {
            let req = req.map(|body| body.map_err(Into::into).boxed_unsync());
            task.handle(req)
                .await
                .map(|r| r.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed()))
        }
    };
    match answer {
        Ok(response) => response,
        Err(HandleError::Timeout) => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("reef: {what} did not answer within its timeout"),
        ),
        Err(e) => text(e.status(), format!("reef: {what}: {e}")),
    }
}
