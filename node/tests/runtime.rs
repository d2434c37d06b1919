//! The wasmtime runtime against real components: `examples/hello` and the
//! test guest in `tests/guests/`, built for wasm32-wasip2 on first use.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use reef_node::runtime::{
    digest_of, CommandPod, Exit, HandleError, HttpPod, OutputSink, PodSettings, PrepareError,
    Runtime, RuntimeConfig, ScratchDir, ScratchQuota, Stream,
};
use tokio::net::TcpListener;

mod common;

use common::pods::{call, get, prepare, runtime, test_guest_wasm};
use common::{build_guest, hello_wasm};

/// The test command, built like the test guest.
fn command_guest_wasm() -> Vec<u8> {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| build_guest("command_guest", "reef-test-command"))
        .clone()
}

/// Collects what a guest prints.
#[derive(Default)]
struct Captured(std::sync::Mutex<Vec<(Stream, Vec<u8>)>>);

impl OutputSink for Captured {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        self.0.lock().unwrap().push((stream, bytes.to_vec()));
    }
}

impl Captured {
    fn text(&self, which: Stream) -> String {
        let chunks = self.0.lock().unwrap();
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|(s, _)| *s == which)
            .flat_map(|(_, b)| b.clone())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

async fn command(args: &[&str], settings: PodSettings) -> CommandPod {
    let wasm = command_guest_wasm();
    let component = runtime()
        .prepare_command(&digest_of(&wasm), &wasm)
        .await
        .expect("prepare_command");
    CommandPod::new(
        component,
        "test-command",
        &PodSettings {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..settings
        },
    )
}

fn settings(env: &[(&str, &str)]) -> PodSettings {
    PodSettings {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..PodSettings::default()
    }
}

#[tokio::test]
async fn hello_answers_with_its_env_and_path() {
    let hello = prepare(&hello_wasm()).await;
    let pod = HttpPod::new(hello, settings(&[("GREETING", "hi")]));
    let (status, body) = call(&pod, get("/world")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("hi") && body.contains("/world"), "{body:?}");
    assert_eq!(body, "hi from reef! path=/world\n");
}

#[tokio::test]
async fn pods_of_one_component_keep_their_own_env() {
    let hello = prepare(&hello_wasm()).await;
    let hi = HttpPod::new(hello.clone(), settings(&[("GREETING", "hi")]));
    let hey = HttpPod::new(hello.clone(), settings(&[("GREETING", "hey")]));
    let plain = HttpPod::new(hello, settings(&[]));
    for _ in 0..3 {
        assert_eq!(
            call(&hi, get("/a")).await.unwrap().1,
            "hi from reef! path=/a\n"
        );
        assert_eq!(
            call(&hey, get("/b?x=1")).await.unwrap().1,
            "hey from reef! path=/b?x=1\n"
        );
        assert_eq!(
            call(&plain, get("/")).await.unwrap().1,
            "hello from reef! path=/\n"
        );
    }
}

#[tokio::test]
async fn guests_see_only_their_pod_env() {
    let pod = HttpPod::new(
        prepare(&test_guest_wasm()).await,
        settings(&[("A", "1"), ("B", "two")]),
    );
    assert_eq!(call(&pod, get("/env")).await.unwrap().1, "A=1\nB=two\n");
}

#[tokio::test]
async fn bad_bytes_get_clear_errors() {
    let rt = runtime();
    let garbage = b"this is not wasm at all";
    let err = rt
        .prepare_http(&digest_of(garbage), garbage)
        .await
        .unwrap_err();
    assert!(matches!(err, PrepareError::NotAComponent(_)), "{err}");
    assert!(
        err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );

    let core_module = b"\0asm\x01\0\0\0";
    let err = rt
        .prepare_http(&digest_of(core_module), core_module)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("core wasm module"), "{err}");

    // Right header, broken body: wasmtime's own error, wrapped.
    let truncated = b"\0asm\x0d\0\x01\0\x07";
    let err = rt
        .prepare_http(&digest_of(truncated), truncated)
        .await
        .unwrap_err();
    assert!(matches!(err, PrepareError::Compile(_)), "{err}");

    let hello = hello_wasm();
    let err = rt
        .prepare_http(&digest_of(b"other"), &hello)
        .await
        .unwrap_err();
    assert!(matches!(err, PrepareError::DigestMismatch { .. }), "{err}");
    let err = rt.prepare_http("sha256:nope", &hello).await.unwrap_err();
    assert!(matches!(err, PrepareError::BadDigest(_)), "{err}");
}

#[tokio::test]
async fn serves_over_a_real_connection() {
    let pod = HttpPod::new(
        prepare(&hello_wasm()).await,
        settings(&[("GREETING", "yo")]),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let pod = pod.clone();
            async move {
                let response = pod.handle(req).await.expect("handle");
                Ok::<_, Infallible>(response.map(|body| body.boxed()))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
            .unwrap();
    });

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for path in ["/one", "/two?q=1"] {
        let response = sender
            .send_request(
                Request::get(path)
                    .header("host", "x")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("yo from reef! path={path}\n").as_bytes());
    }
}

