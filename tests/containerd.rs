//! Component images for containerd: `reef image pack` writes an archive that
//! a real containerd (a private instance started here, with its own root,
//! state and socket) imports and unpacks.

mod common;

use common::containerd::PrivateContainerd;
use common::runtimes::Runtime;
use common::{eventually, example, example_dir, Cluster, REEF};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

async fn containerd() -> Option<PrivateContainerd> {
    common::runtimes::private_containerd("reef")
}

trait CtrOk {
    fn ctr_ok(&self, args: &[&str]) -> String;
}

impl CtrOk for PrivateContainerd {
    fn ctr_ok(&self, args: &[&str]) -> String {
        self.ctr_checked(args).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn pack(wasm: &Path, output: &Path, name: Option<&str>) -> Output {
    let mut args = vec![
        "image",
        "pack",
        wasm.to_str().expect("path"),
        "-o",
        output.to_str().expect("path"),
    ];
    if let Some(name) = name {
        args.extend(["--name", name]);
    }
    Command::new(REEF).args(&args).output().expect("run reef")
}

#[tokio::test]
async fn a_packed_component_imports_and_unpacks_in_containerd() {
    let Some(containerd) = containerd().await else {
        return;
    };
    let hello = example("hello").with_file_name("hello.wasm");
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("hello.tar");
    let out = pack(&hello, &archive, Some("docker.io/reef/hello:v1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "docker.io/reef/hello:v1"
    );

    let imported = containerd.ctr_ok(&["image", "import", archive.to_str().expect("path")]);
    assert!(imported.contains("docker.io/reef/hello:v1"), "{imported}");
    let images = containerd.ctr_ok(&["image", "ls"]);
    let line = images
        .lines()
        .find(|l| l.starts_with("docker.io/reef/hello:v1"))
        .unwrap_or_else(|| panic!("image not listed: {images}"));
    assert!(line.contains("wasip2/wasm"), "{line}");
    // Unpacked into a snapshot (import unpacks), the component is the rootfs' one file.
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).expect("mkdir");
    containerd.ctr_ok(&[
        "image",
        "mount",
        "docker.io/reef/hello:v1",
        mount.to_str().expect("path"),
    ]);
    let inside = std::fs::read(mount.join("hello.wasm"));
    containerd.ctr_ok(&["image", "unmount", mount.to_str().expect("path")]);
    assert_eq!(
        inside.expect("hello.wasm in the rootfs"),
        std::fs::read(&hello).expect("hello")
    );

    // The default name is the file's stem; a file that is no component is refused.
    let out = pack(&hello, &dir.path().join("default.tar"), None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello:latest");
    let text = dir.path().join("not.wasm");
    std::fs::write(&text, "hello").expect("write");
    let out = pack(&text, &dir.path().join("bad.tar"), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly component"));
    assert!(!dir.path().join("bad.tar").exists());
}

/// Imports `NAME.wasm` packed as `docker.io/reef/NAME:v1`.
fn import(containerd: &PrivateContainerd, dir: &Path, name: &str) -> String {
    let image = format!("docker.io/reef/{name}:v1");
    let archive = dir.join(format!("{name}.tar"));
    let wasm = example(name).with_file_name(format!("{name}.wasm"));
    let out = pack(&wasm, &archive, Some(&image));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    containerd.ctr_ok(&["image", "import", archive.to_str().expect("path")]);
    image
}

const RUNTIME: &str = "io.containerd.reef.v1";

/// `ctr task ls`'s status of one task (RUNNING, STOPPED, ...).
fn task_status(containerd: &PrivateContainerd, id: &str) -> Option<String> {
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
}

async fn until_task(containerd: &PrivateContainerd, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = task_status(containerd, id);
        if status.as_deref() == Some(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} is {status:?}, not {wanted}, after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ctr_runs_components_through_the_reef_shim() {
    let Some(containerd) = containerd().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ticker = import(&containerd, dir.path(), "ticker");
    let crashy = import(&containerd, dir.path(), "crashy");
    let hello = import(&containerd, dir.path(), "hello");

    // A command runs to its end; its output reaches ctr's stdout.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "TICKS=3",
        "--env",
        "INTERVAL_MS=10",
        &ticker,
        "ticks",
        "/ticker.wasm",
        "shim-ticker",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctr run: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        containerd.log_tail()
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "shim-ticker: tick 1",
            "shim-ticker: tick 2",
            "shim-ticker: tick 3"
        ],
        "{stdout}"
    );

    // A trapping component exits non-zero, and says why on stderr.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "CRASH_AFTER_MS=0",
        &crashy,
        "crash",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("giving up") && stderr.contains("trapped"),
        "{stderr}"
    );

    // A command that would run forever stops when killed.
    containerd.ctr_ok(&["run", "-d", "--runtime", RUNTIME, &ticker, "forever"]);
    until_task(&containerd, "forever", "RUNNING").await;
    containerd.ctr_ok(&["task", "kill", "forever"]);
    until_task(&containerd, "forever", "STOPPED").await;
    containerd.ctr_ok(&["task", "delete", "forever"]);
    containerd.ctr_ok(&["container", "delete", "forever"]);

    // An http component serves on the port its environment names, until killed.
    let port = common::control_plane::free_port();
    containerd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--env",
        &format!("REEF_LISTEN=127.0.0.1:{port}"),
        "--env",
        "GREETING=Hello",
        &hello,
        "web",
    ]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let answer = http
            .get(format!("http://127.0.0.1:{port}/world"))
            .send()
            .await;
        if let Ok(response) = answer {
            assert_eq!(response.status().as_u16(), 200);
            break response.text().await.expect("body");
        }
        assert!(Instant::now() < deadline, "hello did not answer in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("Hello from reef"), "{body}");
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "web"]);
    until_task(&containerd, "web", "STOPPED").await;
    assert!(
        http.get(format!("http://127.0.0.1:{port}/world"))
            .send()
            .await
            .is_err(),
        "a killed task still answers"
    );
    containerd.ctr_ok(&["task", "delete", "web"]);
    containerd.ctr_ok(&["container", "delete", "web"]);
}

