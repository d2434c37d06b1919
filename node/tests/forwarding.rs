//! Cluster-wide routing between two proxies in one process, each standing for a
//! node with its own pod table, ingress and listen port: real HTTP on port 0
//! and real wasmtime instances of `tests/forwarding_guest`.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use reef_api::signing::{sign, SIGNATURE_HEADER};
use reef_api::Service;
use reef_node::pods::{pod_key, LocalPod, PodTable};
use reef_node::proxy::access::NodeAccess;
use reef_node::proxy::routes::RouteTable;
use reef_node::proxy::Proxy;
use reef_node::runtime::{digest_of, HttpComponent, HttpPod, PodSettings, Runtime, RuntimeConfig};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::{TcpListener, TcpStream};

type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The node-access key every test node shares.
const KEY: &str = "test-node-access-key";

mod common;

/// The guest, built (a no-op when fresh) once per test process.
fn guest_wasm() -> Vec<u8> {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| common::build_guest("forwarding_guest", "reef_forwarding_guest"))
        .clone()
}

async fn component() -> HttpComponent {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 32,
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    });
    let wasm = guest_wasm();
    runtime
        .prepare_http(&digest_of(&wasm), &wasm)
        .await
        .expect("prepare_http")
}

/// A node: a proxy with its own pods, serving ingress and listen on port 0.
struct TestNode {
    name: String,
    proxy: Arc<Proxy>,
    pods: PodTable,
    ingress: SocketAddr,
    listen: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestNode {
    async fn start(name: &str) -> TestNode {
        let pods = PodTable::default();
        let proxy = Proxy::new(name.to_string(), pods.clone(), NodeAccess::with_key(KEY));
        let ingress = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ingress_addr, listen_addr) =
            (ingress.local_addr().unwrap(), listen.local_addr().unwrap());
        let tasks = vec![
            tokio::spawn(proxy.clone().serve(ingress)),
            tokio::spawn(proxy.clone().serve_listen(listen)),
        ];
        TestNode {
            name: name.to_string(),
            proxy,
            pods,
            ingress: ingress_addr,
            listen: listen_addr,
            tasks,
        }
    }

    /// Runs pod `name` of namespace `default` here; it answers with `node=<this node>`.
    async fn run_pod(&self, name: &str) {
        let settings = PodSettings {
            env: vec![("NODE".to_string(), self.name.clone())],
            ..PodSettings::default()
        };
        self.pods.insert(
            pod_key("default", name),
            LocalPod::Wasm(HttpPod::new(component().await, settings)),
        );
    }

    /// An endpoint for a pod on this node, as the endpoints controller writes it.
    fn endpoint(&self, pod: &str) -> (String, String, String) {
        (pod.to_string(), self.name.clone(), self.listen.to_string())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Routes for one Service `default/app` on host `app.local`, path `/`.
fn routes(endpoints: &[(String, String, String)]) -> RouteTable {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(pod, node, address)| serde_json::json!({"pod": pod, "node": node, "address": address}))
        .collect();
    let service: Service = serde_json::from_value(serde_json::json!({
        "kind": "Service",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"selector": {"app": "app"}, "host": "app.local", "path": "/"},
        "status": {"endpoints": endpoints},
    }))
    .expect("service");
    RouteTable::new(&[service])
}

/// Sends one request on a fresh connection; status and whole body.
async fn send(addr: SocketAddr, req: Request<TestBody>) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

fn get(path: &str) -> hyper::http::request::Builder {
    Request::get(path).header("host", "app.local")
}

fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// An address nothing listens on: bound, then closed.
async fn refused_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn a_pod_on_another_node_answers_through_this_nodes_ingress() {
    let a = TestNode::start("a").await;
    let b = TestNode::start("b").await;
    b.run_pod("app-b").await;
    let table = || routes(&[b.endpoint("app-b")]);
    a.proxy.set_routes(table());
    b.proxy.set_routes(table());

    // Internal headers from a client are not trusted: they name a pod that is
    // nowhere and a node that forwarded nothing.
    let req = get("/some/path?q=1")
        .header("x-user", "kept")
        .header("x-reef-pod", "default/elsewhere")
        .header("x-reef-forwarded-by", "mallory")
        .body(empty())
        .unwrap();
    let (status, body) = send(a.ingress, req).await;
    let body = text(&body);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("node=b\n"), "{body}");
    assert!(body.contains("path=/some/path?q=1\n"), "{body}");
    assert!(body.contains("authority=app.local\n"), "{body}");
    assert!(body.contains("header x-user: kept\n"), "{body}");
    assert!(!body.contains("x-reef"), "{body}");
    assert!(a.pods.is_empty());

    // A second request reuses the pooled connection and still gets there.
    let (status, body) = send(a.ingress, get("/again").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text(&body).contains("node=b\npath=/again\n"),
        "{}",
        text(&body)
    );
}

