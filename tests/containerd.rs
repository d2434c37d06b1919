//! Component images for containerd: `reef image pack` writes an archive that
//! a real containerd (a private instance started here, with its own root,
//! state and socket) imports and unpacks.

mod common;

use common::{example, REEF};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A containerd of this test's own, stopped (and its mounts undone) on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive their containerd; this one's name its socket.
        let _ = Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("containerd-shim-reef-v1 .*{}", self.socket.display()),
            ])
            .status();
        // Unpacked snapshots may still be mounted under the root.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().to_string();
        for mount in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if mount.starts_with(&root) {
                let _ = Command::new("umount").arg(mount).status();
            }
        }
    }
}

/// Starts containerd, or says loudly why it cannot here (it needs root and the
/// binary). CI sets REEF_REQUIRE_CONTAINERD where both are there.
async fn containerd() -> Option<Containerd> {
    let installed = Command::new("containerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // Root, by the effective uid in /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !installed || !root {
        assert!(
            std::env::var_os("REEF_REQUIRE_CONTAINERD").is_none(),
            "containerd (as root) is required here"
        );
        eprintln!("*** SKIPPED: containerd tests need the containerd binary and root ***");
        return None;
    }
    // Socket paths must stay under 108 bytes: a short dir under /tmp.
    let dir = tempfile::Builder::new()
        .prefix("reef-ctd")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let socket = dir.path().join("c.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{socket}\"\n",
            root = dir.path().display(),
            socket = socket.display()
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
    // containerd finds `containerd-shim-reef-v1` on its PATH, beside `reef`.
    let path = format!(
        "{}:{}",
        shim_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .env("PATH", path)
        .env("REEF_SHIM_CACHE", dir.path().join("shim-cache"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start containerd");
    let containerd = Containerd { child, socket, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if containerd.ctr(&["version"]).status.success() {
            return Some(containerd);
        }
        assert!(
            Instant::now() < deadline,
            "containerd did not answer in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the build put `containerd-shim-reef-v1`: beside `reef`.
fn shim_dir() -> PathBuf {
    let dir = Path::new(REEF).parent().expect("bin dir").to_path_buf();
    assert!(
        dir.join("containerd-shim-reef-v1").exists(),
        "no containerd-shim-reef-v1 in {}: build the workspace (cargo build --workspace --bins)",
        dir.display()
    );
    dir
}

impl Containerd {
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "reef"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
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
fn import(containerd: &Containerd, dir: &Path, name: &str) -> String {
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
fn task_status(containerd: &Containerd, id: &str) -> Option<String> {
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
}

async fn until_task(containerd: &Containerd, id: &str, wanted: &str) {
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
