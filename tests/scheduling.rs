//! Scheduling and controllers across several nodes: resource-aware spread,
//! unschedulable pods and their events, cross-node routing, lost nodes,
//! zero-downtime rolling updates and drains, stuck rollouts, scaling.
//! One control-plane member and several `reef node` processes.

mod common;

use common::control_plane::ControlPlane;
use common::*;
use reef_api::{Kind, Pod, PodSpec, PodStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SLOW: Duration = Duration::from_secs(120);
const SMALL_NODE: &[&str] = &["--cpu", "1000m", "--memory", "512Mi"];

fn deployment(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "[[deployment]]\nname = \"{name}\"\nlabels = {{ app = \"{name}\" }}\nreplicas = {replicas}\ncomponent = \"hello.wasm\"\n{extra}\n\n\
         [[service]]\nname = \"{name}\"\nselector = {{ app = \"{name}\" }}\nhost = \"{name}.local\"\n"
    )
}

async fn pods(cp: &ControlPlane) -> Vec<Pod> {
    let list = cp
        .client()
        .list(Kind::Pod, Some("default"), &[])
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .map(|raw| raw.typed::<PodSpec, PodStatus>().expect("pod"))
        .collect()
}

/// Waits until exactly `n` pods are Running and ready (and no others exist).
async fn ready_pods(cp: &ControlPlane, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} ready pods"), SLOW, || async {
        let pods = pods(cp).await;
        (pods.len() == n && pods.iter().all(|p| p.status.ready)).then_some(pods)
    })
    .await
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in pods {
        *counts
            .entry(p.spec.node.clone().unwrap_or_default())
            .or_default() += 1;
    }
    counts
}