#[tokio::test]
async fn a_forwarded_request_for_a_pod_not_here_is_refused_not_forwarded() {
    let a = TestNode::start("a").await;
    let b = TestNode::start("b").await;
    // The pod runs on a, and b's routes say so: forwarding again would reach it.
    a.run_pod("app-a").await;
    let table = || routes(&[a.endpoint("app-a")]);
    a.proxy.set_routes(table());
    b.proxy.set_routes(table());

    let forwarded = |signature: Option<String>| {
        let mut req = get("/")
            .header("x-reef-pod", "default/app-a")
            .header("x-reef-forwarded-by", "a");
        if let Some(signature) = signature {
            req = req.header(SIGNATURE_HEADER, signature);
        }
        req.body(empty()).unwrap()
    };
    let (status, body) = send(
        b.listen,
        forwarded(Some(sign(KEY, "a", "GET", "/", "default/app-a"))),
    )
    .await;
    let body = text(&body);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("pod default/app-a is not on node b") && body.contains("not forwarded"),
        "{body}"
    );

    // Without a pod name the listen port has nothing to dispatch to.
    let bare = get("/")
        .header(SIGNATURE_HEADER, sign(KEY, "a", "GET", "/", ""))
        .body(empty())
        .unwrap();
    let (status, _) = send(b.listen, bare).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The same request through b's ingress is forwarded, once, and served on a.
    let (status, body) = send(b.ingress, get("/").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(&body).starts_with("node=a\n"), "{}", text(&body));
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_the_next_endpoint() {
    let a = TestNode::start("a").await;
    let b = TestNode::start("b").await;
    b.run_pod("app-b").await;
    let dead = (
        "app-c".to_string(),
        "c".to_string(),
        refused_address().await.to_string(),
    );
    a.proxy.set_routes(routes(&[dead, b.endpoint("app-b")]));

    // Round-robin starts at each endpoint in turn: every request lands on b.
    for round in 0..4 {
        let (status, body) = send(a.ingress, get("/").body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {}", text(&body));
        assert!(text(&body).starts_with("node=b\n"), "{}", text(&body));
    }

    // With no endpoint left, the answer says why each one was passed over.
    let nowhere = (
        "app-d".to_string(),
        "d".to_string(),
        String::new(), // a node without --listen
    );
    let dead = (
        "app-c".to_string(),
        "c".to_string(),
        refused_address().await.to_string(),
    );
    a.proxy.set_routes(routes(&[dead, nowhere]));
    let (status, body) = send(a.ingress, get("/").body(empty()).unwrap()).await;
    let body = text(&body);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("node c") && body.contains("node d"), "{body}");
}

#[tokio::test]
async fn a_remote_node_that_fails_is_a_502_naming_it() {
    let a = TestNode::start("a").await;
    // Takes connections and drops them unanswered.
    let broken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_addr = broken.local_addr().unwrap();
    let acceptor = tokio::spawn(async move {
        loop {
            let (stream, _) = broken.accept().await.unwrap();
            drop(stream);
        }
    });
    a.proxy.set_routes(routes(&[(
        "app-x".to_string(),
        "x".to_string(),
        broken_addr.to_string(),
    )]));
    let (status, body) = send(a.ingress, get("/").body(empty()).unwrap()).await;
    let body = text(&body);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("node x") && body.contains("failed"), "{body}");
    acceptor.abort();
}

#[tokio::test]
async fn idle_endpoints_prefer_this_node_and_the_rest_stay_reachable() {
    let a = TestNode::start("a").await;
    let b = TestNode::start("b").await;
    a.run_pod("app-a").await;
    b.run_pod("app-b").await;
    let table = || routes(&[a.endpoint("app-a"), b.endpoint("app-b")]);
    a.proxy.set_routes(table());
    b.proxy.set_routes(table());

    // One at a time, every endpoint is idle: the local pod wins each tie.
    let mut served = Vec::new();
    for _ in 0..4 {
        let (status, body) = send(a.ingress, get("/").body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        served.push(text(&body).lines().next().unwrap_or("").to_string());
    }
    assert_eq!(served, ["node=a"; 4]);
    // Through b's ingress, b's own pod wins instead; a's is reached when b's is gone.
    let (_, body) = send(b.ingress, get("/").body(empty()).unwrap()).await;
    assert_eq!(text(&body).lines().next(), Some("node=b"));
    b.proxy.set_routes(routes(&[a.endpoint("app-a")]));
    let (status, body) = send(b.ingress, get("/").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&body).lines().next(), Some("node=a"));
}

