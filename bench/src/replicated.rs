//! The replicated control plane under write load, beside etcd: a 3-member reef
//! control plane and a 3-member etcd (Debian's etcd-server), both on loopback,
//! driven by the same closed-loop clients spread over all members. Also leader
//! failover time: kill -9 → first acknowledged write.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Children killed on drop.
pub(crate) struct Processes(pub(crate) Vec<Option<Child>>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct ReefCluster {
    _home: tempfile::TempDir,
    processes: Processes,
    reef: PathBuf,
    pub urls: Vec<String>,
    dirs: Vec<PathBuf>,
    addresses: Vec<String>,
    pub token: String,
    options: ClusterOptions,
    /// The cluster CA (PEM), when members serve HTTPS.
    pub ca: Option<String>,
    /// One client for setup calls (trusting the CA when there is one).
    http: reqwest::Client,
}

/// How a benchmark cluster runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterOptions {
    /// Members serve HTTPS (`--tls`).
    pub tls: bool,
    /// The binary predates member tokens: joiners use `join.token`.
    pub legacy: bool,
}

/// A client trusting `ca` (or the default roots without one).
pub(crate) fn http_client(ca: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(256);
    if let Some(cert) = ca.and_then(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).ok()) {
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    builder.build().unwrap_or_default()
}

impl ReefCluster {
    pub async fn start(reef: &Path, members: usize) -> anyhow::Result<ReefCluster> {
        Self::start_with(reef, members, ClusterOptions::default()).await
    }

