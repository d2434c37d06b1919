//! The walking skeleton end to end: `reef up`, apply the hello example from its TOML
//! manifest, reach it through the node proxy, update, survive kill -9, reject bad
//! input, delete.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(90);

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pod_names(cluster: &Cluster) -> BTreeSet<String> {
    items(&cluster.get_json("pods"))
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits until exactly `n` pods exist, all Running and ready; returns them.
async fn running_pods(cluster: &Cluster, n: usize) -> Vec<Value> {
    eventually(&format!("{n} running, ready pods"), SLOW, || async move {
        let pods = items(&cluster.get_json("pods"));
        let ok = pods.len() == n
            && pods
                .iter()
                .all(|p| p["status"]["phase"] == "Running" && p["status"]["ready"] == true);
        ok.then_some(pods)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_is_served_listed_and_updated() {
    let app = example("hello");
    let cluster = Cluster::start().await;
    let out = cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    assert!(out.contains("deployment/hello created"), "{out}");
    assert!(out.contains("service/hello created"), "{out}");

    let body = cluster
        .until_status("hello.local", "/world", 200, SLOW)
        .await;
    assert!(body.contains("Hello from reef"), "greeting missing: {body}");
    assert!(body.contains("/world"), "path missing: {body}");

    // Two Running pods bound to the node.
    let pods = running_pods(&cluster, 2).await;
    for pod in &pods {
        assert_eq!(pod["spec"]["node"], "local", "{pod}");
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("hello-"),
            "{pod}"
        );
    }
    let list = cluster.get_json("pods");
    assert!(list["resource_version"].as_u64().unwrap_or(0) > 0, "{list}");

    // Tables people can read.
    let deployments = cluster.reef_ok(&["get", "deployments"]);
    assert!(deployments.starts_with("NAME"), "{deployments}");
    assert!(
        deployments
            .lines()
            .any(|l| l.starts_with("hello") && l.contains("2/2")),
        "{deployments}"
    );
    let services = cluster.reef_ok(&["get", "services"]);
    assert!(
        services
            .lines()
            .any(|l| l.starts_with("hello") && l.contains("hello.local")),
        "{services}"
    );
    let nodes = cluster.reef_ok(&["get", "nodes"]);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("local") && l.contains("Ready")),
        "{nodes}"
    );
    let pods_table = cluster.reef_ok(&["get", "pods"]);
    assert_eq!(
        pods_table
            .lines()
            .filter(|l| l.contains("Running") && l.contains("1/1"))
            .count(),
        2,
        "{pods_table}"
    );
    let one = cluster.reef_ok(&["get", "deployment", "hello", "-o", "json"]);
    let one: Value = serde_json::from_str(&one).expect("json");
    assert_eq!(one["spec"]["replicas"], 2);
    let missing = cluster.reef(&["get", "deployment", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("deployment \"nope\" not found"));

    // Re-applying the same file changes nothing.
    let out = cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    assert!(out.contains("deployment/hello unchanged"), "{out}");

    // Change the greeting: new pods answer, old ones go.
    let old_pods = pod_names(&cluster);
    let text = std::fs::read_to_string(&app)
        .expect("read app.toml")
        .replace("GREETING = \"Hello\"", "GREETING = \"Howdy\"");
    let (_dir, changed) = manifest_dir(&text);
    let out = cluster.reef_ok(&["apply", "-f", path_str(&changed)]);
    assert!(out.contains("deployment/hello configured"), "{out}");
    eventually(
        "old pods to be gone and 2 new ones running",
        SLOW,
        || async {
            let pods = items(&cluster.get_json("pods"));
            let names: BTreeSet<String> = pods
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let ready = pods.iter().all(|p| p["status"]["ready"] == true);
            (names.len() == 2 && names.is_disjoint(&old_pods) && ready).then_some(())
        },
    )
    .await;
    let body = cluster
        .until_status("hello.local", "/again", 200, SLOW)
        .await;
    eventually("every answer to carry the new greeting", SLOW, || async {
        for _ in 0..10 {
            let (status, body) = cluster.request("hello.local", "/again").await?;
            if status != 200 || !body.contains("Howdy") {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(body.contains("/again"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_kill_9() {
    let app = example("hello");
    let mut cluster = Cluster::start().await;
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    cluster
        .until_status("hello.local", "/before", 200, SLOW)
        .await;
    let before = cluster.get_json("deployments");
    let pods_before = pod_names(&cluster);

    cluster.kill9();
    cluster.launch().await;

    // No re-apply: the stored objects bring the function back.
    let body = cluster
        .until_status("hello.local", "/after", 200, SLOW)
        .await;
    assert!(body.contains("/after"), "{body}");
    let after = cluster.get_json("deployments");
    assert_eq!(
        items(&before)[0]["metadata"]["uid"],
        items(&after)[0]["metadata"]["uid"],
        "the same deployment object survives"
    );
    assert_eq!(
        pod_names(&cluster),
        pods_before,
        "the same pods are kept, not recreated"
    );
    let services = items(&cluster.get_json("services"));
    assert_eq!(services.len(), 1);
    let blobs = items(&cluster.get_json("blobs"));
    assert_eq!(blobs.len(), 1, "the component blob survives");

    // The node registered again: its object names the new ingress address.
    let ingress = cluster.ingress.clone();
    eventually(
        "the node to re-register with its new address",
        SLOW,
        || async {
            let nodes = items(&cluster.get_json("nodes"));
            (nodes.len() == 1 && nodes[0]["spec"]["ingress"] == ingress.as_str()).then_some(())
        },
    )
    .await;

    // Watch history does not survive a restart: an old revision gets 410 (relist).
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/pods?watch=1&since=1",
            cluster.api
        ))
        .bearer_auth(cluster.admin_token())
        .send()
        .await
        .expect("watch request");
    assert_eq!(response.status().as_u16(), 410);
}

/// A valid deployment and service precede the fault, so a half-applying
/// implementation would create them.
const VALID_PREFIX: &str = r#"
[[deployment]]
name = "good"
labels = { app = "good" }
component = "hello.wasm"

[[service]]
name = "good"
selector = { app = "good" }
host = "good.local"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_rejected_whole_with_locations() {
    let cluster = Cluster::start().await;
    let prefix_lines = VALID_PREFIX.lines().count();
    // (fault appended after the valid prefix, expected line, expected text in the message)
    let cases: Vec<(&str, usize, Vec<&str>)> =
        vec![
        ("[[deployment]]\nname = \"broken\ncomponent = \"hello.wasm\"\n", 2, vec!["app.toml:"]),
        (
            "[[deployment]]\nname = \"typo\"\nreplcas = 3\ncomponent = \"hello.wasm\"\n",
            3,
            vec!["unknown key `replcas`", "did you mean `replicas`?"],
        ),
        (
            "[[deployment]]\nname = \"nofile\"\ncomponent = \"missing.wasm\"\n",
            3,
            vec!["missing.wasm", "build"],
        ),
        (
            "[[deployment]]\nname = \"cosmic\"\ncomponent = \"hello.wasm\"\ncpu = \"12 parsecs\"\n",
            4,
            vec!["12 parsecs", "250m"],
        ),
        (
            "[[service]]\nname = \"good\"\nselector = { app = \"x\" }\n",
            2,
            vec!["duplicate service \"good\"", "distinct name"],
        ),
    ];
    for (fault, fault_line, expected) in cases {
        let (_dir, path) = manifest_dir(&format!("{VALID_PREFIX}{fault}"));
        let out = cluster.reef(&["apply", "-f", path_str(&path)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "exit code for {fault:?}: {stderr}"
        );
        let location = format!("app.toml:{}:", prefix_lines + fault_line);
        assert!(
            stderr.contains(&location),
            "expected {location} for {fault:?}, got:\n{stderr}"
        );
        for text in expected {
            assert!(
                stderr.contains(text),
                "expected {text:?} for {fault:?}, got:\n{stderr}"
            );
        }
        for kind in ["deployments", "services", "blobs"] {
            let list = cluster.get_json(kind);
            assert!(
                items(&list).is_empty(),
                "{kind} created by a bad file: {list}"
            );
        }
    }
    // `reef up --apply` checks its files before starting anything.
    let (_dir, bad) = manifest_dir(&format!("{VALID_PREFIX}[[deployment]]\nname = \"x\"\ncomponent = \"hello.wasm\"\nmemory = \"lots\"\n"));
    let home = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(REEF)
        .args([
            "up",
            "--api",
            "127.0.0.1:0",
            "--ingress",
            "127.0.0.1:0",
            "--apply",
            path_str(&bad),
        ])
        .arg("--data-dir")
        .arg(home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()
        .expect("reef up");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("app.toml:{}:10", prefix_lines + 4)),
        "{stderr}"
    );
    assert!(!home.path().join("data").exists(), "nothing started");

    // The API validates too: a bad quantity sent directly is a 422 naming the field.
    let config = std::fs::read_to_string(cluster.home.path().join("config/reef/config.toml"))
        .expect("client config");
    let token = config
        .lines()
        .find_map(|l| l.strip_prefix("token = "))
        .map(|t| t.trim_matches('"').to_string())
        .expect("token in config");
    let body = serde_json::json!({
        "kind": "Deployment",
        "metadata": {"name": "direct", "namespace": "default"},
        "spec": {"template": {"component": format!("sha256:{}", "0".repeat(64)), "memory": "lots"}}
    });
    let response = reqwest::Client::new()
        .put(format!(
            "http://{}/api/v1/namespaces/default/deployments/direct",
            cluster.api
        ))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status().as_u16(), 422);
    let error: Value = response.json().await.expect("error body");
    assert_eq!(error["field"], "spec.template.memory", "{error}");
    // And without a token the API refuses.
    let response = reqwest::get(format!(
        "http://{}/api/v1/namespaces/default/pods",
        cluster.api
    ))
    .await
    .expect("GET");
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_deployment_then_the_service() {
    let app = example("hello");
    let cluster = Cluster::start().await;
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    cluster.until_status("hello.local", "/", 200, SLOW).await;

    // A deleted pod is replaced.
    let pods = running_pods(&cluster, 2).await;
    let victim = pods[0]["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    let out = cluster.reef_ok(&["delete", "pod", &victim]);
    assert!(out.contains(&format!("pod/{victim} deleted")), "{out}");
    let replaced = running_pods(&cluster, 2).await;
    assert!(
        replaced
            .iter()
            .all(|p| p["metadata"]["name"] != victim.as_str()),
        "the deleted pod must not come back: {replaced:?}"
    );

    let out = cluster.reef_ok(&["delete", "deployment", "hello"]);
    assert!(out.contains("deployment/hello deleted"), "{out}");
    eventually("the deployment's pods to go", SLOW, || async {
        pod_names(&cluster).is_empty().then_some(())
    })
    .await;
    let body = cluster.until_status("hello.local", "/", 503, SLOW).await;
    assert!(
        body.contains("default/hello"),
        "503 should name the service: {body}"
    );

    cluster.reef_ok(&["delete", "service", "hello"]);
    let body = cluster.until_status("hello.local", "/x", 404, SLOW).await;
    assert!(
        body.contains("hello.local") && body.contains("/x"),
        "404 should name host and path: {body}"
    );

    let again = cluster.reef(&["delete", "service", "hello"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("service \"hello\" not found"));
}

/// `reef completion SHELL` prints a script the shell itself accepts, naming
/// reef's verbs; an unknown shell is a usage error.
#[test]
fn completion_scripts_are_valid_for_their_shells() {
    let out = Command::new(REEF)
        .args(["completion", "bash"])
        .output()
        .expect("run reef");
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    for verb in ["apply", "logs", "completion", "rollout"] {
        assert!(script.contains(verb), "no {verb} in the bash script");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reef.bash");
    std::fs::write(&path, &script).expect("write the script");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash -n");
    assert!(checked.status.success(), "bash -n: {checked:?}");
    // Sourced, it registers the completion function for `reef`.
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p reef", path.display()))
        .output()
        .expect("run bash");
    assert!(sourced.status.success(), "{sourced:?}");
    assert!(
        String::from_utf8_lossy(&sourced.stdout).contains("reef"),
        "{sourced:?}"
    );
    for shell in ["zsh", "fish"] {
        let out = Command::new(REEF)
            .args(["completion", shell])
            .output()
            .expect("run reef");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{shell}: {out:?}"
        );
    }
    let out = Command::new(REEF)
        .args(["completion", "cmd.exe"])
        .output()
        .expect("run reef");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A guest's control characters reach a pipe as they are, and a terminal
/// (a pty from `script`) as `\xNN`: a component cannot clear or retitle the
/// screen of whoever reads its logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_control_characters_reach_a_terminal_escaped() {
    let cluster = Cluster::start().await;
    let (_dir, app) = example_dir("ticker", |text| {
        text.replace(
            r#"args = ["ticker"]"#,
            r#"args = ["\u001b]0;owned\u0007\u001b[2J"]"#,
        )
        .replace("\"1000\"", "\"100\"")
    });
    cluster.reef_ok(&["apply", "-f", app.to_str().expect("path")]);
    let pod = eventually("a running ticker", Duration::from_secs(90), || {
        let pods = items(&cluster.get_json("pods"));
        let running = pods
            .into_iter()
            .find(|p| p["status"]["phase"] == "Running")
            .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string));
        async move { running }
    })
    .await;
    let raw = "\x1b]0;owned\x07\x1b[2J: tick";
    let piped = eventually("ticks in the logs", Duration::from_secs(90), || {
        let out = cluster.reef(&["logs", &pod]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        async move { text.contains(raw).then_some(text) }
    })
    .await;
    assert!(piped.contains(raw), "{piped:?}");
    let on_a_terminal = Command::new("script")
        .args(["-qec", &format!("{REEF} logs {pod}"), "/dev/null"])
        .envs(cluster.env())
        .output()
        .expect("run script");
    assert!(on_a_terminal.status.success(), "{on_a_terminal:?}");
    let shown = String::from_utf8_lossy(&on_a_terminal.stdout);
    assert!(
        shown.contains("\\x1b]0;owned\\x07\\x1b[2J: tick"),
        "{shown:?}"
    );
    assert!(
        !shown.contains('\x1b') && !shown.contains('\x07'),
        "{shown:?}"
    );
}
