//! The node runtime end to end, through `reef up` and the CLI, one example each:
//! cpu-hog (deadline), mem-hog (memory budget), fetcher (outbound allow-list),
//! ticker (logs, scratch dir, run to completion), crashy (restarts, back-off,
//! previous logs), the compile cache across restarts, and draining on SIGTERM.

mod common;

use common::runtimes::Runtime;
use common::*;
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SLOW: Duration = Duration::from_secs(90);

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The pods whose name starts with `prefix`.
fn pods_named(cluster: &Cluster, prefix: &str) -> Vec<Value> {
    items(&cluster.get_json("pods"))
        .into_iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Waits for one pod of `deployment` that satisfies `ok`; returns it.
async fn pod_where(
    cluster: &Cluster,
    deployment: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("a {deployment} pod that is {what}"), SLOW, || {
        let found = pods_named(cluster, &format!("{deployment}-"))
            .into_iter()
            .find(|p| ok(p));
        async move { found }
    })
    .await
}

fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Events about one object, by reason.
fn events_for(cluster: &Cluster, object: &str) -> Vec<Value> {
    items(&cluster.get_json("events"))
        .into_iter()
        .filter(|e| e["spec"]["involved"]["name"] == object)
        .collect()
}

/// `reef up` flags: the runtime's, then `extra`.
fn flags(runtime: &Runtime, extra: &[&str]) -> Vec<String> {
    let mut flags = runtime.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

/// A loopback HTTP server answering `body` after `delay`; counts connections.
/// Upstreams listen on 127.0.0.2, which the clusters of these tests open to
/// pods with `--outbound-allow` (loopback is closed to guests by default, and
/// 127.0.0.1, where the node and API listen, always).
const UPSTREAM_IP: &str = "127.0.0.2";

async fn upstream(body: &'static str, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(format!("{UPSTREAM_IP}:0"))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (address, connections)
}

/// A cluster serving hello and the example `name`, both ready.
async fn beside_hello(name: &str) -> Cluster {
    let cluster = Cluster::start().await;
    cluster.reef_ok(&["apply", "-f", path_str(&example("hello"))]);
    cluster.reef_ok(&["apply", "-f", path_str(&example(name))]);
    cluster.until_status("hello.local", "/", 200, SLOW).await;
    pod_where(&cluster, name, "ready", |p| p["status"]["ready"] == true).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_request_gets_504_while_hello_keeps_answering() {
    let cluster = beside_hello("cpu-hog").await;

    // Two spinning requests: one per core.
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let ingress = cluster.ingress.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let response = reqwest::Client::new()
                    .get(format!("http://{ingress}/"))
                    .header("host", "cpu-hog.local")
                    .send()
                    .await
                    .expect("cpu-hog answers");
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                (status, body, started.elapsed())
            })
        })
        .collect();
    // Meanwhile hello keeps answering, and so does the spinning pod itself.
    let mut answered = 0;
    while hogs.iter().any(|h| !h.is_finished()) {
        let (status, body) = cluster
            .request("hello.local", "/during")
            .await
            .expect("hello answers");
        assert_eq!(status, 200, "hello failed during the spin: {body}");
        let (status, body) = cluster
            .request("cpu-hog.local", "/health")
            .await
            .expect("cpu-hog answers");
        assert_eq!(
            (status, body.as_str()),
            (200, "still here\n"),
            "the hog pod during its spin"
        );
        answered += 1;
    }
    for hog in hogs {
        let (status, body, took) = hog.await.expect("hog task");
        assert_eq!(status, 504, "{body}");
        assert!(body.contains("timeout"), "{body}");
        // The manifest's timeout is 2 s: not cut short, not left spinning.
        assert!(took >= Duration::from_secs(2), "answered after {took:?}");
    }
    assert!(
        answered >= 3,
        "hello and the hog answered only {answered} rounds during a 2 s spin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_stopped_at_its_budget_and_says_why() {
    let cluster = beside_hello("mem-hog").await;
    let pid = cluster.pid().expect("running");

    let hog = |n: usize| {
        let cluster = &cluster;
        async move {
            for _ in 0..n {
                let (status, body) = cluster
                    .request("mem-hog.local", "/")
                    .await
                    .expect("mem-hog answers");
                assert_eq!(status, 500, "{body}");
                assert!(body.contains("memory"), "{body}");
            }
        }
    };
    hog(5).await;
    let after_5 = rss_kib(pid);
    // The pod beside it keeps answering while the hog is trapped again and again.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beside = tokio::spawn({
        let (ingress, stop) = (cluster.ingress.clone(), stop.clone());
        async move {
            let http = reqwest::Client::new();
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let answer = http
                    .get(format!("http://{ingress}/beside"))
                    .header("host", "hello.local")
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                answers.push(answer.unwrap_or(0));
            }
            answers
        }
    });
    hog(20).await;
    stop.store(true, Ordering::SeqCst);
    let answers = beside.await.expect("hello loop");
    assert!(
        !answers.is_empty() && answers.iter().all(|s| *s == 200),
        "hello beside the hog: {answers:?}"
    );
    let after_25 = rss_kib(pid);
    // Each request grows to the 32 MiB budget and is trapped; what it held is
    // given back, so 20 more requests leave the node's RSS where it was.
    assert!(
        after_25 < after_5 + 64 * 1024,
        "RSS grew from {after_5} KiB to {after_25} KiB over 20 out-of-memory requests"
    );

    let pod = pod_where(&cluster, "mem-hog", "marked out of memory", |p| {
        p["status"]["reason"] == "OutOfMemory"
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    let error = pod["status"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("memory budget of 33554432 bytes"), "{pod}");
    let name = name_of(&pod);
    eventually("an OutOfMemory event", SLOW, || {
        let found = events_for(&cluster, &name)
            .into_iter()
            .any(|e| e["spec"]["reason"] == "OutOfMemory");
        async move { found.then_some(()) }
    })
    .await;
    let (status, _) = cluster
        .request("mem-hog.local", "/")
        .await
        .expect("mem-hog");
    assert_eq!(
        status, 500,
        "the hog pod keeps serving (and failing) after its traps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_reach_only_listed_hosts() {
    let (allowed, _) = upstream("hello from upstream", Duration::ZERO).await;
    let (forbidden, forbidden_connections) =
        upstream("you should not see this", Duration::ZERO).await;
    let cluster = Cluster::start_with(&["--outbound-allow", UPSTREAM_IP]).await;
    let port = |address: &str| address.rsplit(':').next().unwrap_or_default().to_string();
    // Listed by names and addresses that lead to the node and the API: refused
    // on the address, whatever the list says.
    let internal = [
        format!("localhost:{}", port(&cluster.api)),
        format!("localhost:{}", port(&cluster.ingress)),
        format!("localhost:{}", port(&cluster.listen)),
        cluster.api.clone(),
        "169.254.169.254:80".to_string(),
    ];
    let listed = internal
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (_dir, app) = example_dir("fetcher", |text| {
        text.replace("127.0.0.1:8099", &allowed)
            .replace("127.0.0.1:8098", &forbidden)
            .replace(
                &format!("outbound = [\"{allowed}\"]"),
                &format!("outbound = [\"{allowed}\", {listed}]"),
            )
    });
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);

    let body = cluster
        .until_status("fetcher.local", "/allowed", 200, SLOW)
        .await;
    assert!(body.contains("200 hello from upstream"), "{body}");

    let (status, body) = cluster
        .request("fetcher.local", "/forbidden")
        .await
        .expect("answer");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        forbidden_connections.load(Ordering::SeqCst),
        0,
        "a refused request connected"
    );

    // Nor the node's own ports, nor the control plane: not listed...
    for target in [
        format!("http://{}/", cluster.ingress),
        format!("http://{}/_reef/logs/default/x", cluster.listen),
    ] {
        let (status, body) = cluster
            .request("fetcher.local", &format!("/fetch?url={target}"))
            .await
            .expect("answer");
        assert_eq!(status, 502, "{target}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{target}: {body}");
    }
    // ...nor listed, by a name that resolves there.
    for authority in &internal {
        let target = format!("http://{authority}/healthz");
        let (status, body) = cluster
            .request("fetcher.local", &format!("/fetch?url={target}"))
            .await
            .expect("answer");
        assert_eq!(status, 502, "{target}: {body}");
        assert!(body.contains("DestinationIpProhibited"), "{target}: {body}");
    }
}