    pub async fn start_with(
        reef: &Path,
        members: usize,
        options: ClusterOptions,
    ) -> anyhow::Result<ReefCluster> {
        let home = tempfile::tempdir()?;
        let mut cluster = ReefCluster {
            processes: Processes(Vec::new()),
            reef: reef.to_path_buf(),
            urls: Vec::new(),
            dirs: Vec::new(),
            addresses: Vec::new(),
            token: String::new(),
            options,
            ca: None,
            http: http_client(None),
            _home: home,
        };
        let scheme = if options.tls { "https" } else { "http" };
        for i in 0..members {
            let dir = cluster._home.path().join(format!("m{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let address = format!("127.0.0.1:{}", free_port()?);
            cluster.urls.push(format!("{scheme}://{address}"));
            cluster.addresses.push(address);
            cluster.dirs.push(dir);
            cluster.processes.0.push(None);
        }
        for i in 0..members {
            cluster.launch(i)?;
            if i == 0 {
                // Joiners need the first member's tokens.
                wait_for_file(
                    &cluster.dirs[0].join(cluster.joiners_token()),
                    Duration::from_secs(120),
                )
                .await?;
                cluster.token = std::fs::read_to_string(cluster.dirs[0].join("admin.token"))?
                    .trim()
                    .to_string();
                if options.tls {
                    let ca = std::fs::read_to_string(cluster.dirs[0].join("ca.crt"))?;
                    cluster.http = http_client(Some(&ca));
                    cluster.ca = Some(ca);
                }
            }
        }
        cluster.wait_for_voters(members).await?;
        Ok(cluster)
    }

    /// The file joining members authenticate with.
    fn joiners_token(&self) -> &'static str {
        if self.options.legacy {
            "join.token"
        } else {
            "member.token"
        }
    }

    /// Waits until every member is a voter (joins finished).
    async fn wait_for_voters(&self, n: usize) -> anyhow::Result<()> {
        let http = self.http.clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let members: Option<serde_json::Value> = async {
                http.get(format!("{}/api/v1/members", self.urls[0]))
                    .bearer_auth(&self.token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            let voters = members
                .as_ref()
                .and_then(|m| m.as_array())
                .map_or(0, |m| m.iter().filter(|x| x["role"] != "learner").count());
            if voters == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not reach {n} voters");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.dirs[i].join("addresses"));
        let mut cmd = Command::new(&self.reef);
        cmd.args([
            "control-plane",
            "--id",
            &(i + 1).to_string(),
            "--listen",
            &self.addresses[i],
        ])
        .arg("--data-dir")
        .arg(&self.dirs[i])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.options.tls {
            cmd.arg("--tls");
        }
        if i == 0 {
            cmd.arg("--init");
        } else {
            cmd.args(["--join", &self.urls[0]])
                .arg("--join-token-file")
                .arg(self.dirs[0].join(self.joiners_token()));
            if self.options.tls {
                cmd.arg("--ca-file").arg(self.dirs[0].join("ca.crt"));
            }
        }
        self.processes.0[i] = Some(cmd.spawn().context("starting reef control-plane")?);
        Ok(())
    }

    /// Waits until member `i` serves and knows a leader.
    async fn wait_ready(&self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/readyz", self.urls[i]);
        while !self
            .http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("member {} not ready", i + 1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes.0[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The index of the leader, as member `ask` sees it.
    async fn leader(&self, http: &reqwest::Client, ask: usize) -> Option<usize> {
        let members: serde_json::Value = http
            .get(format!("{}/api/v1/members", self.urls[ask]))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let id = members.as_array()?.iter().find(|m| m["role"] == "leader")?["id"].as_u64()?;
        Some(id as usize - 1)
    }
}

pub(crate) async fn wait_for_file(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub struct EtcdCluster {
    _home: tempfile::TempDir,
    _processes: Processes,
    pub urls: Vec<String>,
}

impl EtcdCluster {
    pub async fn start(members: usize) -> anyhow::Result<EtcdCluster> {
        let home = tempfile::tempdir()?;
        let mut clients = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..members {
            clients.push(format!("http://127.0.0.1:{}", free_port()?));
            peers.push(format!("http://127.0.0.1:{}", free_port()?));
        }
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}={p}", i + 1))
            .collect();
        let mut processes = Processes(Vec::new());
        for i in 0..members {
            let child = Command::new("etcd")
                .args(["--name", &format!("e{}", i + 1)])
                .arg("--data-dir")
                .arg(home.path().join(format!("e{}", i + 1)))
                .args([
                    "--listen-client-urls",
                    &clients[i],
                    "--advertise-client-urls",
                    &clients[i],
                ])
                .args([
                    "--listen-peer-urls",
                    &peers[i],
                    "--initial-advertise-peer-urls",
                    &peers[i],
                ])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting etcd (apt-get install etcd-server)")?;
            processes.0.push(Some(child));
        }
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in &clients {
            loop {
                let ok = http
                    .get(format!("{url}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd at {url} did not become healthy");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(EtcdCluster {
            _home: home,
            _processes: processes,
            urls: clients,
        })
    }
}

/// One write of a ~256-byte value, as each system takes it.
#[derive(Clone)]
pub enum Target {
    /// PUT of a Service object with a 256-byte path through the reef API
    /// (trusting `ca` for HTTPS members).
    Reef {
        urls: Vec<String>,
        token: String,
        ca: Option<String>,
    },
    /// PUT through etcd's v3 HTTP/JSON gateway.
    Etcd { urls: Vec<String> },
}

const VALUE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Target {
    async fn write(&self, http: &reqwest::Client, client: usize, seq: u64) -> bool {
        match self {
            Target::Reef { urls, token, .. } => {
                let name = format!("w{client}-{seq}");
                // The ~256-byte payload rides in the path prefix (label values
                // are limited to 63 characters).
                let body = serde_json::json!({
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": {"app": "bench"}, "path": format!("/{VALUE}")},
                });
                let url = format!(
                    "{}/api/v1/namespaces/default/services/{name}",
                    urls[client % urls.len()]
                );
                http.put(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            Target::Etcd { urls } => {
                let body = serde_json::json!({
                    "key": base64(format!("/bench/w{client}-{seq}").as_bytes()),
                    "value": base64(VALUE.as_bytes()),
                });
                let url = format!("{}/v3/kv/put", urls[client % urls.len()]);
                http.post(url)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }
    }
}

pub struct LoadResult {
    pub writes_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// `clients` closed-loop writers for `duration`, spread over the target's members.
pub async fn load(target: &Target, clients: usize, duration: Duration) -> LoadResult {
    let http = match target {
        Target::Reef { ca, .. } => http_client(ca.as_deref()),
        Target::Etcd { .. } => http_client(None),
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (target, http) = (target.clone(), http.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut seq = 0u64;
                while start.elapsed() < duration {
                    let t = Instant::now();
                    if target.write(&http, c, seq).await {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                    seq += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    LoadResult {
        writes_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

/// `leader_only`: send every reef write to the leader, to separate the cost of
/// forwarding from followers from the cost of the write itself.
pub async fn writes(reef: &Path, seconds: u64, leader_only: bool) -> anyhow::Result<()> {
    let reef_cluster = ReefCluster::start(reef, 3).await?;
    let etcd = EtcdCluster::start(3).await?;
    let reef_urls = if leader_only {
        let http = reqwest::Client::new();
        let leader = reef_cluster
            .leader(&http, 0)
            .await
            .context("no reef leader")?;
        vec![reef_cluster.urls[leader].clone()]
    } else {
        reef_cluster.urls.clone()
    };
    let reef_target = Target::Reef {
        urls: reef_urls,
        token: reef_cluster.token.clone(),
        ca: None,
    };
    let etcd_target = Target::Etcd {
        urls: etcd.urls.clone(),
    };
    // Warm both up.
    load(&reef_target, 4, Duration::from_secs(2)).await;
    load(&etcd_target, 4, Duration::from_secs(2)).await;
    let spread = if leader_only {
        "reef clients all on its leader, etcd clients spread"
    } else {
        "clients spread over all members"
    };
    println!("3 members each on loopback; ~256-byte values; {spread}; {seconds} s per cell");
    println!();
    println!("| clients | system | writes/s | p50 (ms) | p99 (ms) | errors | reef/etcd writes/s |");
    println!("|---|---|---|---|---|---|---|");
    for clients in [1usize, 16, 64] {
        let e = load(&etcd_target, clients, Duration::from_secs(seconds)).await;
        let r = load(&reef_target, clients, Duration::from_secs(seconds)).await;
        println!(
            "| {clients} | etcd 3.4 | {:.0} | {:.2} | {:.2} | {} | |",
            e.writes_per_sec, e.p50_ms, e.p99_ms, e.errors
        );
        println!(
            "| {clients} | reef | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
            r.writes_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.writes_per_sec / e.writes_per_sec.max(1.0)
        );
    }
    Ok(())
}

/// kill -9 the leader while a client writes through the other members; the time
/// to the first write acknowledged after the kill. The killed member rejoins
/// before the next run.
pub async fn failover(reef: &Path, runs: usize) -> anyhow::Result<()> {
    let mut cluster = ReefCluster::start(reef, 3).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut times = Vec::new();
    println!("| run | killed member | kill → first acknowledged write (ms) |");
    println!("|---|---|---|");
    for run in 0..runs {
        let mut leader = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while leader.is_none() {
            for ask in 0..3 {
                if let Some(l) = cluster.leader(&http, ask).await {
                    leader = Some(l);
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("no leader");
            }
        }
        let leader = leader.unwrap_or(0);
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| cluster.urls[i].clone())
            .collect();
        let target = Target::Reef {
            urls: survivors,
            token: cluster.token.clone(),
            ca: None,
        };
        // Writes flow before the kill.
        let mut seq = 0u64;
        while !target.write(&http, 0, seq).await {
            seq += 1;
        }
        cluster.kill(leader);
        let killed = Instant::now();
        let mut client = 0;
        loop {
            seq += 1;
            client += 1;
            if target
                .write(&http, client, seq + 1_000_000 * run as u64)
                .await
            {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no write acknowledged within 60 s of the kill");
            }
        }
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        println!("| {} | {} | {ms:.0} |", run + 1, leader + 1);
        times.push(ms);
        cluster.launch(leader)?;
        cluster.wait_ready(leader).await?;
    }
    times.sort_by(f64::total_cmp);
    let median = (times[(times.len() - 1) / 2] + times[times.len() / 2]) / 2.0;
    let max = times.last().copied().unwrap_or(0.0);
    println!();
    println!("median {median:.0} ms, max {max:.0} ms over {runs} runs (election timeout 1–2 s, heartbeat 250 ms)");
    Ok(())
}
