//! The hostile-tenant suite: tenant B's tokens of every role against tenant
//! A's namespace and the cluster, and whose hosts and components are whose.

mod common;

use common::tenants::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

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
    // Nothing of A's changed. Its status may still move (the controller
    // counts the second replica ready after the first one answers), so the
    // comparison is of what only a writer could change: uid, generation, spec.
    let after = setup
        .admin()
        .json("/api/v1/namespaces/a/deployments/web-a")
        .await;
    for field in ["uid", "generation"] {
        assert_eq!(
            before["metadata"][field], after["metadata"][field],
            "{field}"
        );
    }
    assert_eq!(before["spec"], after["spec"]);
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
