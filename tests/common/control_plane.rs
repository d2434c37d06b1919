//! A multi-process control plane for tests: `reef control-plane` members on free
//! loopback ports (fixed per member across restarts, as their addresses are in the
//! Raft membership) and optionally a `reef node`.

use super::{eventually, REEF};
use reef_api::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A free loopback port below the ephemeral range (32768+), so that while a
/// member is down between restarts no outgoing connection takes its port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread test binaries apart; within one, hand out ports in turn.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1200) as u16 * 10;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (port - 20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct MemberProcess {
    pub id: u64,
    pub address: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl MemberProcess {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct NodeProcess {
    pub name: String,
    pub dir: PathBuf,
    flags: Vec<String>,
    child: Option<Child>,
    pub ingress: String,
}

pub struct ControlPlane {
    pub home: tempfile::TempDir,
    pub members: Vec<MemberProcess>,
    pub nodes: Vec<NodeProcess>,
    /// The first node's ingress (see `start_node`).
    pub ingress: Option<String>,
    /// Extra flags for every member (e.g. `--snapshot-every 20`).
    flags: Vec<String>,
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

impl ControlPlane {
    /// Starts `n` members: the first with `--init`, the others `--join`ing it.
    pub async fn start(n: u64, flags: &[&str]) -> ControlPlane {
        let home = tempfile::tempdir().expect("tempdir");
        let mut cp = ControlPlane {
            home,
            members: Vec::new(),
            nodes: Vec::new(),
            ingress: None,
            flags: flags.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=n {
            let dir = cp.home.path().join(format!("member-{id}"));
            std::fs::create_dir_all(&dir).expect("member dir");
            cp.members.push(MemberProcess {
                id,
                address: format!("127.0.0.1:{}", free_port()),
                dir,
                child: None,
            });
        }
        for i in 0..cp.members.len() {
            cp.launch(i);
            if i == 0 {
                cp.wait_ready(0).await;
                let token = cp.member_token_file();
                eventually(
                    "the first member to write its tokens",
                    Duration::from_secs(60),
                    || {
                        let ok = token.exists();
                        async move { ok.then_some(()) }
                    },
                )
                .await;
            }
        }
        for i in 0..cp.members.len() {
            cp.wait_ready(i).await;
        }
        cp.wait_for_voters(n as usize).await;
        cp
    }

    fn bootstrap_flags(&self, index: usize) -> Vec<String> {
        if index == 0 {
            vec!["--init".into()]
        } else {
            vec![
                "--join".into(),
                self.members[0].url(),
                "--join-token-file".into(),
                self.member_token_file().display().to_string(),
            ]
        }
    }

    pub fn join_token_file(&self) -> PathBuf {
        self.members[0].dir.join("join.token")
    }

    /// The `/metrics` text of member `index` (read with the admin token).
    pub async fn metrics(&self, index: usize) -> Option<String> {
        reqwest::Client::new()
            .get(format!("{}/metrics", self.members[index].url()))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    pub fn member_dir(&self, index: usize) -> PathBuf {
        self.members[index].dir.clone()
    }

    pub fn member_token_file(&self) -> PathBuf {
        self.members[0].dir.join("member.token")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.members[0].dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    /// Starts (or restarts) member `index` on its data dir and address.
    pub fn launch(&mut self, index: usize) {
        let bootstrap = self.bootstrap_flags(index);
        let m = &self.members[index];
        let _ = std::fs::remove_file(m.dir.join("addresses"));
        let log = log_file(self.home.path(), &format!("member-{}.log", m.id));
        let child = Command::new(REEF)
            .arg("control-plane")
            .args(["--id", &m.id.to_string(), "--listen", &m.address])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(&bootstrap)
            .args(&self.flags)
            .env("RUST_LOG", "info,openraft=info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn reef control-plane");
        self.members[index].child = Some(child);
    }

    /// Waits until member `index` serves and knows a leader (`/readyz`).
    pub async fn wait_ready(&self, index: usize) {
        let url = format!("{}/readyz", self.members[index].url());
        eventually(
            &format!("member {} to be ready", self.members[index].id),
            Duration::from_secs(90),
            || {
                let url = url.clone();
                async move {
                    let r = reqwest::get(&url).await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
    }

    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client of one member only (it retries that member through a brief election).
    pub fn client_of(&self, index: usize) -> Client {
        Client::new(vec![self.members[index].url()], Some(self.admin_token()))
            .expect("client")
            .with_retry_for(Duration::from_secs(10))
    }

    /// A client of every member, failing over like the CLI.
    pub fn client(&self) -> Client {
        Client::new(self.urls(), Some(self.admin_token())).expect("client")
    }

    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(MemberProcess::url).collect()
    }

    /// The leader's index in `members`, as the running members agree on it.
    pub async fn leader(&self) -> usize {
        eventually(
            "a leader all running members agree on",
            Duration::from_secs(60),
            || async {
                let mut leader = None;
                for (i, m) in self.members.iter().enumerate() {
                    if !m.is_running() {
                        continue;
                    }
                    let members = self.client_of(i).members().await.ok()?;
                    let id = members.iter().find(|x| x.role == "leader")?.id;
                    if leader.is_some_and(|l| l != id) {
                        return None;
                    }
                    leader = Some(id);
                }
                let id = leader?;
                self.members
                    .iter()
                    .position(|m| m.id == id && m.is_running())
            },
        )
        .await
    }

    pub async fn wait_for_voters(&self, n: usize) {
        eventually(&format!("{n} voters"), Duration::from_secs(90), || async {
            let members = self.client().members().await.ok()?;
            let voters = members.iter().filter(|m| m.role != "learner").count();
            (voters == n && members.len() == n).then_some(())
        })
        .await;
    }

    /// Starts a `reef node` named n1 that knows every member.
    pub async fn start_node(&mut self) {
        let i = self.start_node_with("n1", &[]).await;
        self.ingress = Some(self.nodes[i].ingress.clone());
    }

    /// Starts a `reef node NAME` with extra flags (e.g. `--cpu 1000m`); returns
    /// its index in `nodes`.
    pub async fn start_node_with(&mut self, name: &str, flags: &[&str]) -> usize {
        let dir = self.home.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        self.nodes.push(NodeProcess {
            name: name.to_string(),
            dir,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            child: None,
            ingress: String::new(),
        });
        let i = self.nodes.len() - 1;
        self.launch_node(i).await;
        i
    }

    /// Starts (or restarts) node `i`; waits for its addresses.
    pub async fn launch_node(&mut self, i: usize) {
        let log = log_file(
            self.home.path(),
            &format!("node-{}.log", self.nodes[i].name),
        );
        let addresses = self.nodes[i].dir.join("addresses");
        let _ = std::fs::remove_file(&addresses);
        let node = &self.nodes[i];
        let child = Command::new(REEF)
            .args([
                "node",
                "--name",
                &node.name,
                "--ingress",
                "127.0.0.1:0",
                "--heartbeat",
                "1s",
            ])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--server", &self.urls().join(",")])
            .arg("--join-token-file")
            .arg(self.join_token_file())
            .args(&node.flags)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn reef node");
        self.nodes[i].child = Some(child);
        let line = eventually("the node to start", Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&addresses)
                .ok()
                .filter(|t| t.ends_with('\n'));
            async move { text }
        })
        .await;
        self.nodes[i].ingress = line
            .split_whitespace()
            .find_map(|p| p.strip_prefix("ingress=").map(str::to_string))
            .expect("ingress address");
    }

    /// Freezes node `i` (SIGSTOP): alive, but silent, like a node cut off.
    pub fn pause_node(&self, i: usize) {
        self.signal_node(i, "-STOP");
    }

    pub fn resume_node(&self, i: usize) {
        self.signal_node(i, "-CONT");
    }

    fn signal_node(&self, i: usize, signal: &str) {
        signal_process(self.nodes[i].child.as_ref().expect("node running"), signal);
    }

    /// Freezes member `i` (SIGSTOP): alive, but deaf and silent.
    pub fn pause(&self, i: usize) {
        signal_process(
            self.members[i].child.as_ref().expect("member running"),
            "-STOP",
        );
    }

    pub fn resume(&self, i: usize) {
        signal_process(
            self.members[i].child.as_ref().expect("member running"),
            "-CONT",
        );
    }

    /// The process id of node `i`, while it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a CLI verb against every member (failover), as a user would.
    pub fn reef(&self, args: &[&str]) -> Output {
        Command::new(REEF)
            .args(args)
            .env("REEF_SERVER", self.urls().join(","))
            .env("REEF_TOKEN", self.admin_token())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .stdin(Stdio::null())
            .output()
            .expect("run reef")
    }

    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("member-{}.log", m.id))
            .collect();
        names.extend(self.nodes.iter().map(|n| format!("node-{}.log", n.name)));
        for name in names {
            let text = std::fs::read_to_string(self.home.path().join(&name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let first_notable: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| is_notable(l))
                .take(20)
                .collect();
            out.push_str(&format!(
                "--- {name}: first warnings and elections ---\n{}\n--- {name}: last lines ---\n{}\n",
                first_notable.join("\n"),
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        out
    }
}

fn signal_process(child: &Child, signal: &str) {
    let pid = child.id();
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Where an unexpected election starts: reef's own warnings (a slow disk, a
/// starved runtime) and the first campaigns, which the Raft chatter after
/// them pushes out of the last lines.
fn is_notable(line: &str) -> bool {
    let warned =
        (line.contains(" WARN ") || line.contains(" ERROR ")) && !line.contains("openraft");
    warned || line.contains("campaigning") || line.contains("do trigger election")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// A Service named `name` in `default`, selecting `app=name`.
pub fn service(name: &str) -> reef_api::RawObject {
    serde_json::from_value(serde_json::json!({
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}},
    }))
    .expect("service object")
}

/// The value of the first sample of `name` in a Prometheus text page; 0 if absent.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0)
}