/// `id → pid` of the tasks in reef's containerd namespace (`ctr tasks ls`).
fn task_pids(containerd: &PrivateContainerd) -> std::collections::BTreeMap<String, u32> {
    let listed = containerd
        .ctr_checked(&["tasks", "ls"])
        .unwrap_or_else(|e| panic!("{e}"));
    listed
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.to_string();
            let pid = fields.next()?.parse().ok()?;
            Some((id, pid))
        })
        .collect()
}

/// Whether the process runs (a zombie no longer does: it waits for a reaper).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_serves_and_a_killed_node_leaves_no_task_behind_embedded() {
    hello_serves_across_a_node_kill(Runtime::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_serves_and_a_killed_node_leaves_no_task_behind_under_containerd() {
    if let Some(runtime) = Runtime::containerd() {
        hello_serves_across_a_node_kill(runtime).await;
    }
}

/// hello's two replicas answer; `kill -9` of the node and a new start leave
/// two pods and, under containerd, two tasks, none of them the old ones,
/// whose shims are gone; a task killed under a pod is restarted; a graceful
/// stop leaves no task at all.
async fn hello_serves_across_a_node_kill(runtime: Runtime) {
    const SLOW: Duration = Duration::from_secs(90);
    let (_dir, app) = example_dir("hello", |text| runtime.manifest(&text));
    let mut flags = runtime.flags();
    flags.extend(["--backoff-base".to_string(), "1s".to_string()]);
    let mut cluster = Cluster::start_with(&flags).await;
    cluster.reef_ok(&["apply", "-f", app.to_str().expect("path")]);
    let body = cluster.until_status("hello.local", "/", 200, SLOW).await;
    assert!(body.contains("Hello"), "{body}");
    let ready_pods = |cluster: &Cluster| {
        let pods = cluster.get_json("pods");
        let pods = pods["items"].as_array().cloned().unwrap_or_default();
        let ready = pods.iter().filter(|p| p["status"]["ready"] == true).count();
        (pods.len(), ready)
    };
    eventually("both hello pods ready", SLOW, || {
        let counts = ready_pods(&cluster);
        async move { (counts == (2, 2)).then_some(()) }
    })
    .await;
    let wanted = match &runtime {
        Runtime::Embedded => "wasmtime",
        Runtime::Containerd(_) => "containerd",
    };
    let deployments = cluster.get_json("deployments");
    assert_eq!(
        deployments["items"][0]["spec"]["template"]["runtime"], wanted,
        "{deployments}"
    );
    let before = match &runtime {
        Runtime::Containerd(containerd) => task_pids(containerd),
        Runtime::Embedded => Default::default(),
    };
    if let Runtime::Containerd(_) = &runtime {
        assert_eq!(before.len(), 2, "a task per pod: {before:?}");
    }

    cluster.kill9();
    // The shims outlive the node: what the new start must clean up.
    assert!(before.values().all(|pid| alive(*pid)), "{before:?}");
    cluster.launch().await;
    let body = cluster.until_status("hello.local", "/", 200, SLOW).await;
    assert!(body.contains("Hello"), "{body}");
    eventually("two ready hello pods again, no more", SLOW, || {
        let counts = ready_pods(&cluster);
        async move { (counts == (2, 2)).then_some(()) }
    })
    .await;
    if let Runtime::Containerd(containerd) = &runtime {
        let deadline = Instant::now() + SLOW;
        let after = loop {
            let after = task_pids(containerd);
            let settled = after.len() == 2
                && after
                    .values()
                    .all(|pid| !before.values().any(|old| old == pid))
                && before.values().all(|pid| !alive(*pid));
            if settled {
                break after;
            }
            assert!(
                Instant::now() < deadline,
                "the old tasks {before:?} gone and two new ones; now {after:?}\n{}\n{}",
                containerd.log_tail(),
                cluster.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(after.len(), 2, "{after:?}");

        // A task that dies is a crash: its pod restarts it and serves again.
        let (_, victim) = after.iter().next().expect("a task");
        let killed = Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let restarted = eventually("the pod of the killed task to restart", SLOW, || {
            let pods = cluster.get_json("pods");
            let pods = pods["items"].as_array().cloned().unwrap_or_default();
            let restarted = pods
                .into_iter()
                .find(|p| p["status"]["restarts"] == 1 && p["status"]["ready"] == true);
            async move { restarted }
        })
        .await;
        assert!(restarted["status"]["last_error"].is_string(), "{restarted}");
        eventually("two tasks again, a new one among them", SLOW, || {
            let now = task_pids(containerd);
            let settled = now.len() == 2 && !now.values().any(|pid| pid == victim);
            async move { settled.then_some(()) }
        })
        .await;
        let body = cluster.until_status("hello.local", "/", 200, SLOW).await;
        assert!(body.contains("Hello"), "{body}");
    }

    let status = cluster.terminate();
    assert!(
        status.success(),
        "reef up ended with {status}:\n{}",
        cluster.log_tail()
    );
    assert_eq!(runtime.tasks(), Vec::<String>::new(), "tasks after a stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_is_not_its_world_fails_for_good_embedded() {
    not_its_world(Runtime::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_is_not_its_world_fails_for_good_under_containerd() {
    if let Some(runtime) = Runtime::containerd() {
        not_its_world(runtime).await;
    }
}

/// hello (an http handler) deployed as a command: the pod fails for good,
/// saying why, and nothing runs (under containerd, the shim is told the
/// world and refuses, rather than serving what the spec calls a command).
async fn not_its_world(runtime: Runtime) {
    const SLOW: Duration = Duration::from_secs(90);
    let (_dir, app) = example_dir("hello", |text| {
        runtime
            .manifest(&text)
            .replace("[[deployment]]\n", "[[deployment]]\nworld = \"command\"\n")
    });
    let cluster = Cluster::start_with(&runtime.flags()).await;
    cluster.reef_ok(&["apply", "-f", app.to_str().expect("path")]);
    let failed = eventually("a hello pod that failed", SLOW, || {
        let pods = cluster.get_json("pods");
        let failed = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["status"]["phase"] == "Failed")
            .cloned();
        async move { failed }
    })
    .await;
    assert_eq!(failed["status"]["reason"], "CannotRun", "{failed}");
    let error = failed["status"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot run as world \"command\""),
        "{failed}"
    );
    assert_eq!(runtime.tasks(), Vec::<String>::new());
}
