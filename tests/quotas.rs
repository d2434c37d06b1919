//! Tenant quotas on a real `reef up`: refused at admission, admitted once
//! raised, pods held short when lowered, and a tenant deleted only once empty.

mod common;

use common::tenants::*;
use common::*;
use reqwest::Method;
use serde_json::json;

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
