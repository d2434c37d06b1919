//! Serverless functions end to end: one control-plane member and three
//! `reef node` processes, the `function` example behind a Service. Scale to
//! zero and back, request-driven scale-up and down, the activation queue's
//! bound, and where load reports go.

mod common;

use common::control_plane::ControlPlane;
use common::functions::*;
use common::{eventually, report_figure};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// A pod removed by a scale-down takes no new requests and finishes the ones
/// it holds: 16 clients keep slow requests in flight over two pods while the
/// deployment is scaled to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_lets_the_removed_pod_finish_its_requests() {
    let cp = cluster().await;
    let client = cp.client();
    let _app = apply(&cp, "replicas = 2");
    eventually("two ready pods", SLOW, || async {
        let p = pods(&client).await?;
        (p.len() == 2 && p.iter().all(|(_, _, ready)| *ready)).then_some(())
    })
    .await;
    let ingress = cp.nodes[0].ingress.clone();
    let web = http();
    until_served(&web, &ingress, HOST).await;

    // Each answer: status, the pod that served it, and when it ended.
    type Answers = std::sync::Mutex<Vec<(u16, String, Instant)>>;
    let answers: std::sync::Arc<Answers> = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (web, ingress) = (web.clone(), ingress.clone());
            let (answers, stop) = (answers.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (code, body) = get(&web, &ingress, "/sleep?ms=1500").await;
                    let pod = body
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("pod="))
                        .unwrap_or(&body)
                        .to_string();
                    let mut all = answers.lock().unwrap_or_else(|e| e.into_inner());
                    all.push((code, pod, Instant::now()));
                }
            })
        })
        .collect();
    let served_by = |answers: &Answers| {
        let all = answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut pods: Vec<String> = all.iter().map(|(_, pod, _)| pod.clone()).collect();
        pods.sort();
        pods.dedup();
        pods
    };
    // Both pods have answered, so the load is spread and each holds requests.
    eventually("both pods serving", SLOW, || async {
        (served_by(&answers).len() == 2).then_some(())
    })
    .await;
    let scaled_at = Instant::now();
    let out = cp.reef(&["scale", "deployment", "function", "--replicas", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_pods(&client, "one pod left", |n| n == 1).await;
    let left = pods(&client).await.unwrap_or_default();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }

    let serving = served_by(&answers);
    let all = answers.lock().unwrap_or_else(|e| e.into_inner());
    let failed: Vec<_> = all.iter().filter(|(code, _, _)| *code != 200).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", cp.log_tail());
    let removed: Vec<&String> = serving
        .iter()
        .filter(|p| !left.iter().any(|(name, _, _)| name == *p))
        .collect();
    assert_eq!(removed.len(), 1, "served by {serving:?}, left {left:?}");
    let drained = all
        .iter()
        .filter(|(_, pod, ended)| pod == removed[0] && *ended > scaled_at)
        .count();
    assert!(
        drained > 0,
        "the removed pod {} answered requests it held when the scale-down began",
        removed[0]
    );
    report_figure(&format!(
        "serverless: scale-down from 2 to 1 under 16 clients: {} requests, none failed; the removed pod finished {drained} after the scale-down began",
        all.len()
    ));
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
