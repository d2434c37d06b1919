//! Test harness: starts the real `reef` binary the way a user would, on port 0 with
//! its own XDG dirs, and talks to it over its ports and its CLI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const REEF: &str = env!("CARGO_BIN_EXE_reef");

/// The binary `Cluster` runs: this build's, or `REEF_BIN` (to show that a test
/// fails against an older build).
pub fn reef_bin() -> String {
    std::env::var("REEF_BIN").unwrap_or_else(|_| REEF.to_string())
}

/// The repository root (tests run with the package root as cwd, but be explicit).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the example components once per test binary if a fresh clone lacks them.
pub fn example(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let wasm = repo()
        .join("examples")
        .join(name)
        .join(format!("{name}.wasm"));
    if !wasm.exists() {
        // build.sh builds every example, so once is enough.
        BUILD.call_once(|| {
            let status = Command::new(repo().join("examples/build.sh"))
                .status()
                .expect("run examples/build.sh");
            assert!(status.success(), "examples/build.sh failed");
        });
    }
    assert!(
        wasm.exists(),
        "{} missing after examples/build.sh",
        wasm.display()
    );
    repo().join("examples").join(name).join("app.toml")
}

/// Copies an example's app.toml (edited by `edit`) and its component into a fresh dir.
pub fn example_dir(
    name: &str,
    edit: impl Fn(String) -> String,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let app = example(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = format!("{name}.wasm");
    std::fs::copy(app.with_file_name(&wasm), dir.path().join(&wasm)).expect("copy component");
    let text = std::fs::read_to_string(&app).expect("read app.toml");
    let path = dir.path().join("app.toml");
    std::fs::write(&path, edit(text)).expect("write app.toml");
    (dir, path)
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `reef up` process with its own home.
pub struct Cluster {
    pub home: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    pub api: String,
    pub ingress: String,
    /// The node's own port (logs, forwarded requests).
    pub listen: String,
    http: reqwest::Client,
}

impl Cluster {
    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.home.path().join("reef-up.log")
    }

    /// Starts `reef up` on fresh directories.
    pub async fn start() -> Cluster {
        Cluster::start_with::<&str>(&[]).await
    }

    /// Starts `reef up` on fresh directories with extra flags.
    pub async fn start_with<S: AsRef<str>>(extra: &[S]) -> Cluster {
        let home = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster {
            home,
            child: None,
            extra: extra.iter().map(|s| s.as_ref().to_string()).collect(),
            api: String::new(),
            ingress: String::new(),
            listen: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        };
        cluster.launch().await;
        cluster
    }

    /// Starts (or restarts) `reef up` on this cluster's data dir, on new free ports.
    pub async fn launch(&mut self) {
        let addresses = self.data_dir().join("addresses");
        let _ = std::fs::remove_file(&addresses);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(reef_bin())
            .args([
                "up",
                "--api",
                "127.0.0.1:0",
                "--ingress",
                "127.0.0.1:0",
                "--heartbeat",
                "1s",
            ])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra)
            .envs(self.env())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn reef up");
        self.child = Some(child);
        let line = eventually(
            "reef up to write its addresses",
            Duration::from_secs(60),
            || {
                let text = std::fs::read_to_string(&addresses).ok();
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    panic!("reef up exited early ({status}):\n{}", self.log_tail());
                }
                async move { text.filter(|t| t.ends_with('\n')) }
            },
        )
        .await;
        for part in line.split_whitespace() {
            if let Some(api) = part.strip_prefix("api=") {
                self.api = api.to_string();
            }
            if let Some(ingress) = part.strip_prefix("ingress=") {
                self.ingress = ingress.to_string();
            }
            if let Some(listen) = part.strip_prefix("listen=") {
                self.listen = listen.to_string();
            }
        }
        assert!(
            !self.api.is_empty() && !self.ingress.is_empty(),
            "bad addresses line: {line}"
        );
    }

    /// The environment every `reef` process of this cluster runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        let home = self.home.path();
        vec![
            (
                "XDG_CONFIG_HOME".into(),
                home.join("config").display().to_string(),
            ),
            (
                "XDG_DATA_HOME".into(),
                home.join("share").display().to_string(),
            ),
            ("HOME".into(), home.display().to_string()),
            ("RUST_LOG".into(), "info,openraft=warn".into()),
        ]
    }

    /// Runs a CLI verb against this cluster.
    pub fn reef(&self, args: &[&str]) -> Output {
        Command::new(reef_bin())
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .expect("run reef")
    }

    /// Runs a CLI verb with another token (REEF_TOKEN beats the config's).
    pub fn reef_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(reef_bin())
            .args(args)
            .envs(self.env())
            .env("REEF_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run reef")
    }

    /// Runs a CLI verb that must succeed; returns its stdout.
    pub fn reef_ok(&self, args: &[&str]) -> String {
        let out = self.reef(args);
        assert!(
            out.status.success(),
            "reef {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The admin token `reef up` wrote into the data dir.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("join.token"))
            .expect("join.token")
            .trim()
            .to_string()
    }

    pub fn get_json(&self, kind: &str) -> serde_json::Value {
        let out = self.reef_ok(&["get", kind, "-o", "json"]);
        serde_json::from_str(&out).expect("reef get -o json prints JSON")
    }

    /// GET on the API with the admin token, as JSON.
    pub async fn api_json(&self, path: &str) -> Option<serde_json::Value> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.api))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// A GET through the node proxy with a Host header: (status, body).
    pub async fn request(&self, host: &str, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.ingress);
        let response = self.http.get(url).header("host", host).send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.text().await.ok()?;
        Some((status, body))
    }

    /// Polls until a request answers with `status`; returns the body.
    pub async fn until_status(
        &self,
        host: &str,
        path: &str,
        status: u16,
        timeout: Duration,
    ) -> String {
        eventually(
            &format!("{host}{path} to answer {status}"),
            timeout,
            || async move {
                match self.request(host, path).await {
                    Some((s, body)) if s == status => Some(body),
                    _ => None,
                }
            },
        )
        .await
    }

    /// The `reef up` process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (a graceful stop) and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("reef up is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        child.wait().expect("wait for reef up")
    }

    /// The whole log of every launch so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- reef up log (last lines) ---\n{}", self.log_tail());
        }
        self.kill9();
    }
}

/// Writes `text` as `app.toml` in a fresh dir, with hello.wasm beside it.
pub fn manifest_dir(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = example("hello").with_file_name("hello.wasm");
    std::fs::copy(&wasm, dir.path().join("hello.wasm")).expect("copy hello.wasm");
    let path = dir.path().join("app.toml");
    std::fs::write(&path, text).expect("write manifest");
    (dir, path)
}

/// Prints a figure a test measured and keeps it in `$CARGO_TARGET_TMPDIR/figures.txt`,
/// which `scripts/test.sh` shows after the run (cargo hides what passing tests print).
pub fn report_figure(line: &str) {
    use std::io::Write as _;
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// A process's resident set size in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
pub mod containerd;
pub mod control_plane;
pub mod docker;
pub mod functions;
pub mod runtimes;
pub mod tenants;