/// Spawns `reef logs -f POD`; its lines arrive on the returned channel.
fn follow_logs(
    cluster: &Cluster,
    pod: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(REEF)
        .args(["logs", "-f", pod])
        .envs(cluster.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn reef logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn tick_of(line: &str) -> Option<u64> {
    line.rsplit_once("tick ")?.1.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticker_is_followed_live_and_its_scratch_dir_goes_with_it() {
    let cluster = Cluster::start().await;
    let (_dir, app) = example_dir("ticker", |text| text.replace("\"1000\"", "\"200\""));
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    let pod = pod_where(&cluster, "ticker", "running", |p| {
        p["status"]["phase"] == "Running"
    })
    .await;
    let name = name_of(&pod);

    let (mut child, lines) = follow_logs(&cluster, &name);
    let first = lines.recv_timeout(SLOW).expect("a first line");
    let first_tick = tick_of(&first).unwrap_or_else(|| panic!("not a tick: {first:?}"));
    assert!(first.starts_with("ticker: tick "), "{first}");
    // Lines keep coming while the follower runs: later ticks, in order.
    let mut last = first_tick;
    for _ in 0..3 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("another line");
        let tick = tick_of(&line).unwrap_or_else(|| panic!("not a tick: {line:?}"));
        assert_eq!(tick, last + 1, "{line}");
        last = tick;
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "reef logs -f ended early"
    );
    let _ = child.kill();
    let _ = child.wait();

    // Without -f: what is kept so far, then exit.
    let out = cluster.reef_ok(&["logs", &name]);
    assert!(out.contains(&format!("ticker: tick {last}")), "{out}");

    // The count lives in the pod's scratch dir, on the node's disk.
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let scratch = cluster
        .data_dir()
        .join("node/scratch/default")
        .join(format!("{name}_{uid}"));
    assert!(
        scratch.join("ticks").exists(),
        "{} has no ticks file",
        scratch.display()
    );
    cluster.reef_ok(&["delete", "deployment", "ticker"]);
    eventually("the scratch dir to go with the pod", SLOW, || {
        let gone = !scratch.exists();
        async move { gone.then_some(()) }
    })
    .await;
    let out = cluster.reef(&["logs", &name]);
    assert_eq!(out.status.code(), Some(1), "logs of a deleted pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_pods_run_to_completion_with_their_exit_code() {
    command_pods_run_to_completion(Runtime::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_pods_run_to_completion_under_containerd() {
    if let Some(runtime) = Runtime::containerd() {
        command_pods_run_to_completion(runtime).await;
    }
}

async fn command_pods_run_to_completion(runtime: Runtime) {
    let mut cluster = Cluster::start_with(&flags(&runtime, &[])).await;
    let (_ticker, ticker) = example_dir("ticker", |text| {
        runtime
            .manifest(&text)
            .replace(
                "INTERVAL_MS = \"1000\"",
                "INTERVAL_MS = \"100\", TICKS = \"3\"",
            )
            .replace(
                "world = \"command\"",
                "world = \"command\"\nrestart = \"never\"",
            )
    });
    let (_crashy, crashy) = example_dir("crashy", |text| {
        runtime
            .manifest(&text)
            .replace(
                "CRASH_AFTER_MS = \"3000\"",
                "CRASH_AFTER_MS = \"100\", EXIT_CODE = \"3\"",
            )
            .replace("restart = \"always\"", "restart = \"never\"")
    });
    cluster.reef_ok(&["apply", "-f", path_str(&ticker)]);
    cluster.reef_ok(&["apply", "-f", path_str(&crashy)]);

    let done = pod_where(&cluster, "ticker", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(done["status"]["last_exit_code"], 0, "{done}");
    assert_eq!(done["status"]["restarts"], 0, "{done}");
    assert_eq!(done["status"]["reason"], "Completed", "{done}");
    let out = cluster.reef_ok(&["logs", &name_of(&done)]);
    assert!(out.contains("tick 3") && !out.contains("tick 4"), "{out}");

    let failed = pod_where(&cluster, "crashy", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    })
    .await;
    assert_eq!(failed["status"]["last_exit_code"], 3, "{failed}");
    assert_eq!(failed["status"]["restarts"], 0, "{failed}");
    // Not replaced: a finished pod is the deployment's one replica.
    assert_eq!(pods_named(&cluster, "crashy-").len(), 1);
    let out = cluster.reef_ok(&["logs", &name_of(&failed)]);
    assert!(out.contains("exiting with code 3"), "{out}");

    // Following a finished pod prints what it wrote and ends.
    let out = cluster.reef_ok(&["logs", "-f", &name_of(&done)]);
    assert!(out.contains("tick 3"), "{out}");

    // A node restart runs neither again: they stay finished, logs and all.
    let started = |cluster: &Cluster, pod: &str| {
        events_for(cluster, pod)
            .iter()
            .find(|e| e["spec"]["reason"] == "Started")
            .map(|e| e["spec"]["count"].as_u64().unwrap_or(0))
    };
    let started_before = started(&cluster, &name_of(&done));
    cluster.kill9();
    cluster.launch().await;
    cluster.until_status("hello.local", "/", 404, SLOW).await;
    eventually("the node to be Ready again", SLOW, || {
        let nodes = items(&cluster.get_json("nodes"));
        let ready = nodes.iter().any(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        async move { ready.then_some(()) }
    })
    .await;
    // The agent has listed its pods once its logs answer again.
    let out = eventually("the finished pod's logs after the restart", SLOW, || {
        let out = cluster.reef(&["logs", &name_of(&done)]);
        async move {
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    })
    .await;
    assert!(out.contains("tick 3") && !out.contains("tick 4"), "{out}");
    for (pod, phase) in [(&done, "Succeeded"), (&failed, "Failed")] {
        let now = pods_named(&cluster, &name_of(pod));
        assert_eq!(now.len(), 1, "{now:?}");
        assert_eq!(now[0]["status"]["phase"], phase, "{}", now[0]);
    }
    assert_eq!(
        started(&cluster, &name_of(&done)),
        started_before,
        "the ticker started again"
    );
    // A finished pod holds no task.
    assert_eq!(runtime.tasks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_pod_restarts_with_growing_back_off() {
    crashing_pod_restarts(Runtime::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_pod_restarts_with_growing_back_off_under_containerd() {
    if let Some(runtime) = Runtime::containerd() {
        crashing_pod_restarts(runtime).await;
    }
}

async fn crashing_pod_restarts(runtime: Runtime) {
    let backoff = ["--backoff-base", "2s", "--backoff-max", "8s"];
    let cluster = Cluster::start_with(&flags(&runtime, &backoff)).await;
    let (_dir, app) = example_dir("crashy", |text| {
        runtime.manifest(&text).replace("\"3000\"", "\"300\"")
    });
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    let pod = pod_where(&cluster, "crashy", "bound", |p| {
        p["spec"]["node"] == "local"
    })
    .await;
    let name = name_of(&pod);
    let event_path = format!("/api/v1/namespaces/default/events/{name}.backoff");
    let pod_path = format!("/api/v1/namespaces/default/pods/{name}");

    // Every back-off the pod waits is the BackOff event's message in turn (one
    // event per pod and reason, as in Kubernetes: its message and count change).
    let mut seen: Vec<String> = Vec::new();
    let mut restarts: Vec<u64> = Vec::new();
    let mut backing_off = None;
    let deadline = Instant::now() + SLOW;
    loop {
        if let Some(event) = cluster.api_json(&event_path).await {
            let message = event["spec"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !message.is_empty() && seen.last() != Some(&message) {
                seen.push(message);
            }
        }
        if let Some(pod) = cluster.api_json(&pod_path).await {
            let r = pod["status"]["restarts"].as_u64().unwrap_or(0);
            if restarts.last() != Some(&r) {
                restarts.push(r);
            }
            if pod["status"]["reason"] == "CrashLoopBackOff" {
                backing_off = Some(pod);
            }
        }
        let waits: Vec<&str> = seen
            .iter()
            .filter_map(|m| m.strip_prefix("back-off ")?.split_whitespace().next())
            .collect();
        if waits.windows(3).any(|w| w == ["2s", "4s", "8s"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "back-offs of 2s, 4s, 8s; seen {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        restarts.windows(2).all(|w| w[0] < w[1]) && restarts.last().copied().unwrap_or(0) >= 2,
        "restart counts seen: {restarts:?}"
    );
    let waiting = backing_off.expect("the pod was seen in CrashLoopBackOff");
    assert_eq!(waiting["status"]["phase"], "Running", "{waiting}");
    assert_eq!(waiting["status"]["ready"], false, "{waiting}");
    assert_eq!(waiting["status"]["last_exit_code"], 1, "{waiting}");
    let error = waiting["status"]["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("trapped"), "{waiting}");
    let out = cluster.reef_ok(&["logs", "--previous", &name]);
    assert!(
        out.contains("panicked") && out.contains("giving up after 300 ms"),
        "{out}"
    );
    let described = cluster.reef_ok(&["describe", "pod", &name]);
    assert!(described.contains("BackOff"), "{described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_from_its_compile_cache_and_rebuilds_a_bad_entry() {
    let mut cluster = Cluster::start().await;
    cluster.reef_ok(&["apply", "-f", path_str(&example("hello"))]);
    cluster.until_status("hello.local", "/", 200, SLOW).await;
    let compiled_first = cluster.log().matches(": compiled component").count();
    assert!(
        compiled_first >= 1,
        "the first start compiles:\n{}",
        cluster.log_tail()
    );

    // Restart: pods come back from the cached artifact, nothing compiles.
    cluster.kill9();
    let before = cluster.log().len();
    cluster.launch().await;
    cluster
        .until_status("hello.local", "/again", 200, SLOW)
        .await;
    let relaunch = cluster.log()[before..].to_string();
    assert!(
        relaunch.contains("loaded compiled component from the cache"),
        "{relaunch}"
    );
    assert!(!relaunch.contains(": compiled component"), "{relaunch}");

    // A damaged artifact is noticed, discarded and rebuilt.
    cluster.kill9();
    let artifacts = cluster.data_dir().join("node/artifacts");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&artifacts)
        .expect("artifacts dir")
        .flatten()
    {
        let mut bytes = std::fs::read(entry.path()).expect("read artifact");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(entry.path(), bytes).expect("write artifact");
        damaged += 1;
    }
    assert!(damaged >= 1, "no artifact in {}", artifacts.display());
    let before = cluster.log().len();
    cluster.launch().await;
    cluster
        .until_status("hello.local", "/rebuilt", 200, SLOW)
        .await;
    let relaunch = cluster.log()[before..].to_string();
    assert!(
        relaunch.contains("discarding a bad compiled artifact"),
        "{relaunch}"
    );
    assert!(relaunch.contains(": compiled component"), "{relaunch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    let (slow, reached) = upstream("slow answer", Duration::from_millis(1500)).await;
    let mut cluster = Cluster::start_with(&["--outbound-allow", UPSTREAM_IP]).await;
    let (_dir, app) = example_dir("fetcher", |text| text.replace("127.0.0.1:8099", &slow));
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    cluster
        .until_status("fetcher.local", "/allowed", 200, SLOW)
        .await;

    let warmed = reached.load(Ordering::SeqCst);
    let ingress = cluster.ingress.clone();
    let in_flight = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .get(format!("http://{ingress}/allowed"))
            .header("host", "fetcher.local")
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    });
    // Once the guest's own request has reached upstream, it waits 1.5 s there.
    eventually("the request to reach upstream", SLOW, || {
        let arrived = reached.load(Ordering::SeqCst) > warmed;
        async move { arrived.then_some(()) }
    })
    .await;
    let exit = tokio::task::spawn_blocking(move || {
        let status = cluster.terminate();
        (status, cluster)
    });
    let (status, body) = in_flight
        .await
        .expect("task")
        .expect("the request in flight was answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("slow answer"), "{body}");
    let (exit, cluster) = exit.await.expect("terminate");
    assert!(
        exit.success(),
        "reef up exited with {exit}:\n{}",
        cluster.log_tail()
    );
    assert!(cluster.log().contains("draining"), "{}", cluster.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_binds_all_reach_the_node() {
    // The scheduler binds hundreds of pods per transaction; the node's watch may
    // be cut in the middle of one, and must not lose the rest of it.
    let cluster =
        Cluster::start_with(&["--pods", "1200", "--cpu", "100000m", "--memory", "64Gi"]).await;
    let (_dir, app) = manifest_dir(
        "[[deployment]]\nname = \"many\"\nreplicas = 1000\ncomponent = \"hello.wasm\"\ncpu = \"1m\"\nmemory = \"4Mi\"\n",
    );
    cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    eventually(
        "1000 pods running and ready",
        Duration::from_secs(300),
        || async {
            let pods = cluster.api_json("/api/v1/namespaces/default/pods").await?;
            let ready = items(&pods)
                .iter()
                .filter(|p| p["status"]["phase"] == "Running" && p["status"]["ready"] == true)
                .count();
            (ready == 1000).then_some(())
        },
    )
    .await;
}