fn apply(cp: &ControlPlane, text: &str) -> tempfile::TempDir {
    let (dir, path) = manifest_dir(text);
    let out = cp.reef(&["apply", "-f", path_str(&path)]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

async fn events(cp: &ControlPlane) -> Vec<reef_api::Event> {
    let list = cp
        .client()
        .list(Kind::Event, Some("default"), &[])
        .await
        .expect("events");
    list.items
        .into_iter()
        .filter_map(|raw| raw.typed().ok())
        .collect()
}

/// A closed loop of requests to `host` through one node's ingress.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    bodies: Arc<Mutex<BTreeSet<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` closed-loop clients once `ingress` serves `host`: a
    /// pod is ready in the API a moment before the entry node's routes hear
    /// of it, and a 503 from that moment is not a failure of what is tested.
    async fn start(ingress: &str, host: &str, workers: usize) -> Load {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http");
        common::functions::until_served(&http, ingress, host).await;
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicUsize::new(0)),
            bodies: Arc::new(Mutex::new(BTreeSet::new())),
            failures: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
        };
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed, bodies, failures) = (
                    load.stop.clone(),
                    load.ok.clone(),
                    load.failed.clone(),
                    load.bodies.clone(),
                    load.failures.clone(),
                );
                let (http, url, host) =
                    (http.clone(), format!("http://{ingress}/"), host.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match http.get(&url).header("host", &host).send().await {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if let Ok(body) = r.text().await {
                                    bodies.lock().expect("lock").insert(body);
                                }
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let why = match other {
                                    Ok(r) => format!(
                                        "{} {}",
                                        r.status(),
                                        r.text().await.unwrap_or_default()
                                    ),
                                    Err(e) => e.to_string(),
                                };
                                failures.lock().expect("lock").push(why);
                            }
                        }
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    async fn wait_ok(&self, n: usize) {
        let base = self.ok.load(Ordering::Relaxed);
        eventually(&format!("{n} more successful requests"), SLOW, || {
            let now = self.ok.load(Ordering::Relaxed);
            async move { (now >= base + n).then_some(()) }
        })
        .await;
    }

    /// Stops the loop; returns (ok, failed, failure reasons).
    async fn stop(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().expect("lock").clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spread_fills_equal_nodes_evenly_within_allocatable() {
    let mut cp = ControlPlane::start(1, &[]).await;
    for name in ["a", "b", "c"] {
        cp.start_node_with(name, SMALL_NODE).await;
    }
    let _dir = apply(
        &cp,
        &deployment("spread", 12, "cpu = \"200m\"\nmemory = \"64Mi\""),
    );
    let pods = ready_pods(&cp, 12).await;
    let counts = per_node(&pods);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![4, 4, 4],
        "{counts:?}"
    );
    // 4 × 200m = 800m ≤ 1000m and 4 × 64Mi = 256Mi ≤ 512Mi on every node.
    for (node, n) in &counts {
        assert!(
            n * 200 <= 1000 && n * 64 <= 512,
            "node {node} is over its allocatable"
        );
    }
    // Every decision is an event, shown by describe.
    let pod = &pods[0].metadata.name;
    let out = cp.reef(&["describe", "pod", pod]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Scheduled") && text.contains("bound to node"),
        "{text}"
    );
    eventually("a Started event", SLOW, || async {
        let out = cp.reef(&["describe", "pod", pod]);
        String::from_utf8_lossy(&out.stdout)
            .contains("Started")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_too_big_for_every_node_waits_until_one_fits() {
    let mut cp = ControlPlane::start(1, &[]).await;
    for name in ["a", "b", "c"] {
        cp.start_node_with(name, SMALL_NODE).await;
    }
    let _dir = apply(&cp, &deployment("big", 1, "memory = \"1Gi\""));
    let event = eventually("a FailedScheduling event", SLOW, || async {
        events(&cp)
            .await
            .into_iter()
            .find(|e| e.spec.reason == "FailedScheduling")
    })
    .await;
    assert_eq!(event.spec.message, "0/3 nodes fit: 3 insufficient memory");
    let pending = pods(&cp).await;
    assert_eq!(pending.len(), 1);
    assert!(pending[0].spec.node.is_none(), "the pod must stay Pending");
    // Its phase is there for clients before any node has reported one.
    let out = cp.reef(&["get", "pods", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed["items"][0]["status"]["phase"], "Pending", "{listed}");

    cp.start_node_with("huge", &["--cpu", "2000m", "--memory", "2Gi"])
        .await;
    let pods = ready_pods(&cp, 1).await;
    assert_eq!(pods[0].spec.node.as_deref(), Some("huge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_nodes_ingress_reaches_a_pod_on_another_node() {
    let mut cp = ControlPlane::start(1, &[]).await;
    let a = cp.start_node_with("a", &["--labels", "zone=a"]).await;
    let b = cp.start_node_with("b", &["--labels", "zone=b"]).await;
    let _dir = apply(
        &cp,
        &deployment(
            "pinned",
            1,
            "node_selector = { zone = \"b\" }\nenv = { GREETING = \"from-b\" }",
        ),
    );
    let pods = ready_pods(&cp, 1).await;
    assert_eq!(pods[0].spec.node.as_deref(), Some("b"));
    let http = reqwest::Client::new();
    for node in [a, b] {
        let url = format!("http://{}/hi", cp.nodes[node].ingress);
        let body = eventually(
            &format!("node {node}'s ingress to answer"),
            SLOW,
            || async {
                let r = http
                    .get(&url)
                    .header("host", "pinned.local")
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                r.text().await.ok()
            },
        )
        .await;
        assert!(body.contains("from-b") && body.contains("/hi"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_is_replaced_and_requests_recover() {
    let mut cp = ControlPlane::start(1, &["--node-grace", "3s"]).await;
    for name in ["a", "b", "c"] {
        cp.start_node_with(name, &[]).await;
    }
    let _dir = apply(&cp, &deployment("web", 3, ""));
    let placed = ready_pods(&cp, 3).await;
    assert_eq!(per_node(&placed).len(), 3, "one replica per node");
    let load = Load::start(&cp.nodes[0].ingress, "web.local", 2).await;
    load.wait_ok(20).await;

    let killed = Instant::now();
    cp.kill_node(2);
    // Recovered: three ready replicas, none on the lost node, and requests flowing.
    eventually("replicas to run on the surviving nodes", SLOW, || async {
        let pods = pods(&cp).await;
        let ok = pods.len() == 3
            && pods
                .iter()
                .all(|p| p.status.ready && p.spec.node.as_deref() != Some("c"));
        ok.then_some(())
    })
    .await;
    load.wait_ok(50).await;
    let recovery = killed.elapsed();
    let (ok, failed, failures) = load.stop().await;
    report_figure(&format!(
        "kill -9 of node c → full recovery in {recovery:?} (grace 3 s); {ok} requests ok, {failed} failed"
    ));
    assert!(ok > 0);
    let nodes = cp.reef(&["get", "nodes"]);
    let table = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("c ") && l.contains("NotReady")),
        "{table}"
    );
    let reasons: BTreeSet<String> = events(&cp)
        .await
        .into_iter()
        .map(|e| e.spec.reason)
        .collect();
    assert!(reasons.contains("Evicted"), "{reasons:?}");
    if failed > 0 {
        println!("failures while node c was being lost: {failures:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_from_silence_stops_the_pods_given_away() {
    let mut cp = ControlPlane::start(1, &["--node-grace", "3s"]).await;
    cp.start_node_with("a", &[]).await;
    let b = cp.start_node_with("b", &[]).await;
    let _dir = apply(&cp, &deployment("web", 2, ""));
    let before = ready_pods(&cp, 2).await;
    let on_b: Vec<String> = before
        .iter()
        .filter(|p| p.spec.node.as_deref() == Some("b"))
        .map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(on_b.len(), 1, "spread puts one replica on b");

    cp.pause_node(b);
    eventually("b's replica to be replaced on a", SLOW, || async {
        let pods = pods(&cp).await;
        let ok = pods.len() == 2
            && pods
                .iter()
                .all(|p| p.status.ready && p.spec.node.as_deref() == Some("a"));
        ok.then_some(())
    })
    .await;
    cp.resume_node(b);
    // The returning agent learns its pod is gone and stops it.
    eventually("node b to stop the pod it no longer has", SLOW, || async {
        events(&cp).await.into_iter().find(|e| {
            e.spec.reason == "Killed"
                && e.spec.involved.name == on_b[0]
                && e.spec.message.contains("node b")
        })
    })
    .await;
    eventually("node b to be Ready again", SLOW, || async {
        let out = cp.reef(&["get", "nodes"]);
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        table
            .lines()
            .any(|l| l.starts_with("b ") && l.contains(" Ready"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_under_load_fails_no_request() {
    let mut cp = ControlPlane::start(1, &[]).await;
    for name in ["a", "b"] {
        cp.start_node_with(name, &[]).await;
    }
    let _dir = apply(&cp, &deployment("roll", 4, "env = { GREETING = \"v1\" }"));
    let old: BTreeSet<String> = ready_pods(&cp, 4)
        .await
        .into_iter()
        .map(|p| p.metadata.name)
        .collect();
    let load = Load::start(&cp.nodes[0].ingress, "roll.local", 4).await;
    load.wait_ok(50).await;

    let _dir2 = apply(&cp, &deployment("roll", 4, "env = { GREETING = \"v2\" }"));
    let out = cp.reef(&["rollout", "status", "deployment", "roll"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = ready_pods(&cp, 4).await;
    assert!(
        new.iter().all(|p| !old.contains(&p.metadata.name)),
        "all pods replaced"
    );
    load.wait_ok(50).await;
    let bodies = load.bodies.clone();
    let (ok, failed, failures) = load.stop().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rollout: {failures:?}",
        ok + failed
    );
    let bodies = bodies.lock().expect("lock");
    assert!(
        bodies.iter().any(|b| b.contains("v1")) && bodies.iter().any(|b| b.contains("v2")),
        "{bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_moves_every_pod_off_a_node_without_failed_requests() {
    let mut cp = ControlPlane::start(1, &[]).await;
    for name in ["a", "b", "c"] {
        cp.start_node_with(name, &[]).await;
    }
    let _dir = apply(&cp, &deployment("web", 3, ""));
    ready_pods(&cp, 3).await;
    let load = Load::start(&cp.nodes[0].ingress, "web.local", 4).await;
    load.wait_ok(50).await;

    let out = cp.reef(&["drain", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node/b drained"));
    let pods = ready_pods(&cp, 3).await;
    assert!(
        pods.iter().all(|p| p.spec.node.as_deref() != Some("b")),
        "{:?}",
        per_node(&pods)
    );
    load.wait_ok(50).await;
    let (ok, failed, failures) = load.stop().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the drain: {failures:?}",
        ok + failed
    );
    let nodes = String::from_utf8_lossy(&cp.reef(&["get", "nodes"]).stdout).to_string();
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("b ") && l.contains("SchedulingDisabled")),
        "{nodes}"
    );

    let out = cp.reef(&["uncordon", "b"]);
    assert!(out.status.success());
    let out = cp.reef(&["scale", "deployment", "web", "--replicas", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = ready_pods(&cp, 4).await;
    assert!(
        pods.iter().any(|p| p.spec.node.as_deref() == Some("b")),
        "b takes pods again: {:?}",
        per_node(&pods)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_whose_pods_cannot_run_stops_and_says_why() {
    let mut cp = ControlPlane::start(1, &[]).await;
    cp.start_node_with("a", &[]).await;
    let strategy =
        "env = { GREETING = \"good\" }\n[deployment.strategy]\nprogress_deadline = \"3s\"";
    let _dir = apply(&cp, &deployment("web", 2, strategy));
    ready_pods(&cp, 2).await;

    // A new template whose component is not a wasm component at all.
    let (dir, path) =
        manifest_dir(&deployment("web", 2, strategy).replace("hello.wasm", "bad.wasm"));
    std::fs::write(dir.path().join("bad.wasm"), b"this is not wasm").expect("write");
    let out = cp.reef(&["apply", "-f", path_str(&path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cp.reef(&["rollout", "status", "deployment", "web", "--timeout", "90s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rollout stuck") && stderr.contains("cannot run"),
        "{stderr}"
    );
    // The old pods keep serving.
    let body = eventually("the old version to answer", SLOW, || async {
        let r = reqwest::Client::new()
            .get(format!("http://{}/", cp.nodes[0].ingress))
            .header("host", "web.local")
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.text().await.ok()
    })
    .await;
    assert!(body.contains("good"), "{body}");
    let ready_old = pods(&cp).await.iter().filter(|p| p.status.ready).count();
    assert_eq!(ready_old, 2, "both old pods still ready");
}
