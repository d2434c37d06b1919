//! Routing between nodes end to end, with the `function` example: balancing
//! across nodes and failover, bodies streaming through two proxies, and
//! components calling their tenant's Services inside the cluster.

mod common;

use common::functions::*;
use common::{eventually, report_figure, rss_kib};
use reef_api::Kind;
use std::collections::HashMap;

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
        until_served(&web, &ingress, HOST).await;
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
    until_served(&web, &entry, HOST).await;
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
    until_served(&web, &ingress, "caller.example").await;
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