#[tokio::test]
async fn a_large_body_streams_through_a_forward_intact() {
    let a = TestNode::start("a").await;
    let b = TestNode::start("b").await;
    b.run_pod("app-b").await;
    a.proxy.set_routes(routes(&[b.endpoint("app-b")]));
    let payload: Bytes = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();

    // With a length...
    let req = Request::post("/echo")
        .header("host", "app.local")
        .body(
            Full::new(payload.clone())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let (status, body) = send(a.ingress, req).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert_eq!(body.len(), payload.len());
    assert!(body == payload, "the echoed body differs");

    // ...and chunked, in 64 KiB pieces.
    let chunks: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = payload
        .chunks(64 << 10)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let req = Request::post("/echo")
        .header("host", "app.local")
        .body(StreamBody::new(futures::stream::iter(chunks)).boxed())
        .unwrap();
    let (status, body) = send(a.ingress, req).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(body == payload, "the echoed chunked body differs");
}

#[tokio::test]
async fn the_listen_port_refuses_requests_without_a_valid_signature() {
    let a = TestNode::start("a").await;
    a.run_pod("app-a").await;
    a.proxy.set_routes(routes(&[a.endpoint("app-a")]));
    let naming = |signature: Option<String>, path: &str| {
        let mut req = get(path).header("x-reef-pod", "default/app-a");
        if let Some(signature) = signature {
            req = req.header(SIGNATURE_HEADER, signature);
        }
        req.body(empty()).unwrap()
    };
    // A stranger naming the pod: no signature, a wrong key, another pod's, a replay to another path.
    for (signature, why) in [
        (None, "missing signature"),
        (
            Some(sign("not-the-key", "a", "GET", "/", "default/app-a")),
            "wrong signature",
        ),
        (
            Some(sign(KEY, "a", "GET", "/", "default/other")),
            "wrong signature",
        ),
        (
            Some(sign(KEY, "a", "GET", "/elsewhere", "default/app-a")),
            "wrong signature",
        ),
    ] {
        let (status, body) = send(a.listen, naming(signature, "/")).await;
        let body = text(&body);
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains(why), "{body}");
    }
    // Logs likewise.
    let (status, _) = send(
        a.listen,
        get("/_reef/logs/default/app-a").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Signed, it is served.
    let (status, body) = send(
        a.listen,
        naming(Some(sign(KEY, "b", "GET", "/", "default/app-a")), "/"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
}

/// A new Service's endpoints reach the proxy only after a round trip through
/// the control plane (pod status write, endpoints write, watch). A pod that is
/// ready on this node and that the Service selects answers before that; a pod
/// of another namespace, one the selector does not pick, or one not yet ready
/// never does.
#[tokio::test]
async fn a_ready_pod_here_answers_for_a_service_before_its_endpoints_arrive() {
    let a = TestNode::start("a").await;
    let labels = |app: &str| reef_api::Labels::from([("app".to_string(), app.to_string())]);
    a.proxy.set_routes(routes(&[]));
    let status_now = || async { send(a.ingress, get("/").body(empty()).unwrap()).await };

    // Not selected: the wrong label, another namespace with the right one.
    a.run_pod("other").await;
    a.pods
        .mark_ready(&pod_key("default", "other"), "other", &labels("other"));
    let foreign = PodSettings {
        env: vec![("NODE".to_string(), "foreign".to_string())],
        ..PodSettings::default()
    };
    let foreign_key = pod_key("tenant-b", "app-x");
    a.pods.insert(
        foreign_key.clone(),
        LocalPod::Wasm(HttpPod::new(component().await, foreign)),
    );
    a.pods.mark_ready(&foreign_key, "app", &labels("app"));
    // Selected but not ready yet.
    a.run_pod("app-1").await;
    let (status, body) = status_now().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", text(&body));

    a.pods
        .mark_ready(&pod_key("default", "app-1"), "app", &labels("app"));
    let (status, body) = status_now().await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(text(&body).starts_with("node=a\n"), "{}", text(&body));

    // Once retired (deleted), it is not picked any more.
    a.pods.retire(&pod_key("default", "app-1"));
    let (status, body) = status_now().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", text(&body));
}
