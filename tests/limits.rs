//! Inputs from strangers are bounded: huge bodies, floods of half-open and
//! slow connections, malformed and out-of-range values. A real `reef up`,
//! spoken to over raw TCP where the client library would be too polite.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW: Duration = Duration::from_secs(90);

/// Reads an HTTP response's status line from `stream` (None if it closed first).
async fn status_of(stream: &mut tokio::io::ReadHalf<TcpStream>) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends a request declaring (or, chunked, streaming) a 100 MiB body; returns
/// the status and how many body bytes went out before the answer came.
async fn send_huge(address: &str, token: &str, path: &str, chunked: bool) -> (Option<u16>, u64) {
    const HUNDRED_MIB: u64 = 100 << 20;
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut read, mut write) = tokio::io::split(stream);
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {HUNDRED_MIB}")
    };
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.expect("head");
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        while counter.load(std::sync::atomic::Ordering::Relaxed) < HUNDRED_MIB {
            let written = if chunked {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                write.write_all(&framed).await
            } else {
                write.write_all(&chunk).await
            };
            if written.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let status = tokio::time::timeout(SLOW, status_of(&mut read))
        .await
        .ok()
        .flatten();
    let at = sent.load(std::sync::atomic::Ordering::Relaxed);
    writer.abort();
    (status, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_refused_without_being_read() {
    let cluster = Cluster::start().await;
    let token = cluster.admin_token();
    let digest = format!("sha256:{}", "a".repeat(64));
    for (path, chunked) in [
        ("/api/v1/namespaces/default/services/big", false),
        ("/api/v1/namespaces/default/services/big", true),
        (&*format!("/api/v1/blobs/{digest}"), false),
        (&*format!("/api/v1/blobs/{digest}"), true),
    ] {
        let (status, sent) = send_huge(&cluster.api, &token, path, chunked).await;
        assert_eq!(status, Some(413), "{path} chunked={chunked}");
        assert!(
            sent < 100 << 20,
            "{path} chunked={chunked}: the whole body was read ({sent} bytes)"
        );
        report_figure(&format!(
            "100 MiB body to {} ({}): 413 after {} MiB sent",
            path.split('/').nth(3).unwrap_or(path),
            if chunked { "chunked" } else { "declared" },
            sent >> 20
        ));
    }
    // The same member still serves.
    cluster.reef_ok(&["get", "services"]);
}

/// Opens `count` connections to `address` from a separate process that sends
/// nothing on them until its stdin closes. Returns once they are open.
fn hold_connections(address: &str, count: usize, send: &str) -> std::process::Child {
    let script = r#"
import socket, sys, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
host, port = sys.argv[1].rsplit(':', 1)
count, payload = int(sys.argv[2]), sys.argv[3].encode()
held = []
for _ in range(count):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((host, int(port)))
    except BlockingIOError:
        pass
    held.append(s)
if payload:
    for s in held:
        try:
            s.send(payload)
        except OSError:
            pass
print(len(held), flush=True)
sys.stdin.read()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, address, &count.to_string(), send])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (the connection flood runs in its own process)");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("flood ready");
    assert_eq!(
        line.trim(),
        count.to_string(),
        "flood opened its connections"
    );
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_silent_and_slow_connections_leave_the_api_working() {
    let cluster = Cluster::start_with(&["--header-timeout", "3s"]).await;
    // 20,000 connections that never send a byte, from two processes (each
    // process may hold fewer than 20,000 descriptors).
    let floods: Vec<_> = (0..2)
        .map(|_| hold_connections(&cluster.api, 10_000, ""))
        .collect();
    let started = Instant::now();
    let out = cluster.reef(&["get", "pods"]);
    assert!(
        out.status.success(),
        "reef get pods during the flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    report_figure(&format!(
        "reef get pods beside 20,000 silent connections: {} ms",
        started.elapsed().as_millis()
    ));
    // A slowloris: a request head that never ends is cut off.
    let mut slow = TcpStream::connect(&cluster.api).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("partial head");
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(SLOW, async {
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(
        closed.ok(),
        Some(true),
        "a request head that never ends is dropped"
    );
    // The ingress port holds to the same bounds.
    let flood = hold_connections(&cluster.ingress, 5_000, "GET / HTTP/1.1\r\nHost: x\r\n");
    let response = reqwest::Client::new()
        .get(format!("http://{}/", cluster.ingress))
        .header("host", "nothing.local")
        .send()
        .await
        .expect("ingress answers beside 5,000 slow heads");
    assert_eq!(response.status().as_u16(), 404);
    for mut child in floods.into_iter().chain([flood]) {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    cluster.reef_ok(&["get", "pods"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_out_of_range_input_gets_a_4xx_with_its_field() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", cluster.api);
    let token = cluster.admin_token();
    let digest = format!("sha256:{}", "0".repeat(64));
    let deployment = |template: Value, extra: Value| {
        let mut spec = json!({"template": template});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        json!({"kind": "Deployment", "metadata": {"name": "d", "namespace": "default"}, "spec": spec})
    };
    let template = |extra: Value| {
        let mut t = json!({"component": digest});
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
        }
        t
    };
    let many_labels: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("k{i}"), json!("v"))).collect();
    let huge_env: serde_json::Map<String, Value> = (0..10)
        .map(|i| (format!("E{i}"), json!("x".repeat(40_000))))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "replicas 10^12",
            deployment(
                template(json!({})),
                json!({"replicas": 1_000_000_000_000u64}),
            ),
            "spec.replicas",
        ),
        (
            "replicas over the cap",
            deployment(template(json!({})), json!({"replicas": 1_000_000})),
            "spec.replicas",
        ),
        (
            "negative replicas",
            deployment(template(json!({})), json!({"replicas": -1})),
            "spec.replicas",
        ),
        (
            "replicas as text",
            deployment(template(json!({})), json!({"replicas": "three"})),
            "spec.replicas",
        ),
        (
            "timeout of centuries",
            deployment(template(json!({"timeout": "300years"})), json!({})),
            "spec.template.timeout",
        ),
        (
            "timeout as a number",
            deployment(template(json!({"timeout": 1e300})), json!({})),
            "spec.template.timeout",
        ),
        (
            "cpu near u64::MAX",
            deployment(template(json!({"cpu": "18446744073709551615m"})), json!({})),
            "spec.template.cpu",
        ),
        (
            "cpu overflowing",
            deployment(template(json!({"cpu": "18446744073709551615"})), json!({})),
            "spec.template.cpu",
        ),
        (
            "memory past 4Gi",
            deployment(template(json!({"memory": "16Ei"})), json!({})),
            "spec.template.memory",
        ),
        (
            "env too large",
            deployment(template(json!({"env": huge_env})), json!({})),
            "spec.template",
        ),
        (
            "a bad env name",
            deployment(template(json!({"env": {"1X": "v"}})), json!({})),
            "spec.template.env.1X",
        ),
        (
            "surge over the cap",
            deployment(
                template(json!({})),
                json!({"strategy": {"max_surge": 4_000_000_000u64}}),
            ),
            "spec.strategy.max_surge",
        ),
        (
            "an unknown field",
            deployment(template(json!({"colour": "blue"})), json!({})),
            "spec.template.colour",
        ),
        (
            "a wrong type",
            deployment(template(json!({"args": "not-a-list"})), json!({})),
            "spec.template.args",
        ),
        (
            "autoscale max over the cap",
            deployment(
                template(json!({})),
                json!({"autoscale": {"max": 99_999_999}}),
            ),
            "spec.autoscale.max",
        ),
    ];
    let put = |body: Value| {
        http.put(format!("{base}/api/v1/namespaces/default/deployments/d"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    for (what, body, field) in cases {
        let response = put(body).await.expect("PUT");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status), "{what}: {status} {answer}");
        let named = answer["field"].as_str().unwrap_or_default();
        assert!(
            named.starts_with(field),
            "{what}: field {named:?}, wanted {field}: {answer}"
        );
    }
    let long_name = json!({"kind": "Deployment", "metadata": {"name": "x".repeat(47), "namespace": "default"},
                           "spec": {"template": {"component": digest}}});
    let response = http
        .put(format!(
            "{base}/api/v1/namespaces/default/deployments/{}",
            "x".repeat(47)
        ))
        .bearer_auth(&token)
        .json(&long_name)
        .send()
        .await
        .expect("PUT");
    assert_eq!(
        response.status().as_u16(),
        422,
        "its pods' names would not be DNS labels"
    );
    let labels = json!({"kind": "Service", "metadata": {"name": "s", "namespace": "default", "labels": many_labels},
                        "spec": {"selector": {"a": "b"}}});
    let response = http
        .put(format!("{base}/api/v1/namespaces/default/services/s"))
        .bearer_auth(&token)
        .json(&labels)
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status().as_u16(), 422);

    // Raw bodies: broken JSON, the wrong shape, an apply of too many objects.
    let too_many: Vec<Value> = (0..501)
        .map(|i| {
            json!({"kind": "Service", "metadata": {"name": format!("s{i}"), "namespace": "default"},
                        "spec": {"selector": {"a": "b"}}})
        })
        .collect();
    for (method, path, body, expected) in [
        (
            "PUT",
            "/api/v1/namespaces/default/services/s",
            "{\"kind\": ".to_string(),
            400,
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/services/s",
            "[1, 2, 3]".to_string(),
            400,
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/services/s",
            "\u{0}\u{1}binary".to_string(),
            400,
        ),
        ("POST", "/api/v1/apply", "{}".to_string(), 422),
        (
            "POST",
            "/api/v1/apply",
            serde_json::to_string(&too_many).expect("json"),
            413,
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/services/s/status",
            "{\"endpoints\": 7}".to_string(),
            422,
        ),
        (
            "POST",
            "/api/v1/tokens",
            "{\"tenant\": \"nobody\", \"role\": \"root\"}".to_string(),
            422,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/services?watch=1&since=banana",
            String::new(),
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/gadgets",
            String::new(),
            404,
        ),
        (
            "GET",
            "/api/v1/namespaces/NOT..VALID/services",
            String::new(),
            200,
        ),
    ] {
        let response = http
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        assert!(status < 500, "{method} {path}: {status}");
        if expected != 200 {
            assert_eq!(
                status,
                expected,
                "{method} {path}: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }

    // The CLI names the file, line and column of an out-of-range manifest value.
    let (_dir, path) = manifest_dir(
        "[[deployment]]\nname = \"d\"\nreplicas = 1000000000000\ncomponent = \"hello.wasm\"\n",
    );
    let out = cluster.reef(&["apply", "-f", path_str(&path)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("app.toml:3:"), "{stderr}");
    // Nothing above got through, and the server is whole.
    let listed = cluster.get_json("deployments");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    assert!(
        !cluster.log().contains("panicked"),
        "{}",
        cluster.log_tail()
    );
}

/// Opens a watch of Services over raw TCP with a small receive buffer and
/// returns the stream once the response head has arrived.
async fn open_watch(address: &str, token: &str) -> (TcpStream, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("recv buffer");
    let mut stream = socket
        .connect(address.parse().expect("address"))
        .await
        .expect("connect");
    let head = format!(
        "GET /api/v1/namespaces/default/services?watch=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("request");
    let (mut read, write) = tokio::io::split(stream);
    let status = status_of(&mut read).await.unwrap_or(0);
    (read.unsplit(write), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_capped_per_token_and_one_that_never_reads_is_cut_off() {
    let cluster = Cluster::start_with(&["--max-watches-per-token", "2"]).await;
    let token = cluster.admin_token();
    let (first, a) = open_watch(&cluster.api, &token).await;
    let (_second, b) = open_watch(&cluster.api, &token).await;
    let (_, c) = open_watch(&cluster.api, &token).await;
    assert_eq!((a, b, c), (200, 200, 429), "the third watch of one token");
    drop(first);
    // The closed stream gives its place back once the server notices.
    let mut stalled = eventually("a watch slot to free up", SLOW, || async {
        let (stream, status) = open_watch(&cluster.api, &token).await;
        (status == 200).then_some(stream)
    })
    .await;

    // `stalled` never reads while its Services change 3,000 times (8 KiB each,
    // more than its queues and socket buffers hold) and for longer than the
    // member waits for a client that takes nothing (10 s).
    let http = reqwest::Client::new();
    let writing = std::time::Instant::now();
    let labels: serde_json::Map<String, Value> = (0..60)
        .map(|i| (format!("l{i}"), json!("x".repeat(60))))
        .collect();
    let mut i = 0;
    while i < 3000 || writing.elapsed() < Duration::from_secs(15) {
        i += 1;
        let name = format!("churn-{}", i % 10);
        let body = json!({
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"selector": {"app": "churn"}, "path": format!("/{i}")},
        });
        let r = http
            .put(format!(
                "http://{}/api/v1/namespaces/default/services/{name}",
                cluster.api
            ))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("write");
        assert!(r.status().is_success(), "write {i}: {}", r.status());
    }
    // Reading now: what was buffered arrives, then the stream ends (it was
    // cut off) instead of delivering every change.
    let mut buffered = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut chunk)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => {
                buffered += n;
                // The chunked body's last chunk: the server ended the stream.
                if chunk[..n].ends_with(b"0\r\n\r\n") {
                    break true;
                }
            }
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "a watcher that never read is still served");
    assert!(
        buffered < i * 8 * 1024,
        "it was cut off before every change reached it ({buffered} bytes)"
    );
    // The member serves on, and the token's slots are free again.
    let (_, again) = open_watch(&cluster.api, &token).await;
    assert_eq!(again, 200);
}
