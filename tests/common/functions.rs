//! Helpers for the serverless and routing tests: one control-plane member and
//! three `reef node` processes, the `function` example applied behind a Service.

use super::control_plane::ControlPlane;
use super::{eventually, example};
use reef_api::{Client, Kind};
use std::path::PathBuf;
use std::time::Duration;

pub const HOST: &str = "function.local";
pub const SLOW: Duration = Duration::from_secs(60);

/// A cluster of one member and nodes n1, n2 (labelled `zone=a`) and n3.
pub async fn cluster() -> ControlPlane {
    let mut cp = ControlPlane::start(1, &[]).await;
    cp.start_node_with("n1", &["--labels", "zone=a"]).await;
    cp.start_node_with("n2", &["--labels", "zone=a"]).await;
    cp.start_node_with("n3", &[]).await;
    cp.ingress = Some(cp.nodes[0].ingress.clone());
    let client = cp.client();
    eventually("three ready nodes", SLOW, || {
        let client = client.clone();
        async move {
            let nodes = client.list(Kind::Node, None, &[]).await.ok()?;
            let ready = nodes
                .items
                .iter()
                .filter(|n| {
                    n.status["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            (ready == 3).then_some(())
        }
    })
    .await;
    cp
}

/// Applies the `function` component with `deployment` as the body of its
/// `[[deployment]]` table (after name, labels and component).
pub fn apply(cp: &ControlPlane, deployment: &str) -> (tempfile::TempDir, PathBuf) {
    apply_text(
        cp,
        &format!(
            "[[deployment]]\nname = \"function\"\nlabels = {{ app = \"function\" }}\ncomponent = \"function.wasm\"\nmemory = \"64Mi\"\n{deployment}\n\n\
             [[service]]\nname = \"function\"\nselector = {{ app = \"function\" }}\nhost = \"{HOST}\"\n"
        ),
    )
}

/// Applies `manifest` beside a copy of function.wasm.
pub fn apply_text(cp: &ControlPlane, manifest: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = example("function").with_file_name("function.wasm");
    std::fs::copy(&wasm, dir.path().join("function.wasm")).expect("copy function.wasm");
    let path = dir.path().join("app.toml");
    std::fs::write(&path, manifest).expect("manifest");
    let out = cp.reef(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, path)
}

/// Live (not finished) pods of the function, with the node each is bound to.
pub async fn pods(client: &Client) -> Option<Vec<(String, Option<String>, bool)>> {
    let list = client.list(Kind::Pod, Some("default"), &[]).await.ok()?;
    Some(
        list.items
            .iter()
            .filter(|p| p.metadata.name.starts_with("function-"))
            .filter(|p| !matches!(p.status["phase"].as_str(), Some("Succeeded" | "Failed")))
            .map(|p| {
                (
                    p.metadata.name.clone(),
                    p.spec["node"].as_str().map(str::to_string),
                    p.status["ready"] == true,
                )
            })
            .collect(),
    )
}

pub async fn wait_for_pods(client: &Client, what: &str, ok: impl Fn(usize) -> bool) -> usize {
    eventually(what, SLOW, || async {
        let n = pods(client).await?.len();
        ok(n).then_some(n)
    })
    .await
}

/// The deployment's status, as JSON.
pub async fn status(client: &Client) -> serde_json::Value {
    client
        .get(Kind::Deployment, Some("default"), "function")
        .await
        .map(|d| d.status)
        .unwrap_or_default()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// GET `path` from the function through `ingress`: status and body.
pub async fn get(client: &reqwest::Client, ingress: &str, path: &str) -> (u16, String) {
    match client
        .get(format!("http://{ingress}{path}"))
        .header("host", HOST)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until `ingress` serves `host`: a pod is ready in the API a moment
/// before every node's routes hear of it over their watch.
pub async fn until_served(client: &reqwest::Client, ingress: &str, host: &str) {
    eventually(&format!("{ingress} serves {host}"), SLOW, || async {
        let answer = client
            .get(format!("http://{ingress}/"))
            .header("host", host)
            .send()
            .await
            .ok()?;
        (answer.status().as_u16() == 200).then_some(())
    })
    .await;
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
