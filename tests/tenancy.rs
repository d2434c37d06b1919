//! The hostile-tenant suite: two tenants on one real `reef up`, each with a
//! token of every role, and what tenant B's tokens (and node, join and member
//! tokens) can and cannot do to tenant A and to the cluster.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(90);
const ROLES: [&str; 3] = ["admin", "edit", "view"];

/// A raw API caller with one token.
struct As {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl As {
    fn new(cluster: &Cluster, token: Option<&str>) -> As {
        As {
            base: format!("http://{}", cluster.api),
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.send(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json")
    }
}

/// Two tenants `a` and `b`, tokens of each role, and A's app serving at a.local.
struct Setup {
    cluster: Cluster,
    /// (tenant, role) → token.
    tokens: HashMap<(String, String), String>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn token(&self, tenant: &str, role: &str) -> String {
        self.tokens[&(tenant.to_string(), role.to_string())].clone()
    }

    fn as_tenant(&self, tenant: &str, role: &str) -> As {
        As::new(&self.cluster, Some(&self.token(tenant, role)))
    }

    fn admin(&self) -> As {
        As::new(&self.cluster, Some(&self.cluster.admin_token()))
    }

    /// Applies `text` (hello.wasm beside it) as tenant `tenant` with role `role`.
    fn apply_as(&self, tenant: &str, role: &str, text: &str) -> std::process::Output {
        let (_dir, path) = manifest_dir(text);
        self.cluster.reef_as(
            &self.token(tenant, role),
            &["apply", "-f", path_str(&path), "-n", tenant],
        )
    }
}

fn app(name: &str, greeting: &str, host: &str, replicas: u32) -> String {
    format!(
        r#"
[[deployment]]
name = "{name}"
labels = {{ app = "{name}" }}
replicas = {replicas}
component = "hello.wasm"
memory = "32Mi"
env = {{ GREETING = "{greeting}" }}

[[service]]
name = "{name}"
selector = {{ app = "{name}" }}
host = "{host}"
"#
    )
}

fn tenants(quota_b: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "a"
pods = 10

[[tenant]]
name = "b"
{quota_b}
"#
    )
}

async fn setup() -> Setup {
    let cluster = Cluster::start().await;
    let (dir, path) = manifest_dir(&tenants("pods = 10"));
    cluster.reef_ok(&["apply", "-f", path_str(&path)]);
    let mut tokens = HashMap::new();
    for tenant in ["a", "b"] {
        for role in ROLES {
            let token = cluster.reef_ok(&["token", "create", "--tenant", tenant, "--role", role]);
            tokens.insert(
                (tenant.to_string(), role.to_string()),
                token.trim().to_string(),
            );
        }
    }
    let setup = Setup {
        cluster,
        tokens,
        _dir: dir,
    };
    let out = setup.apply_as("a", "edit", &app("web-a", "Hello A", "a.local", 2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    setup.cluster.until_status("a.local", "/", 200, SLOW).await;
    setup
}

/// Names of A's objects that must never appear in an answer to B.
async fn secrets_of_a(setup: &Setup) -> Vec<String> {
    let pods = setup.admin().json("/api/v1/namespaces/a/pods").await;
    let mut names: Vec<String> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().expect("name").to_string())
        .collect();
    assert!(!names.is_empty());
    names.push("web-a".into());
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_namespace_is_out_of_reach() {
    let setup = setup().await;
    let secrets = secrets_of_a(&setup).await;
    let pod = secrets[0].clone();
    let before = setup
        .admin()
        .json("/api/v1/namespaces/a/deployments/web-a")
        .await;
    let digest = before["spec"]["template"]["component"]
        .as_str()
        .expect("digest")
        .to_string();
    let a_deployment = {
        let mut d = before.clone();
        d["spec"]["replicas"] = json!(0);
        d
    };
    let a_tokens = setup.admin().json("/api/v1/tokens").await;
    let a_token_id = a_tokens
        .as_array()
        .or(a_tokens["items"].as_array())
        .expect("tokens")
        .iter()
        .find(|t| t["identity"]["tenant"] == "a")
        .expect("a token of a")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let get = Method::GET;
    let requests: Vec<(Method, String, Option<Value>)> = vec![
        (get.clone(), "/api/v1/namespaces/a/deployments".into(), None),
        (get.clone(), "/api/v1/namespaces/a/pods".into(), None),
        (get.clone(), "/api/v1/namespaces/a/services".into(), None),
        (get.clone(), "/api/v1/namespaces/a/events".into(), None),
        (
            get.clone(),
            "/api/v1/namespaces/a/deployments?watch=1".into(),
            None,
        ),
        (
            get.clone(),
            "/api/v1/namespaces/a/pods?watch=1&since=0".into(),
            None,
        ),
        (
            get.clone(),
            "/api/v1/namespaces/a/deployments/web-a".into(),
            None,
        ),
        (
            get.clone(),
            format!("/api/v1/namespaces/a/pods/{pod}"),
            None,
        ),
        (
            get.clone(),
            format!("/api/v1/namespaces/a/pods/{pod}/log"),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/a/deployments/web-a".into(),
            Some(a_deployment.clone()),
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/a/deployments/web-a".into(),
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/a/services/web-a".into(),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/namespaces/a/pods/{pod}"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/namespaces/a/pods/{pod}/status"),
            Some(json!({"phase": "Failed"})),
        ),
        (
            Method::POST,
            "/api/v1/apply".into(),
            Some(json!([a_deployment])),
        ),
        (get.clone(), format!("/api/v1/blobs/{digest}"), None),
        (Method::HEAD, format!("/api/v1/blobs/{digest}"), None),
        (get.clone(), "/api/v1/pods".into(), None),
        (get.clone(), "/api/v1/deployments".into(), None),
        (get.clone(), "/api/v1/events?watch=1".into(), None),
        (get.clone(), "/api/v1/nodes".into(), None),
        (get.clone(), "/api/v1/nodes/local".into(), None),
        (get.clone(), "/api/v1/blobs".into(), None),
        (get.clone(), "/api/v1/tenants".into(), None),
        (get.clone(), "/api/v1/tenants/a".into(), None),
        (
            Method::PUT,
            "/api/v1/tenants/b".into(),
            Some(json!({"kind": "Tenant", "metadata": {"name": "b"}, "spec": {"pods": 1000}})),
        ),
        (Method::DELETE, "/api/v1/tenants/a".into(), None),
        (get.clone(), "/api/v1/members".into(), None),
        (
            Method::POST,
            "/api/v1/members".into(),
            Some(json!({"id": 9, "address": "127.0.0.1:1"})),
        ),
        (get.clone(), "/api/v1/cluster/join".into(), None),
        (get.clone(), "/api/v1/cluster/node-access".into(), None),
        (get.clone(), "/api/v1/admin/backup".into(), None),
        (get.clone(), "/metrics".into(), None),
        (Method::POST, "/api/v1/nodes/sneaky/credential".into(), None),
        (Method::DELETE, format!("/api/v1/tokens/{a_token_id}"), None),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"tenant": "a", "role": "admin"})),
        ),
    ];
    for role in ROLES {
        let b = setup.as_tenant("b", role);
        for (method, path, body) in &requests {
            let (status, text) = b.send(method.clone(), path, body.clone()).await;
            assert!(
                status == 403 || status == 404,
                "b/{role} {method} {path}: {status} {text}"
            );
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "b/{role} {method} {path} leaked {secret}: {text}"
                );
            }
        }
        // B's own token list holds only B's tokens.
        let (status, text) = b.send(Method::GET, "/api/v1/tokens", None).await;
        if role == "admin" {
            assert_eq!(status, 200, "{text}");
            let listed: Value = serde_json::from_str(&text).expect("json");
            let listed = listed["items"].as_array().expect("items").clone();
            assert_eq!(listed.len(), 3, "{text}");
            assert!(
                listed.iter().all(|t| t["identity"]["tenant"] == "b"),
                "{text}"
            );
        } else {
            assert_eq!(status, 403, "b/{role} may not list tokens: {text}");
        }
    }
    // Nothing of A's changed.
    let after = setup
        .admin()
        .json("/api/v1/namespaces/a/deployments/web-a")
        .await;
    assert_eq!(
        before["metadata"]["resource_version"],
        after["metadata"]["resource_version"]
    );
    assert_eq!(
        setup.cluster.request("a.local", "/").await.map(|r| r.0),
        Some(200)
    );

    // In its own namespace, view only reads; edit writes but mints no tokens.
    let view = setup.as_tenant("b", "view");
    let own = json!({"kind": "Service", "metadata": {"name": "s", "namespace": "b"},
                     "spec": {"selector": {"app": "s"}, "host": "s.b.local"}});
    let (status, _) = view
        .send(Method::GET, "/api/v1/namespaces/b/deployments", None)
        .await;
    assert_eq!(status, 200);
    for (method, path, body) in [
        (
            Method::PUT,
            "/api/v1/namespaces/b/services/s",
            Some(own.clone()),
        ),
        (Method::POST, "/api/v1/apply", Some(json!([own.clone()]))),
        (Method::PUT, &*format!("/api/v1/blobs/{digest}"), None),
        (Method::DELETE, "/api/v1/namespaces/b/services/s", None),
    ] {
        let (status, text) = view.send(method.clone(), path, body).await;
        assert_eq!(status, 403, "b/view {method} {path}: {text}");
    }
    let edit = setup.as_tenant("b", "edit");
    let (status, text) = edit
        .send(Method::PUT, "/api/v1/namespaces/b/services/s", Some(own))
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = edit
        .send(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"tenant": "b", "role": "view"})),
        )
        .await;
    assert_eq!(status, 403);
    // A tenant admin mints its own tenant's tokens, and they work.
    let (status, text) = setup
        .as_tenant("b", "admin")
        .send(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"tenant": "b", "role": "view"})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let minted: Value = serde_json::from_str(&text).expect("json");
    let fresh = As::new(&setup.cluster, minted["token"].as_str());
    let (status, _) = fresh
        .send(Method::GET, "/api/v1/namespaces/b/services", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_components_belong_to_one_namespace() {
    let setup = setup().await;
    let edit_b = setup.as_tenant("b", "edit");
    // A's host cannot be claimed, and the refusal names nothing of A's.
    let claim = json!({"kind": "Service", "metadata": {"name": "grab", "namespace": "b"},
                       "spec": {"selector": {"app": "grab"}, "host": "a.local"}});
    let (status, text) = edit_b
        .send(
            Method::PUT,
            "/api/v1/namespaces/b/services/grab",
            Some(claim),
        )
        .await;
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("a.local") && text.contains("taken") && !text.contains("web-a"),
        "{text}"
    );
    // Nor can B catch every host.
    let catch_all = json!({"kind": "Service", "metadata": {"name": "all", "namespace": "b"},
                           "spec": {"selector": {"app": "all"}}});
    let (status, text) = edit_b
        .send(
            Method::PUT,
            "/api/v1/namespaces/b/services/all",
            Some(catch_all),
        )
        .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("spec.host"), "{text}");

    // B runs the same component (it uploads its own copy) under its own host.
    let out = setup.apply_as("b", "edit", &app("web-b", "Hello B", "b.local", 2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = setup.cluster.until_status("b.local", "/x", 200, SLOW).await;
    assert!(body.starts_with("Hello B"), "{body}");
    // A's host and paths only ever reach A's pods.
    for i in 0..40 {
        let path = format!("/{i}/deep/path?q={i}");
        let (status, body) = setup
            .cluster
            .request("a.local", &path)
            .await
            .expect("a.local");
        assert_eq!(status, 200);
        assert!(body.starts_with("Hello A"), "{path}: {body}");
    }
    // And A cannot take B's host either.
    let claim_b = json!({"kind": "Service", "metadata": {"name": "grab", "namespace": "a"},
                         "spec": {"selector": {"app": "grab"}, "host": "b.local"}});
    let (status, _) = setup
        .as_tenant("a", "edit")
        .send(
            Method::PUT,
            "/api/v1/namespaces/a/services/grab",
            Some(claim_b),
        )
        .await;
    assert_eq!(status, 409);

    // A third tenant that never uploaded the component cannot run it by digest.
    let digest = setup
        .admin()
        .json("/api/v1/namespaces/a/deployments/web-a")
        .await["spec"]["template"]["component"]
        .as_str()
        .expect("digest")
        .to_string();
    setup.cluster.reef_ok(&[
        "apply",
        "-f",
        path_str(&manifest_dir("[[tenant]]\nname = \"c\"\n").1),
    ]);
    let c_edit = setup
        .cluster
        .reef_ok(&["token", "create", "--tenant", "c", "--role", "edit"]);
    let c = As::new(&setup.cluster, Some(c_edit.trim()));
    let stolen = json!({"kind": "Deployment", "metadata": {"name": "copy", "namespace": "c"},
                        "spec": {"template": {"component": digest}}});
    let (status, text) = c
        .send(
            Method::PUT,
            "/api/v1/namespaces/c/deployments/copy",
            Some(stolen),
        )
        .await;
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("spec.template.component") && text.contains("not uploaded"),
        "{text}"
    );
    let (status, _) = c
        .send(Method::GET, &format!("/api/v1/blobs/{digest}"), None)
        .await;
    assert_eq!(
        status, 404,
        "a component c never uploaded does not exist for c"
    );
}

