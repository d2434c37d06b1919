//! The HTTP API of a real `reef up`, spoken to directly: optimistic concurrency,
//! watch streams, blobs, authentication and roles, health endpoints, and
//! `reef up --apply`.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(90);

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(cluster: &Cluster, token: String) -> Api {
        Api {
            base: format!("http://{}", cluster.api),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Api {
    /// Lists default's Services, then watches them (with `query` added) from
    /// the list's revision.
    async fn watch_services(
        &self,
        query: &str,
    ) -> (
        u64,
        std::pin::Pin<Box<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>>>,
    ) {
        let services = "/api/v1/namespaces/default/services";
        let (status, list) = self.send(reqwest::Method::GET, services, None).await;
        assert_eq!(status, 200, "{list}");
        let since = list["resource_version"].as_u64().expect("list revision");
        let watch = self
            .http
            .get(format!(
                "{}{services}?watch=1&since={since}{query}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("watch")
            .bytes_stream();
        (since, Box::pin(watch))
    }
}

fn service(name: &str, rv: Option<u64>) -> Value {
    let mut metadata = json!({"name": name, "namespace": "default", "labels": {"tier": "web"}});
    if let Some(rv) = rv {
        metadata["resource_version"] = json!(rv);
    }
    json!({"kind": "Service", "metadata": metadata, "spec": {"selector": {"app": name}, "host": format!("{name}.local")}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_and_watch() {
    let cluster = Cluster::start().await;
    let api = Api::new(&cluster, cluster.admin_token());
    let path = "/api/v1/namespaces/default/services/web";
    let put = reqwest::Method::PUT;

    let (since, mut watch) = api.watch_services("").await;

    // resource_version 0 = create only.
    let (status, created) = api
        .send(put.clone(), path, Some(service("web", Some(0))))
        .await;
    assert_eq!(status, 200, "{created}");
    let rv1 = created["metadata"]["resource_version"]
        .as_u64()
        .expect("rv");
    assert!(rv1 > since);
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["spec"]["path"], "/", "defaults are filled in");
    let (status, again) = api
        .send(put.clone(), path, Some(service("web", Some(0))))
        .await;
    assert_eq!(status, 409, "create-only on an existing object: {again}");

    // A write at the current revision succeeds; the old revision is then stale.
    let mut changed = service("web", Some(rv1));
    changed["spec"]["path"] = json!("/v2");
    let (status, updated) = api.send(put.clone(), path, Some(changed.clone())).await;
    assert_eq!(status, 200, "{updated}");
    let rv2 = updated["metadata"]["resource_version"]
        .as_u64()
        .expect("rv");
    assert!(rv2 > rv1);
    assert_eq!(
        updated["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    let (status, stale) = api.send(put.clone(), path, Some(changed)).await;
    assert_eq!(status, 409, "{stale}");
    assert_eq!(stale["reason"], "Conflict");

    // Unconditional (no resource_version) always applies.
    let (status, _) = api
        .send(put.clone(), path, Some(service("web", None)))
        .await;
    assert_eq!(status, 200);

    let (status, deleted) = api.send(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _) = api.send(reqwest::Method::GET, path, None).await;
    assert_eq!(status, 404);

    // The watch saw every change, in order, as newline-delimited JSON.
    let mut seen = 0;
    let events: Vec<Value> = read_events(&mut watch, |event| {
        seen += usize::from(event["type"] != "BOOKMARK");
        seen == 4
    })
    .await
    .into_iter()
    .filter(|event| event["type"] != "BOOKMARK")
    .collect();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
    assert_eq!(
        events[0]["object"]["metadata"]["resource_version"].as_u64(),
        Some(rv1)
    );
    assert_eq!(events[1]["object"]["spec"]["path"], "/v2");
    assert_eq!(events[3]["object"]["metadata"]["name"], "web");
}

/// Reads newline-delimited watch events until `done` says so (or the deadline).
async fn read_events(
    watch: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    mut done: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let chunk = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("watch events in time");
        buffer.extend_from_slice(&chunk.expect("stream open").expect("chunk"));
        while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            let event: Value = serde_json::from_slice(&line).expect("json line");
            let finished = done(&event);
            events.push(event);
            if finished {
                return events;
            }
        }
    }
}

/// A watch with a label selector gets only its own changes, and its
/// BOOKMARKs move past the others' (it resumes from there, not from before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_watch_sees_its_own_changes_and_bookmarks_past_the_rest() {
    let cluster = Cluster::start().await;
    let api = Api::new(&cluster, cluster.admin_token());
    let services = "/api/v1/namespaces/default/services";
    let (_, mut watch) = api.watch_services("&labels=tier=mine").await;
    let mut last = 0;
    for (name, tier) in [
        ("a", "other"),
        ("b", "mine"),
        ("c", "other"),
        ("d", "other"),
    ] {
        let mut object = service(name, None);
        object["metadata"]["labels"]["tier"] = json!(tier);
        let (status, written) = api
            .send(
                reqwest::Method::PUT,
                &format!("{services}/{name}"),
                Some(object),
            )
            .await;
        assert_eq!(status, 200, "{written}");
        last = written["metadata"]["resource_version"]
            .as_u64()
            .expect("rv");
    }
    let events = read_events(&mut watch, |event| {
        event["type"] == "BOOKMARK"
            && event["object"]["metadata"]["resource_version"].as_u64() >= Some(last)
    })
    .await;
    let changes: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or(""),
                e["object"]["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(changes, [("ADDED", "b")], "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_auth_roles_and_health() {
    let cluster = Cluster::start().await;
    let admin = Api::new(&cluster, cluster.admin_token());
    let node = Api::new(&cluster, cluster.join_token());
    let base = format!("http://{}", cluster.api);

    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(format!("{base}{path}")).await.expect("GET");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    // Metrics count every tenant's objects: a token is needed.
    let response = reqwest::get(format!("{base}/metrics")).await.expect("GET");
    assert_eq!(response.status().as_u16(), 401);
    let (status, _) = admin.send(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);

    // Blobs: the digest is verified, bytes round-trip.
    let bytes = b"\0asm not really a component".to_vec();
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    let wrong = format!("sha256:{}", "1".repeat(64));
    let put_blob = |d: String| {
        admin
            .http
            .put(format!("{base}/api/v1/blobs/{d}"))
            .bearer_auth(&admin.token)
            .body(bytes.clone())
            .send()
    };
    assert_eq!(put_blob(wrong).await.expect("PUT").status().as_u16(), 422);
    assert_eq!(
        put_blob(digest.clone())
            .await
            .expect("PUT")
            .status()
            .as_u16(),
        200
    );
    let fetched = admin
        .http
        .get(format!("{base}/api/v1/blobs/{digest}"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("GET blob");
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.expect("bytes").to_vec(), bytes);

    // Roles: the join token only registers nodes; it reads nothing.
    let (status, _) = node
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/deployments",
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = node
        .send(
            reqwest::Method::PUT,
            "/api/v1/namespaces/default/services/x",
            Some(service("x", None)),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = admin
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/deployments",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let raft = node
        .http
        .post(format!("{base}/raft/vote"))
        .bearer_auth(&node.token)
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("POST /raft/vote");
    assert_eq!(
        raft.status().as_u16(),
        401,
        "a node's join token must not speak Raft"
    );
    let bad = Api::new(&cluster, "not-a-token".into());
    let (status, _) = bad.send(reqwest::Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(status, 401);

    // Apply is all or nothing: one invalid item fails the file with its path.
    let good = service("one", None);
    let mut broken = service("two", None);
    broken["spec"]["path"] = json!("no-slash");
    let (status, error) = admin
        .send(
            reqwest::Method::POST,
            "/api/v1/apply",
            Some(json!([good, broken])),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "items[1].spec.path");
    let (_, list) = admin
        .send(
            reqwest::Method::GET,
            "/api/v1/namespaces/default/services",
            None,
        )
        .await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing applied: {list}"
    );

    // An unknown namespace is refused.
    let (status, _) = admin
        .send(
            reqwest::Method::PUT,
            "/api/v1/namespaces/nowhere/services/x",
            Some(json!({
                "kind": "Service", "metadata": {"name": "x"}, "spec": {"selector": {"a": "b"}, "host": "x.local"}
            })),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_apply_serves_the_example() {
    let app = example("hello");
    let cluster = Cluster::start_with(&["--apply", path_str(&app)]).await;
    let body = cluster
        .until_status("hello.local", "/world", 200, SLOW)
        .await;
    assert!(
        body.contains("Hello from reef") && body.contains("/world"),
        "{body}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
