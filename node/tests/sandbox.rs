//! What a hostile guest can take of its node, against the real runtime and a
//! real guest (`tests/guests`): disk in its scratch directory, files outside
//! it, instances from the node's pool, instances held by a slow client, and
//! outbound connections to the node's own loopback by name.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use reef_node::runtime::{
    HandleError, HttpPod, NetworkPolicy, PodSettings, ScratchDir, ScratchQuota,
};

mod common;

use common::pods::{call, get, prepare, test_guest_wasm};

async fn guest_pod(settings: PodSettings) -> HttpPod {
    HttpPod::new(prepare(&test_guest_wasm()).await, settings)
}

async fn text(pod: &HttpPod, path: &str) -> String {
    let (status, body) = call(pod, get(path)).await.expect("answered");
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn the_scratch_quota_holds_whatever_the_guest_writes() {
    let root = tempfile::tempdir().expect("tempdir");
    let quota = ScratchQuota {
        bytes: 1 << 20,
        files: 16,
    };
    let scratch = ScratchDir::create(root.path().join("pod"), quota).expect("scratch");
    let pod = guest_pod(PodSettings {
        scratch: Some(scratch.clone()),
        ..PodSettings::default()
    })
    .await;
    let over = |(bytes, files): (u64, u64)| bytes > quota.bytes || files > quota.files;

    // Streamed writes (std's file writes) stop at the quota. (The guest's libc
    // reports a failed stream write as EIO, whatever the host says.)
    let answer = text(&pod, "/write?path=/tmp/big&bytes=10485760&chunk=65536").await;
    assert!(answer.contains("then:"), "{answer}");
    assert!(
        !over(scratch.usage()),
        "{:?} over {quota:?}",
        scratch.usage()
    );
    // Small writes one after another too.
    let answer = text(&pod, "/write?path=/tmp/small&bytes=2000000&chunk=100").await;
    assert!(answer.contains("then:"), "{answer}");
    assert!(!over(scratch.usage()), "{:?}", scratch.usage());
    // Seeking far out and writing: the hole is free, the data is not.
    let answer = text(
        &pod,
        "/write?path=/tmp/sparse&bytes=4194304&at=1099511627776",
    )
    .await;
    assert!(answer.contains("then:"), "{answer}");
    assert!(!over(scratch.usage()), "{:?}", scratch.usage());
    // Room comes back when the guest deletes.
    for file in ["/tmp/big", "/tmp/small", "/tmp/sparse"] {
        text(&pod, &format!("/remove?path={file}")).await;
    }
    let answer = text(&pod, "/write?path=/tmp/again&bytes=500000").await;
    assert_eq!(answer, "wrote 500000 bytes\n");
    // Files are counted too.
    let answer = text(&pod, "/files?count=100").await;
    assert!(
        answer.starts_with("created ") && answer.contains("then:"),
        "{answer}"
    );
    let made: u64 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(made < 16, "{answer}");
    assert!(!over(scratch.usage()), "{:?}", scratch.usage());
}

#[tokio::test]
async fn no_file_outside_the_scratch_dir_is_reachable() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = root.path().join("secret");
    std::fs::write(&outside, "not for guests").expect("write");
    let scratch =
        ScratchDir::create(root.path().join("pod"), ScratchQuota::default()).expect("scratch");
    let pod = guest_pod(PodSettings {
        scratch: Some(scratch),
        ..PodSettings::default()
    })
    .await;
    for path in [
        "/etc/passwd",
        "/tmp/../etc/passwd",
        "/tmp/../secret",
        "/tmp/../../../../etc/hostname",
        "../secret",
        &outside.display().to_string(),
        "/proc/self/environ",
    ] {
        let answer = text(&pod, &format!("/read?path={path}")).await;
        assert!(answer.starts_with("error:"), "{path}: {answer}");
    }
    assert!(text(&pod, "/write?path=/tmp/mine&bytes=10")
        .await
        .starts_with("wrote 10"));
    assert_eq!(text(&pod, "/read?path=/tmp/mine").await, "read 10 bytes\n");
}

#[tokio::test]
async fn one_pod_cannot_take_every_instance() {
    let greedy = guest_pod(PodSettings {
        max_instances: 2,
        ..PodSettings::default()
    })
    .await;
    let beside = guest_pod(PodSettings::default()).await;
    let mut slow = Vec::new();
    for running in 1..=2 {
        let pod = greedy.clone();
        slow.push(tokio::spawn(async move {
            call(&pod, get("/sleep?ms=3000")).await
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        while greedy.instances_in_use() < running {
            assert!(Instant::now() < deadline, "request {running} never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // With both running, a third request of the same pod is refused...
    let refused = match call(&greedy, get("/env")).await {
        Err(HandleError::Unavailable(why)) => why,
        other => panic!("the third request should be refused: {other:?}"),
    };
    assert!(refused.contains("2 requests in flight"), "{refused}");
    // ...while the pod beside it serves.
    assert_eq!(
        call(&beside, get("/env")).await.expect("beside").0,
        StatusCode::OK
    );
    for request in slow {
        assert_eq!(
            request.await.expect("task").expect("slept").0,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&greedy, get("/env")).await.expect("after").0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_holds_no_instance() {
    let pod = guest_pod(PodSettings {
        max_instances: 1,
        timeout: Duration::from_secs(2),
        ..PodSettings::default()
    })
    .await;
    // A client that sends a head and then nothing of its body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(tokio_stream_from(rx));
    let stalled = Request::post("/echo")
        .header("host", "test.local")
        .header("content-length", "1000")
        .body(body)
        .expect("request");
    let waiting = {
        let pod = pod.clone();
        tokio::spawn(async move { call(&pod, stalled).await })
    };
    // The one instance is free for others meanwhile.
    for _ in 0..3 {
        assert_eq!(
            call(&pod, get("/env")).await.expect("served").0,
            StatusCode::OK
        );
    }
    // And the stalled one ends at its deadline.
    assert!(matches!(
        waiting.await.expect("task"),
        Err(HandleError::Timeout)
    ));
    drop(tx);
}

/// A stream of the channel's items, for a body that arrives when we say.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A listener that counts the connections made to it.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port.to_string(), count)
}

#[tokio::test]
async fn a_listed_name_that_resolves_to_loopback_is_refused() {
    let (port, connections) = counting_listener().await;
    let listed: Vec<String> = ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]", "127.1"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect();
    let pod = guest_pod(PodSettings {
        outbound: listed.clone(),
        ..PodSettings::default()
    })
    .await;
    for authority in &listed {
        let (status, body) = call(&pod, get(&format!("/fetch?authority={authority}")))
            .await
            .expect("answered");
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{authority}: {body}");
        assert!(
            body.contains("DestinationIpProhibited") || body.contains("HttpRequestDenied"),
            "{authority}: {body}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a refused request connected"
    );
    // An operator may open loopback; the same request then goes through.
    let opened = guest_pod(PodSettings {
        outbound: listed,
        network: Arc::new(NetworkPolicy {
            allowed: vec!["127.0.0.0/8".parse().expect("cidr")],
            refused: vec![],
        }),
        ..PodSettings::default()
    })
    .await;
    let (status, body) = call(&opened, get(&format!("/fetch?authority=localhost:{port}")))
        .await
        .expect("answered");
    // The listener hangs up without answering: what matters is that it was reached.
    assert!(connections.load(Ordering::SeqCst) >= 1, "{status} {body}");
}
