//! Serverless functions end to end: one control-plane member and three
//! `reef node` processes, the `function` example behind a Service. Scale to
//! zero and back, request-driven scale-up and down, the activation queue's
//! bound, balancing across nodes, failover, and bodies streaming through two
//! proxies.

mod common;

use common::control_plane::ControlPlane;
use common::{eventually, example, report_figure, rss_kib};
use reef_api::{Client, Kind};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HOST: &str = "function.local";
const SLOW: Duration = Duration::from_secs(60);

/// A cluster of one member and nodes n1, n2 (labelled `zone=a`) and n3.
async fn cluster() -> ControlPlane {
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
fn apply(cp: &ControlPlane, deployment: &str) -> (tempfile::TempDir, PathBuf) {
    apply_text(
        cp,
        &format!(
            "[[deployment]]\nname = \"function\"\nlabels = {{ app = \"function\" }}\ncomponent = \"function.wasm\"\nmemory = \"64Mi\"\n{deployment}\n\n\
             [[service]]\nname = \"function\"\nselector = {{ app = \"function\" }}\nhost = \"{HOST}\"\n"
        ),
    )
}

/// Applies `manifest` beside a copy of function.wasm.
fn apply_text(cp: &ControlPlane, manifest: &str) -> (tempfile::TempDir, PathBuf) {
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
async fn pods(client: &Client) -> Option<Vec<(String, Option<String>, bool)>> {
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

async fn wait_for_pods(client: &Client, what: &str, ok: impl Fn(usize) -> bool) -> usize {
    eventually(what, SLOW, || async {
        let n = pods(client).await?.len();
        ok(n).then_some(n)
    })
    .await
}

/// The deployment's status, as JSON.
async fn status(client: &Client) -> serde_json::Value {
    client
        .get(Kind::Deployment, Some("default"), "function")
        .await
        .map(|d| d.status)
        .unwrap_or_default()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// GET `path` from the function through `ingress`: status and body.
async fn get(client: &reqwest::Client, ingress: &str, path: &str) -> (u16, String) {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_scales_to_zero_and_requests_wake_it() {
    let cp = cluster().await;
    let client = cp.client();
    let _app = apply(
        &cp,
        "[deployment.autoscale]\nmin = 0\nmax = 4\nconcurrency = 10\nidle = \"2s\"\nwindow = \"10s\"\npanic_window = \"2s\"",
    );
    // A new function runs one pod (compiled and checked once), then idles to zero.
    wait_for_pods(&client, "the first pod", |n| n == 1).await;
    wait_for_pods(&client, "scale to zero after idle", |n| n == 0).await;
    let reason = status(&client).await["autoscale"]["reason"].clone();
    assert!(
        reason.as_str().is_some_and(|r| r.contains("idle")),
        "{reason}"
    );
    let table = cp.reef(&["get", "deployments"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("function"))
        .unwrap_or("");
    for shown in ["0/0", "0-4 @10", "idle: no requests for 2s"] {
        assert!(row.contains(shown), "{shown:?} not in {row:?}\n{table}");
    }

    let ingress = cp.nodes[0].ingress.clone();
    let web = http();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..3 {
        let started = Instant::now();
        let (code, body) = get(&web, &ingress, "/").await;
        cold.push(started.elapsed());
        assert_eq!(code, 200, "round {round}: {body}\n{}", cp.log_tail());
        assert!(body.starts_with("function pod=function-"), "{body}");
        let started = Instant::now();
        let (code, _) = get(&web, &ingress, "/").await;
        warm.push(started.elapsed());
        assert_eq!(code, 200);
        wait_for_pods(&client, "back to zero", |n| n == 0).await;
    }
    cold.sort();
    warm.sort();
    report_figure(&format!(
        "serverless: first request at zero {:?} (median of 3), a warm one {:?}",
        percentile(&cold, 0.5),
        percentile(&warm, 0.5)
    ));

    // 50 requests at once against zero: all held, all served.
    let answers = futures::future::join_all((0..50).map(|_| {
        let (web, ingress) = (web.clone(), ingress.clone());
        async move { get(&web, &ingress, "/sleep?ms=100").await }
    }))
    .await;
    let failed: Vec<_> = answers.iter().filter(|(code, _)| *code != 200).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", cp.log_tail());
    let events = cp.reef(&["describe", "deployment", "function"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(text.contains("Autoscaled"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_load_scales_to_demand_and_back_to_zero_without_failures() {
    let cp = cluster().await;
    let client = cp.client();
    let _app = apply(
        &cp,
        "[deployment.autoscale]\nmin = 0\nmax = 6\nconcurrency = 2\nidle = \"2s\"\nwindow = \"10s\"\npanic_window = \"2s\"",
    );
    wait_for_pods(&client, "scale to zero", |n| n == 0).await;
    // 8 clients, each always with one request of 300 ms in flight: 8 / 2 = 4 pods.
    let ingress: Vec<String> = cp.nodes.iter().map(|n| n.ingress.clone()).collect();
    let stop = Instant::now() + Duration::from_secs(8);
    let web = http();
    let load = futures::future::join_all((0..8).map(|i| {
        let (web, ingress) = (web.clone(), ingress[i % ingress.len()].clone());
        async move {
            let mut codes: HashMap<u16, usize> = HashMap::new();
            while Instant::now() < stop {
                let (code, _) = get(&web, &ingress, "/sleep?ms=300").await;
                *codes.entry(code).or_default() += 1;
            }
            codes
        }
    }));
    let watch = async {
        let mut most = 0;
        while Instant::now() < stop {
            if let Some(p) = pods(&client).await {
                most = most.max(p.iter().filter(|(_, _, ready)| *ready).count());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        most
    };
    let (codes, most) = tokio::join!(load, watch);
    let mut total: HashMap<u16, usize> = HashMap::new();
    for c in codes {
        for (code, n) in c {
            *total.entry(code).or_default() += n;
        }
    }
    assert_eq!(
        total.keys().copied().collect::<Vec<_>>(),
        [200],
        "{total:?}\n{}",
        cp.log_tail()
    );
    assert!(
        (3..=6).contains(&most),
        "8 requests in flight at 2 per pod should run about 4 ready pods, saw at most {most}\n{}",
        cp.log_tail()
    );
    report_figure(&format!(
        "serverless: step load of 8 in flight at concurrency 2 ran up to {most} ready pods, {} requests, none failed",
        total[&200]
    ));
    wait_for_pods(&client, "back to zero after the load", |n| n == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_activation_queue_requests_get_503_and_the_rest_never_wait_past_timeout() {
    let mut cp = ControlPlane::start(1, &[]).await;
    cp.start_node_with("n1", &["--activation-queue", "3"]).await;
    let client = cp.client();
    // No node has zone=b: the pod the autoscaler asks for never runs.
    let _app = apply(
        &cp,
        "timeout = \"2s\"\nnode_selector = { zone = \"b\" }\n[deployment.autoscale]\nmin = 0\nmax = 2\nconcurrency = 1\nidle = \"1s\"\nwindow = \"5s\"\npanic_window = \"1s\"",
    );
    eventually("a pending pod, then zero after idle", SLOW, || async {
        let st = status(&client).await;
        (st["autoscale"]["desired"] == 0).then_some(())
    })
    .await;
    let ingress = cp.nodes[0].ingress.clone();
    let web = http();
    let answers = futures::future::join_all((0..6).map(|_| {
        let (web, ingress) = (web.clone(), ingress.clone());
        async move {
            let r = web
                .get(format!("http://{ingress}/"))
                .header("host", HOST)
                .send()
                .await
                .expect("an answer, not a hang");
            let retry = r.headers().get("retry-after").is_some();
            (
                r.status().as_u16(),
                retry,
                r.text().await.unwrap_or_default(),
            )
        }
    }))
    .await;
    let busy = answers
        .iter()
        .filter(|(c, retry, _)| *c == 503 && *retry)
        .count();
    let timed_out = answers.iter().filter(|(c, _, _)| *c == 504).count();
    assert_eq!((busy, timed_out), (3, 3), "{answers:?}");
    assert!(
        answers
            .iter()
            .any(|(_, _, body)| body.contains("had no ready pod within its timeout")),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_pods_on_every_node_and_fail_over_when_one_dies() {
    let mut cp = cluster().await;
    let client = cp.client();
    let _app = apply(&cp, "replicas = 4\nnode_selector = { zone = \"a\" }");
    eventually("4 ready pods on n1 and n2", SLOW, || async {
        let p = pods(&client).await?;
        let ready = p.iter().filter(|(_, _, r)| *r).count();
        let on = |n: &str| {
            p.iter()
                .filter(|(_, node, _)| node.as_deref() == Some(n))
                .count()
        };
        (ready == 4 && on("n1") == 2 && on("n2") == 2).then_some(())
    })
    .await;
    let web = http();
    // 32 clients through n1's ingress, then through n3's (which has no pod).
    for entry in [0, 2] {
        let ingress = cp.nodes[entry].ingress.clone();
        let answers = futures::future::join_all((0..32).map(|_| {
            let (web, ingress) = (web.clone(), ingress.clone());
            async move {
                let mut seen = Vec::new();
                for _ in 0..8 {
                    seen.push(get(&web, &ingress, "/sleep?ms=50").await);
                }
                seen
            }
        }))
        .await;
        let mut by_node: HashMap<String, usize> = HashMap::new();
        for (code, body) in answers.into_iter().flatten() {
            assert_eq!(code, 200, "{body}");
            let node = body.split("node=").nth(1).unwrap_or("").trim().to_string();
            *by_node.entry(node).or_default() += 1;
        }
        let total: usize = by_node.values().sum();
        for node in ["n1", "n2"] {
            let served = by_node.get(node).copied().unwrap_or(0);
            assert!(
                served * 3 >= total,
                "through {}: {node} served {served} of {total}: {by_node:?}",
                cp.nodes[entry].name
            );
        }
        report_figure(&format!(
            "serverless: 256 requests by 32 clients through {}'s ingress: {by_node:?}",
            cp.nodes[entry].name
        ));
    }
    // n2 dies; its endpoints stay listed until its lease lapses, and requests
    // that would go there move on to n1's pods.
    cp.kill_node(1);
    let ingress = cp.nodes[0].ingress.clone();
    let mut failed = 0;
    for _ in 0..100 {
        let (code, _) = get(&web, &ingress, "/").await;
        failed += usize::from(code != 200);
    }
    assert_eq!(
        failed,
        0,
        "requests failed after n2 died\n{}",
        cp.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_stream_through_two_proxies_both_ways() {
    let cp = cluster().await;
    let client = cp.client();
    // The pod runs on n1 or n2; requests go in at n3, which forwards.
    let _app = apply(&cp, "replicas = 1\nnode_selector = { zone = \"a\" }");
    eventually("a ready pod", SLOW, || async {
        let p = pods(&client).await?;
        p.iter().any(|(_, _, ready)| *ready).then_some(())
    })
    .await;
    let web = http();
    let entry = cp.nodes[2].ingress.clone();
    let (code, body) = get(&web, &entry, "/").await;
    assert_eq!(code, 200, "{body}");
    // What the component sees after two proxies, and the id the client gets back.
    let answer = web
        .get(format!("http://{entry}/headers"))
        .header("host", HOST)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("headers answered");
    assert_eq!(answer.headers()["x-request-id"], "trace-me-42");
    let seen = answer.text().await.unwrap_or_default();
    for line in [
        "x-request-id: trace-me-42",
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-host: function.local",
        "x-forwarded-proto: http",
    ] {
        assert!(seen.lines().any(|l| l == line), "{line:?} not in:\n{seen}");
    }
    assert!(
        !seen.contains("x-reef-"),
        "internal headers reached the component:\n{seen}"
    );
    let (_, body) = get(&web, &entry, "/headers").await;
    assert!(
        body.lines()
            .any(|l| l.starts_with("x-request-id: ") && l.len() == "x-request-id: ".len() + 32),
        "a request id is made when the client sends none:\n{body}"
    );
    let target = if body.contains("node=n1") { 0 } else { 1 };
    let pids = [
        cp.node_pid(2).expect("n3"),
        cp.node_pid(target).expect("pod's node"),
    ];
    let before: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();

    const TOTAL: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    let chunks = futures::stream::iter(
        (0..TOTAL / CHUNK)
            .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; CHUNK]))),
    );
    let response = web
        .post(format!("http://{entry}/echo"))
        .header("host", HOST)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("echo answered");
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    let mut peak: Vec<u64> = before.clone();
    let mut mismatch = None;
    use futures::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the answer streams to its end");
        for (offset, byte) in chunk.iter().enumerate() {
            let at = received + offset;
            if *byte != ((at / CHUNK) % 251) as u8 && mismatch.is_none() {
                mismatch = Some(at);
            }
        }
        received += chunk.len();
        for (i, &pid) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_kib(pid));
        }
    }
    assert_eq!(received, TOTAL);
    assert_eq!(mismatch, None, "the echo differs from what was sent");
    let growth: Vec<u64> = peak
        .iter()
        .zip(&before)
        .map(|(p, b)| p.saturating_sub(*b))
        .collect();
    report_figure(&format!(
        "serverless: 50 MiB up and back through two proxies: RSS grew {} KiB (entry node) and {} KiB (pod's node)",
        growth[0], growth[1]
    ));
    for (what, grew) in ["entry node", "pod's node"].iter().zip(&growth) {
        assert!(
            *grew < 20 << 10,
            "the {what}'s RSS grew by {grew} KiB while 50 MiB streamed through it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_calls_its_tenants_services_by_name_and_no_other_tenants() {
    let cp = cluster().await;
    let client = cp.client();
    let deployment = |name: &str, namespace: &str, extra: &str| {
        format!(
            "[[deployment]]\nname = \"{name}\"\nnamespace = \"{namespace}\"\nlabels = {{ app = \"{name}\" }}\n\
             component = \"function.wasm\"\nmemory = \"64Mi\"\n{extra}\n\n\
             [[service]]\nname = \"{name}\"\nnamespace = \"{namespace}\"\nselector = {{ app = \"{name}\" }}\nhost = \"{name}.example\"\n\n"
        )
    };
    let _tenant = apply_text(
        &cp,
        "[[tenant]]\nname = \"other\"\ncpu = \"4\"\nmemory = \"1Gi\"\npods = 10\n",
    );
    let manifest = format!(
        "{}{}{}",
        // It even lists the other tenant's host: that host goes out as egress,
        // never to the other tenant's pods inside the cluster.
        deployment("caller", "default", "replicas = 1\noutbound = [\"secret.example\"]"),
        deployment(
            "backend",
            "default",
            "[deployment.autoscale]\nmin = 0\nmax = 2\nidle = \"1s\"\nwindow = \"5s\"\npanic_window = \"1s\""
        ),
        deployment("secret", "other", "replicas = 1"),
    );
    let _app = apply_text(&cp, &manifest);
    eventually("the backend at zero, the others ready", SLOW, || async {
        let backend = client
            .get(Kind::Deployment, Some("default"), "backend")
            .await
            .ok()?;
        let secret = client
            .get(Kind::Deployment, Some("other"), "secret")
            .await
            .ok()?;
        let caller = client
            .get(Kind::Deployment, Some("default"), "caller")
            .await
            .ok()?;
        (backend.status["autoscale"]["desired"] == 0
            && backend.status["replicas"] == 0
            && secret.status["ready_replicas"] == 1
            && caller.status["ready_replicas"] == 1)
            .then_some(())
    })
    .await;
    let web = http();
    let ingress = cp.nodes[2].ingress.clone();
    let call = |url: &'static str| {
        let (web, ingress) = (web.clone(), ingress.clone());
        async move {
            let r = web
                .get(format!("http://{ingress}/call?url={url}"))
                .header("host", "caller.example")
                .send()
                .await
                .expect("caller answered");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // By name, at zero: the call wakes the backend and gets its answer.
    let (code, body) = call("http://backend.default.svc/").await;
    assert_eq!(code, 200, "{body}\n{}", cp.log_tail());
    assert!(
        body.contains("answered 200: function pod=backend-"),
        "{body}"
    );
    // By its public host, the same tenant's Service needs no outbound entry.
    let (code, body) = call("http://backend.example/").await;
    assert_eq!(code, 200, "{body}");
    // Another tenant's Service: not by name, and not by a host the caller does not list.
    for url in ["http://secret.other.svc/", "http://secret.example/"] {
        let (code, body) = call(url).await;
        assert_eq!(code, 502, "{url}: {body}");
        assert!(body.contains("failed"), "{url}: {body}");
        assert!(!body.contains("pod=secret-"), "{url}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_are_taken_by_the_leader_and_bounded() {
    let cp = ControlPlane::start(3, &[]).await;
    let leader = cp.leader().await;
    let web = http();
    let put = |member: usize, body: serde_json::Value| {
        let (web, url, token) = (web.clone(), cp.members[member].url(), cp.admin_token());
        async move {
            let r = web
                .put(format!("{url}/api/v1/nodes/n1/load"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("answer");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let report = serde_json::json!({"deployments": [
        {"namespace": "default", "deployment": "f", "in_flight": 3, "requests": 10}
    ]});
    assert_eq!(put(leader, report.clone()).await.0, 204);
    // A follower sends the node's client on to the next member.
    let follower = (leader + 1) % 3;
    let (code, body) = put(follower, report).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("leader"), "{body}");
    // Bounded: unknown fields and oversized reports are refused with the field named.
    let (code, body) = put(
        leader,
        serde_json::json!({"deployments": [{"namespace": "a"}]}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("deployment"), "{body}");
    let many: Vec<_> = (0..10_001)
        .map(|i| serde_json::json!({"namespace": "a", "deployment": format!("d{i}")}))
        .collect();
    let (code, body) = put(leader, serde_json::json!({"deployments": many})).await;
    assert_eq!(code, 422, "{body}");
}
