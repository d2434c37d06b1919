//! Every token held to its identity: missing, malformed, unknown, expired and
//! revoked tokens; the join token; a node's credential; the member token; and
//! the node's listen port, which serves nothing unsigned.

mod common;

use common::tenants::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_nodes_joiners_and_members_are_held_to_their_identity() {
    let setup = setup().await;
    let cluster = &setup.cluster;
    let path = "/api/v1/namespaces/b/services";
    // Missing, malformed, unknown: 401.
    let (status, _) = As::new(cluster, None).send(Method::GET, path, None).await;
    assert_eq!(status, 401);
    for header in ["Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "bearer x"] {
        let status = reqwest::Client::new()
            .get(format!("http://{}{path}", cluster.api))
            .header("authorization", header)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16();
        assert_eq!(status, 401, "{header:?}");
    }
    let (status, _) = As::new(cluster, Some(&"0".repeat(64)))
        .send(Method::GET, path, None)
        .await;
    assert_eq!(status, 401);
    // Expired: a token with a one-second life stops working.
    let short = cluster.reef_ok(&[
        "token", "create", "--tenant", "b", "--role", "view", "--ttl", "1s",
    ]);
    let short = As::new(cluster, Some(short.trim()));
    eventually("the token to expire", SLOW, || async {
        (short.send(Method::GET, path, None).await.0 == 401).then_some(())
    })
    .await;
    // Revoked.
    let listed = cluster.reef_ok(&["token", "list", "-o", "json"]);
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let b_view = listed
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| {
            t["identity"]["tenant"] == "b"
                && t["identity"]["role"] == "view"
                && t["expires_at"].is_null()
        })
        .expect("b's view token")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        setup
            .as_tenant("b", "view")
            .send(Method::GET, path, None)
            .await
            .0,
        200
    );
    cluster.reef_ok(&["token", "revoke", &b_view]);
    assert_eq!(
        setup
            .as_tenant("b", "view")
            .send(Method::GET, path, None)
            .await
            .0,
        401
    );

    // The join token: only exchanges itself for a node credential, once per name.
    let join = As::new(cluster, Some(&cluster.join_token()));
    let (status, text) = join
        .send(Method::POST, "/api/v1/nodes/local/credential", None)
        .await;
    assert_eq!(status, 409, "node local has its credential already: {text}");
    for (method, path) in [
        (Method::GET, "/api/v1/cluster/join"),
        (Method::POST, "/api/v1/members"),
        (Method::GET, "/api/v1/pods?node=local"),
        (Method::GET, "/api/v1/cluster/node-access"),
    ] {
        assert_eq!(
            join.send(method.clone(), path, Some(json!({}))).await.0,
            403,
            "{method} {path}"
        );
    }
    let raft = reqwest::Client::new()
        .post(format!("http://{}/raft/append", cluster.api))
        .bearer_auth(cluster.join_token())
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("raft");
    assert_eq!(raft.status().as_u16(), 401);
    let (status, text) = join
        .send(Method::POST, "/api/v1/nodes/intruder/credential", None)
        .await;
    assert_eq!(status, 200, "{text}");
    let credential: Value = serde_json::from_str(&text).expect("json");
    let intruder = As::new(cluster, credential["token"].as_str());
    assert_eq!(
        join.send(Method::POST, "/api/v1/nodes/intruder/credential", None)
            .await
            .0,
        409
    );

    // A node credential: its own Node, its own pods; nothing of other nodes.
    let node_spec = |name: &str, address: &str| {
        json!({"kind": "Node", "metadata": {"name": name}, "spec": {
            "address": address, "capacity": {"cpu": "1", "memory": "1Gi", "pods": 10},
            "allocatable": {"cpu": "1", "memory": "1Gi", "pods": 10}}})
    };
    let (status, text) = intruder
        .send(
            Method::PUT,
            "/api/v1/nodes/intruder",
            Some(node_spec("intruder", "127.0.0.1:9")),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = intruder
        .send(
            Method::PUT,
            "/api/v1/nodes/intruder",
            Some(node_spec("intruder", "http://169.254.169.254/")),
        )
        .await;
    assert_eq!(
        status, 422,
        "a node address is host:port, nothing else: {text}"
    );
    let local_pod = setup.admin().json("/api/v1/namespaces/a/pods").await["items"][0]["metadata"]
        ["name"]
        .as_str()
        .expect("pod")
        .to_string();
    for (method, path, body) in [
        (
            Method::PUT,
            "/api/v1/nodes/local".to_string(),
            Some(node_spec("local", "127.0.0.1:9")),
        ),
        (
            Method::PUT,
            "/api/v1/nodes/local/status".to_string(),
            Some(json!({"conditions": []})),
        ),
        (
            Method::PUT,
            format!("/api/v1/namespaces/a/pods/{local_pod}/status"),
            Some(json!({"phase": "Failed"})),
        ),
        (
            Method::GET,
            format!("/api/v1/namespaces/a/pods/{local_pod}"),
            None,
        ),
        (Method::GET, "/api/v1/pods?node=local".to_string(), None),
        (Method::GET, "/api/v1/pods".to_string(), None),
        (Method::GET, "/api/v1/cluster/join".to_string(), None),
        (
            Method::POST,
            "/api/v1/members".to_string(),
            Some(json!({"id": 9, "address": "127.0.0.1:1"})),
        ),
        (
            Method::GET,
            "/api/v1/namespaces/a/deployments".to_string(),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/a/deployments/web-a".to_string(),
            Some(json!({})),
        ),
    ] {
        let (status, text) = intruder.send(method.clone(), &path, body).await;
        assert_eq!(status, 403, "node intruder {method} {path}: {text}");
    }
    assert_eq!(
        intruder
            .send(Method::GET, "/api/v1/pods?node=intruder", None)
            .await
            .0,
        200
    );
    assert_eq!(
        intruder.send(Method::GET, "/api/v1/services", None).await.0,
        200
    );

    // The member token: only the join handshake.
    let member =
        std::fs::read_to_string(cluster.data_dir().join("member.token")).expect("member.token");
    let member = As::new(cluster, Some(member.trim()));
    assert_eq!(
        member
            .send(Method::GET, "/api/v1/cluster/join", None)
            .await
            .0,
        200
    );
    assert_eq!(
        member
            .send(Method::GET, "/api/v1/namespaces/a/pods", None)
            .await
            .0,
        403
    );
    assert_eq!(
        member
            .send(Method::GET, "/api/v1/admin/backup", None)
            .await
            .0,
        403
    );

    // The node's listen port serves nothing unsigned, even naming a running pod.
    let response = reqwest::Client::new()
        .get(format!("http://{}/", cluster.listen))
        .header("x-reef-pod", format!("a/{local_pod}"))
        .header("host", "a.local")
        .send()
        .await
        .expect("listen port");
    assert_eq!(response.status().as_u16(), 401);
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/_reef/logs/a/{local_pod}",
            cluster.listen
        ))
        .send()
        .await
        .expect("listen port");
    assert_eq!(response.status().as_u16(), 401);
    // Logs still reach their owner through the API.
    let logs = setup
        .cluster
        .reef_as(&setup.token("a", "view"), &["logs", &local_pod, "-n", "a"]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
}
