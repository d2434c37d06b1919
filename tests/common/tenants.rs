//! Two tenants on one real `reef up`, `a` and `b`, each with a token of every
//! role, and A's app serving at a.local: what the hostile-tenant tests start
//! from, and a raw API caller holding one token.

use super::*;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

pub const SLOW: Duration = Duration::from_secs(90);
pub const ROLES: [&str; 3] = ["admin", "edit", "view"];

/// A raw API caller with one token.
pub struct As {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl As {
    pub fn new(cluster: &Cluster, token: Option<&str>) -> As {
        As {
            base: format!("http://{}", cluster.api),
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
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

    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.send(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json")
    }
}

/// Two tenants `a` and `b`, tokens of each role, and A's app serving at a.local.
pub struct Setup {
    pub cluster: Cluster,
    /// (tenant, role) → token.
    pub tokens: HashMap<(String, String), String>,
    _dir: tempfile::TempDir,
}

impl Setup {
    pub fn token(&self, tenant: &str, role: &str) -> String {
        self.tokens[&(tenant.to_string(), role.to_string())].clone()
    }

    pub fn as_tenant(&self, tenant: &str, role: &str) -> As {
        As::new(&self.cluster, Some(&self.token(tenant, role)))
    }

    pub fn admin(&self) -> As {
        As::new(&self.cluster, Some(&self.cluster.admin_token()))
    }

    /// Applies `text` (hello.wasm beside it) as tenant `tenant` with role `role`.
    pub fn apply_as(&self, tenant: &str, role: &str, text: &str) -> std::process::Output {
        let (_dir, path) = manifest_dir(text);
        self.cluster.reef_as(
            &self.token(tenant, role),
            &["apply", "-f", path_str(&path), "-n", tenant],
        )
    }
}

pub fn app(name: &str, greeting: &str, host: &str, replicas: u32) -> String {
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

pub fn tenants(quota_b: &str) -> String {
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

pub async fn setup() -> Setup {
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
pub async fn secrets_of_a(setup: &Setup) -> Vec<String> {
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

pub async fn deployment_status(setup: &Setup, ns: &str, name: &str) -> Value {
    setup
        .admin()
        .json(&format!("/api/v1/namespaces/{ns}/deployments/{name}"))
        .await["status"]
        .clone()
}