async fn deployment_status(setup: &Setup, ns: &str, name: &str) -> Value {
    setup
        .admin()
        .json(&format!("/api/v1/namespaces/{ns}/deployments/{name}"))
        .await["status"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_then_admit_then_hold_short() {
    let setup = setup().await;
    let set_quota = |text: &str| {
        let (_dir, path) = manifest_dir(&tenants(text));
        setup.cluster.reef_ok(&["apply", "-f", path_str(&path)]);
    };
    set_quota("pods = 2\nservices = 1");
    // Over the quota: 403 naming it, nothing created.
    let out = setup.apply_as("b", "edit", &app("big", "Hello B", "big.local", 3));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exceeded quota")
            && stderr.contains("pods: 3 requested, 0 in use, limit 2"),
        "{stderr}"
    );
    let listed = setup.admin().json("/api/v1/namespaces/b/deployments").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    // Raised: the same file goes through and reaches its replicas.
    set_quota("pods = 4\nservices = 1");
    let out = setup.apply_as("b", "edit", &app("big", "Hello B", "big.local", 3));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("3 ready replicas", SLOW, || async {
        let status = deployment_status(&setup, "b", "big").await;
        (status["ready_replicas"] == 3).then_some(())
    })
    .await;
    let tenant = setup.admin().json("/api/v1/tenants/b").await;
    assert_eq!(tenant["status"]["used"]["pods"], 3, "{tenant}");
    // A second service is over the services quota.
    let more = json!({"kind": "Service", "metadata": {"name": "more", "namespace": "b"},
                      "spec": {"selector": {"app": "x"}, "host": "more.local"}});
    let (status, text) = setup
        .as_tenant("b", "edit")
        .send(
            Method::PUT,
            "/api/v1/namespaces/b/services/more",
            Some(more),
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("services: 1 requested, 1 in use, limit 1"),
        "{text}"
    );

    // Lowered below what runs: nothing is evicted, but a lost pod is not replaced,
    // and the deployment and an event say why.
    set_quota("pods = 1\nservices = 1");
    let pods = setup.admin().json("/api/v1/namespaces/b/pods").await;
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("pod")
        .to_string();
    let (status, _) = setup
        .as_tenant("b", "edit")
        .send(
            Method::DELETE,
            &format!("/api/v1/namespaces/b/pods/{victim}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let held = eventually("the deployment to say it is held short", SLOW, || async {
        let status = deployment_status(&setup, "b", "big").await;
        status["held"].as_str().map(str::to_string)
    })
    .await;
    assert!(held.contains("quota") && held.contains("pods"), "{held}");
    assert_eq!(deployment_status(&setup, "b", "big").await["replicas"], 2);
    let events = setup.admin().json("/api/v1/namespaces/b/events").await;
    assert!(
        events["items"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["spec"]["reason"] == "QuotaExceeded"),
        "{events}"
    );
    // Scaling down still works over a lowered quota.
    let out = setup.apply_as("b", "edit", &app("big", "Hello B", "big.local", 2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Raised again: back to its replicas, and no longer held.
    set_quota("pods = 4\nservices = 1");
    let out = setup.apply_as("b", "edit", &app("big", "Hello B", "big.local", 3));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("3 ready replicas again", SLOW, || async {
        let status = deployment_status(&setup, "b", "big").await;
        (status["ready_replicas"] == 3 && status["held"].is_null()).then_some(())
    })
    .await;

    // A tenant holding objects is not deleted; once empty it is, tokens and all.
    let (status, text) = setup
        .admin()
        .send(Method::DELETE, "/api/v1/tenants/b", None)
        .await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("still holds"), "{text}");
    for path in [
        "/api/v1/namespaces/b/deployments/big",
        "/api/v1/namespaces/b/services/big",
    ] {
        let (status, text) = setup
            .as_tenant("b", "edit")
            .send(Method::DELETE, path, None)
            .await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    eventually("b's pods to go", SLOW, || async {
        let pods = setup.admin().json("/api/v1/namespaces/b/pods").await;
        pods["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
    let (status, text) = setup
        .admin()
        .send(Method::DELETE, "/api/v1/tenants/b", None)
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = setup
        .as_tenant("b", "admin")
        .send(Method::GET, "/api/v1/namespaces/b/services", None)
        .await;
    assert_eq!(status, 401, "a deleted tenant's tokens are gone");
}

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