#[tokio::test]
async fn request_bodies_reach_the_guest() {
    let pod = HttpPod::new(prepare(&test_guest_wasm()).await, settings(&[]));
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post("/echo")
        .header("host", "x")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let response = pod.handle(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), payload.len());
    assert!(body == payload);
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_times_out_without_starving_others() {
    let guest = prepare(&test_guest_wasm()).await;
    let spinner = HttpPod::new(
        guest.clone(),
        PodSettings {
            timeout: Duration::from_millis(800),
            ..settings(&[])
        },
    );
    let started = Instant::now();
    let spinning = tokio::spawn(async move { call(&spinner, get("/spin")).await });

    // One thread, and the spinner is on it: only its yields let this through.
    tokio::task::yield_now().await;
    let other = HttpPod::new(guest, settings(&[]));
    let (status, _) = call(&other, get("/echo")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );

    let err = spinning.await.unwrap().unwrap_err();
    assert_eq!(err, HandleError::Timeout);
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_guest_blocked_on_io_times_out() {
    let pod = HttpPod::new(
        prepare(&test_guest_wasm()).await,
        PodSettings {
            timeout: Duration::from_millis(300),
            ..settings(&[])
        },
    );
    let started = Instant::now();
    assert_eq!(
        call(&pod, get("/sleep?ms=5000")).await.unwrap_err(),
        HandleError::Timeout
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(call(&pod, get("/sleep?ms=10")).await.unwrap().1, "slept\n");
}

#[tokio::test]
async fn memory_stays_within_the_pod_budget() {
    let guest = prepare(&test_guest_wasm()).await;
    let pod = HttpPod::new(
        guest.clone(),
        PodSettings {
            memory_bytes: 16 << 20,
            ..settings(&[])
        },
    );
    assert_eq!(
        call(&pod, get("/alloc?mib=4")).await.unwrap().0,
        StatusCode::OK
    );
    let err = call(&pod, get("/alloc?mib=64")).await.unwrap_err();
    assert!(matches!(err, HandleError::OutOfMemory(_)), "{err:?}");
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The instance is gone and so is its memory; the pod still serves.
    assert_eq!(pod.memory_in_use(), 0);
    assert_eq!(
        call(&pod, get("/alloc?mib=4")).await.unwrap().0,
        StatusCode::OK
    );

    // A budget below what an instance needs to start: nothing starts.
    let tiny = HttpPod::new(
        guest,
        PodSettings {
            memory_bytes: 64 << 10,
            ..settings(&[])
        },
    );
    let err = call(&tiny, get("/echo")).await.unwrap_err();
    assert!(matches!(err, HandleError::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_panic_is_a_trap_of_that_instance_only() {
    let pod = HttpPod::new(prepare(&test_guest_wasm()).await, settings(&[]));
    let err = call(&pod, get("/panic")).await.unwrap_err();
    assert!(matches!(err, HandleError::Trap(_)), "{err:?}");
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(call(&pod, get("/echo")).await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn outbound_http_only_to_listed_authorities() {
    // An upstream that counts the requests that reach it.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("up"))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let guest = prepare(&test_guest_wasm()).await;
    let fetch = format!("/fetch?authority={addr}");
    let closed = HttpPod::new(guest.clone(), settings(&[]));
    let (status, body) = call(&closed, get(&fetch)).await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("HttpRequestDenied"), "{body}");

    let other_port = HttpPod::new(
        guest.clone(),
        PodSettings {
            outbound: vec![
                format!("127.0.0.1:{}", addr.port() + 1),
                "*.example.com".into(),
            ],
            ..settings(&[])
        },
    );
    let (_, body) = call(&other_port, get(&fetch)).await.unwrap();
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a denied request connected"
    );

    // Listed, and on an address the node opened (loopback is closed by default).
    let open = HttpPod::new(
        guest,
        PodSettings {
            outbound: vec![addr.to_string()],
            network: std::sync::Arc::new(reef_node::runtime::NetworkPolicy {
                allowed: vec![addr.ip().into()],
                refused: vec![],
            }),
            ..settings(&[])
        },
    );
    let (status, body) = call(&open, get(&fetch)).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "upstream status 200\n")
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_without_host_is_refused() {
    let pod = HttpPod::new(prepare(&hello_wasm()).await, settings(&[]));
    let req = Request::get("/x").body(Empty::<Bytes>::new()).unwrap();
    let err = pod.handle(req).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn commands_end_with_their_exit_code_or_why_they_failed() {
    let exit = command(&["exit", "7"], settings(&[])).await.run().await;
    assert_eq!(exit, Exit::Code(7));
    let exit = command(&["exit-std", "7"], settings(&[])).await.run().await;
    assert_eq!(exit, Exit::Code(1), "std's exit says only ok or err");
    let exit = command(&["exit", "0"], settings(&[])).await.run().await;
    assert!(exit.succeeded(), "{exit}");
    let exit = command(&["panic"], settings(&[])).await.run().await;
    assert!(matches!(exit, Exit::Trap(_)), "{exit:?}");
    assert_eq!(exit.code(), 1);
    let small = PodSettings {
        memory_bytes: 16 << 20,
        ..settings(&[])
    };
    let exit = command(&["alloc", "64"], small.clone()).await.run().await;
    assert!(matches!(exit, Exit::OutOfMemory(_)), "{exit:?}");
    let exit = command(&["alloc", "4"], small).await.run().await;
    assert_eq!(exit, Exit::Code(0));
}

#[tokio::test]
async fn a_command_gets_its_args_env_and_output_sink() {
    let sink = std::sync::Arc::new(Captured::default());
    let pod = command(
        &["print", "two words"],
        PodSettings {
            output: Some(sink.clone()),
            ..settings(&[("A", "b")])
        },
    )
    .await;
    assert_eq!(pod.run().await, Exit::Code(0));
    assert_eq!(
        sink.text(Stream::Stdout),
        "argv: test-command print two words\n"
    );
    assert_eq!(sink.text(Stream::Stderr), "to stderr\n");
}

#[tokio::test]
async fn a_guest_sees_its_scratch_dir_and_no_other_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("pod");
    let sink = std::sync::Arc::new(Captured::default());
    let pod = command(
        &["files"],
        PodSettings {
            output: Some(sink.clone()),
            scratch: Some(
                ScratchDir::create(dir.clone(), ScratchQuota::default()).expect("scratch dir"),
            ),
            ..settings(&[])
        },
    )
    .await;
    assert_eq!(
        pod.run().await,
        Exit::Code(0),
        "{}",
        sink.text(Stream::Stderr)
    );
    let out = sink.text(Stream::Stdout);
    assert!(
        out.starts_with("scratch: from the guest; /etc/passwd: Err("),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).expect("on the host"),
        "from the guest"
    );
    // The directory goes with the pod (removed off the async threads).
    drop(pod);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} outlived its pod",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Without a scratch dir there is no /tmp either: the write fails (a panic).
    let bare = command(&["files"], settings(&[])).await;
    assert!(matches!(bare.run().await, Exit::Trap(_)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_command_yields_to_the_pods_beside_it() {
    let spinner = command(&["spin"], settings(&[])).await;
    let spinning = tokio::spawn(async move { spinner.run().await });
    // One thread, and the spinner is on it: only its yields let these through.
    tokio::task::yield_now().await;
    let other = HttpPod::new(prepare(&test_guest_wasm()).await, settings(&[]));
    for _ in 0..5 {
        let (status, _) = call(&other, get("/echo")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert!(!spinning.is_finished(), "the spinner stopped by itself");
    // Dropping the run stops the instance.
    spinning.abort();
    assert!(spinning.await.unwrap_err().is_cancelled());
}

#[tokio::test]
async fn compiled_components_come_back_from_disk_and_a_damaged_one_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || RuntimeConfig {
        max_instances: 8,
        artifact_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let wasm = hello_wasm();
    let digest = digest_of(&wasm);
    let first = Runtime::new(config()).expect("runtime");
    first.prepare_http(&digest, &wasm).await.expect("prepare");
    assert_eq!(first.cache_stats().compiled, 1);
    assert_eq!(first.cache_stats().hits, 0);
    let artifact = first.artifact_path(&digest).expect("a cache path");
    assert!(artifact.exists(), "{}", artifact.display());
    drop(first);

    // A new process (a new runtime): loaded, not compiled.
    let second = Runtime::new(config()).expect("runtime");
    let pod = HttpPod::new(
        second.prepare_http(&digest, &wasm).await.expect("prepare"),
        settings(&[]),
    );
    assert_eq!(second.cache_stats().hits, 1);
    assert_eq!(second.cache_stats().compiled, 0);
    assert_eq!(call(&pod, get("/cached")).await.unwrap().0, StatusCode::OK);
    drop(second);

    // Damage it: the checksum catches it, the component compiles again.
    let mut bytes = std::fs::read(&artifact).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&artifact, bytes).expect("write");
    let third = Runtime::new(config()).expect("runtime");
    let pod = HttpPod::new(
        third.prepare_http(&digest, &wasm).await.expect("prepare"),
        settings(&[]),
    );
    let stats = third.cache_stats();
    assert_eq!(
        (stats.hits, stats.rebuilt, stats.compiled),
        (0, 1, 1),
        "{stats:?}"
    );
    assert_eq!(call(&pod, get("/rebuilt")).await.unwrap().0, StatusCode::OK);
    // And the rebuilt artifact is sound again.
    let fourth = Runtime::new(config()).expect("runtime");
    fourth.prepare_http(&digest, &wasm).await.expect("prepare");
    assert_eq!(fourth.cache_stats().hits, 1);
}

#[tokio::test]
async fn a_command_component_is_not_an_http_one_and_back() {
    let wasm = command_guest_wasm();
    let err = runtime()
        .prepare_http(&digest_of(&wasm), &wasm)
        .await
        .unwrap_err();
    assert!(matches!(err, PrepareError::NotHttp(_)), "{err}");
    let hello = hello_wasm();
    let err = runtime()
        .prepare_command(&digest_of(&hello), &hello)
        .await
        .unwrap_err();
    assert!(matches!(err, PrepareError::NotCommand(_)), "{err}");
}
