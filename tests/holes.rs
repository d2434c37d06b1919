//! The holes an attacker's read of reef found (issue 8), one test each, using
//! only what every build of reef has (the admin and join tokens, apply, the
//! node's ports), so each can be run against the build before the fix:
//! `REEF_BIN=/path/to/old/reef cargo test --test holes` fails every one.

mod common;

use common::tenants::As;
use common::*;
use serde_json::json;
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_is_not_a_cluster_credential() {
    let cluster = Cluster::start().await;
    let join = cluster.join_token();
    let (status, body) = As::new(&cluster, Some(&join))
        .send(reqwest::Method::GET, "/api/v1/cluster/join", None)
        .await;
    assert_eq!(status, 403, "the join token read the Raft secret: {body}");
    let (status, body) = As::new(&cluster, Some(&join))
        .send(
            reqwest::Method::POST,
            "/api/v1/members",
            Some(json!({"id": 9, "address": "127.0.0.1:9"})),
        )
        .await;
    assert_eq!(status, 403, "the join token may add members: {body}");
    let (status, body) = As::new(&cluster, Some(&join))
        .send(
            reqwest::Method::PUT,
            "/api/v1/nodes/local",
            Some(
                json!({"kind": "Node", "metadata": {"name": "local"}, "spec": {
            "address": "169.254.169.254:80", "capacity": {"cpu": "1", "memory": "1Gi", "pods": 1},
            "allocatable": {"cpu": "1", "memory": "1Gi", "pods": 1}}}),
            ),
        )
        .await;
    assert_eq!(status, 403, "the join token may rewrite a node: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_port_serves_no_stranger() {
    let cluster = Cluster::start_with(&["--apply", path_str(&example("hello"))]).await;
    cluster.until_status("hello.local", "/", 200, SLOW).await;
    let pods = cluster.get_json("pods");
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_string();
    let response = reqwest::Client::new()
        .get(format!("http://{}/", cluster.listen))
        .header("x-reef-pod", format!("default/{pod}"))
        .header("host", "anything")
        .send()
        .await
        .expect("listen port");
    assert_eq!(
        response.status().as_u16(),
        401,
        "the listen port dispatched an unsigned request to {pod}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_name_that_leads_to_the_api_is_refused() {
    let cluster = Cluster::start().await;
    let api_port = cluster.api.rsplit(':').next().expect("port").to_string();
    let (_dir, app) = {
        let source = std::fs::read_to_string(example("fetcher")).expect("fetcher app.toml");
        let text = source.replace(
            "outbound = [\"127.0.0.1:8099\"]",
            &format!("outbound = [\"localhost:{api_port}\"]"),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            example("fetcher").with_file_name("fetcher.wasm"),
            dir.path().join("fetcher.wasm"),
        )
        .expect("copy");
        let path = dir.path().join("app.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    };
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    let target = format!("http://localhost:{api_port}/api/v1/nodes");
    let body = cluster
        .until_status("fetcher.local", &format!("/fetch?url={target}"), 502, SLOW)
        .await;
    assert!(body.contains("DestinationIpProhibited"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_member_has_a_raft_secret_of_its_own() {
    let cluster = Cluster::start().await;
    let backup = cluster.home.path().join("b.backup");
    cluster.reef_ok(&["admin", "backup", path_str(&backup)]);
    let restored = cluster.home.path().join("restored");
    cluster.reef_ok(&[
        "admin",
        "restore",
        path_str(&backup),
        "--data-dir",
        path_str(&restored),
    ]);
    let old = std::fs::read_to_string(cluster.data_dir().join("raft.secret")).expect("old");
    let new = std::fs::read_to_string(restored.join("raft.secret")).expect("new");
    assert_ne!(
        old.trim(),
        new.trim(),
        "restore copied the old cluster's Raft secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_numbers_are_refused_not_run() {
    let cluster = Cluster::start_with(&["--apply", path_str(&example("hello"))]).await;
    cluster.until_status("hello.local", "/", 200, SLOW).await;
    let digest = cluster.get_json("deployments")["items"][0]["spec"]["template"]["component"]
        .as_str()
        .expect("digest")
        .to_string();
    let token = cluster.admin_token();
    for (field, value) in [
        ("timeout", json!("300years")),
        ("cpu", json!("18446744073709551615m")),
    ] {
        let mut template = json!({"component": digest});
        template[field] = value;
        let (status, body) = As::new(&cluster, Some(&token)).send(reqwest::Method::PUT, "/api/v1/namespaces/default/deployments/absurd", Some(
                json!({"kind": "Deployment", "metadata": {"name": "absurd", "namespace": "default"},
                        "spec": {"template": template, "replicas": 1}}),
            ),
        )
        .await;
        assert_eq!(status, 422, "{field}: {body}");
    }
    let (status, body) = As::new(&cluster, Some(&token))
        .send(
            reqwest::Method::PUT,
            "/api/v1/namespaces/default/deployments/absurd",
            Some(
                json!({"kind": "Deployment", "metadata": {"name": "absurd", "namespace": "default"},
                    "spec": {"template": {"component": digest}, "replicas": 4_000_000_000u64}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "replicas: {body}");
    assert_eq!(
        cluster.request("hello.local", "/").await.map(|r| r.0),
        Some(200)
    );
}
