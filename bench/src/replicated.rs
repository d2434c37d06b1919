//! The replicated control plane under write load, beside etcd: a 3-member reef
//! control plane and a 3-member etcd (Debian's etcd-server), both on loopback,
//! driven by the same closed-loop clients spread over all members. Also leader
//! failover time: kill -9 → first acknowledged write.

use crate::etcd::EtcdCluster;
use crate::load::{load, load_work, Target, Work};
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
    /// `--max-watches-per-token` for every member (the default otherwise).
    pub max_watches: Option<usize>,
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

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.processes.0.get(i)?.as_ref().map(|c| c.id())
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
        if let Some(n) = self.options.max_watches {
            cmd.args(["--max-watches-per-token", &n.to_string()]);
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
    /// The members' process ids (0 where a member is down), for profilers.
    pub fn pids(&self) -> Vec<u32> {
        let pid = |c: &Option<Child>| c.as_ref().map_or(0, Child::id);
        self.processes.0.iter().map(pid).collect()
    }

    pub(crate) async fn leader(&self, http: &reqwest::Client, ask: usize) -> Option<usize> {
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

/// Writes at 1–256 clients, spread over the members and all on each
/// system's leader, then linearizable reads, reef beside etcd in one run.
/// `leader_only`: only the leader-only table; `clients`: only these counts.
pub async fn writes(
    reef: &Path,
    seconds: u64,
    leader_only: bool,
    clients: Option<&[usize]>,
) -> anyhow::Result<()> {
    let reef_cluster = ReefCluster::start(reef, 3).await?;
    let etcd = EtcdCluster::start(3).await?;
    let http = reqwest::Client::new();
    let reef_leader = reef_cluster
        .leader(&http, 0)
        .await
        .context("no reef leader")?;
    let etcd_leader = etcd.leader(&http).await?;
    let reef_target = |urls: Vec<String>| Target::Reef {
        urls,
        token: reef_cluster.token.clone(),
        ca: None,
    };
    let spread = (
        reef_target(reef_cluster.urls.clone()),
        Target::Etcd {
            urls: etcd.urls.clone(),
        },
    );
    let on_leader = (
        reef_target(vec![reef_cluster.urls[reef_leader].clone()]),
        Target::Etcd {
            urls: vec![etcd.urls[etcd_leader].clone()],
        },
    );
    // Warm both up.
    load(&spread.0, 4, Duration::from_secs(2)).await;
    load(&spread.1, 4, Duration::from_secs(2)).await;
    eprintln!(
        "reef member pids {:?}, leader member {reef_leader}",
        reef_cluster.pids()
    );
    println!("3 members each on loopback; ~256-byte values; {seconds} s per cell");
    println!();
    println!("| work | clients | clients on | system | ops/s | p50 (ms) | p99 (ms) | errors | reef/etcd ops/s | reef/etcd p99 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut cells: Vec<(Work, usize, &str, &(Target, Target))> = Vec::new();
    let wanted = |n: usize| clients.is_none_or(|c| c.contains(&n));
    for clients in [1usize, 16, 64, 256].into_iter().filter(|&n| wanted(n)) {
        if !leader_only {
            cells.push((Work::Writes, clients, "all members", &spread));
        }
        cells.push((Work::Writes, clients, "the leader", &on_leader));
    }
    spread.0.prepare_reads(&http).await?;
    spread.1.prepare_reads(&http).await?;
    for clients in [1usize, 64].into_iter().filter(|&n| wanted(n)) {
        cells.push((Work::Reads, clients, "all members", &spread));
    }
    for (work, clients, on, (reef_t, etcd_t)) in cells {
        let duration = Duration::from_secs(seconds);
        let e = load_work(etcd_t, work, clients, duration).await;
        let r = load_work(reef_t, work, clients, duration).await;
        let what = match work {
            Work::Writes => "writes",
            Work::Reads => "linearizable reads",
        };
        println!(
            "| {what} | {clients} | {on} | etcd 3.4 | {:.0} | {:.2} | {:.2} | {} | | |",
            e.writes_per_sec, e.p50_ms, e.p99_ms, e.errors
        );
        println!(
            "| {what} | {clients} | {on} | reef | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} |",
            r.writes_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.writes_per_sec / e.writes_per_sec.max(1.0),
            r.p99_ms / e.p99_ms.max(0.001)
        );
    }
    Ok(())
}

/// Writes through `target` until one is acknowledged, then kills the leader
/// with `kill` and returns the time from the kill to the first write
/// acknowledged after it.
async fn first_write_after(
    target: &Target,
    http: &reqwest::Client,
    run: usize,
    kill: impl FnOnce(),
) -> anyhow::Result<f64> {
    // Writes flow before the kill.
    let mut seq = 1_000_000 * run as u64;
    while !target.write(http, 0, seq).await {
        seq += 1;
    }
    kill();
    let killed = Instant::now();
    let mut client = 0;
    loop {
        seq += 1;
        client += 1;
        if target.write(http, client, seq).await {
            return Ok(killed.elapsed().as_secs_f64() * 1000.0);
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("no write acknowledged within 60 s of the kill");
        }
    }
}

/// Median and max.
fn summary(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    ((sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0, sorted[n - 1])
}

/// reef's runs: the leader every member names is killed each time.
async fn reef_failovers(
    reef: &Path,
    runs: usize,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<f64>> {
    let mut cluster = ReefCluster::start(reef, 3).await?;
    let mut times = Vec::new();
    for run in 0..runs {
        // Every member must name the same leader: a member just restarted
        // may still name the one before, and killing a follower measures
        // nothing.
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            let mut named = Vec::new();
            for ask in 0..3 {
                named.push(cluster.leader(http, ask).await);
            }
            if let Some(Some(first)) = named.first().copied() {
                if named.iter().all(|n| *n == Some(first)) {
                    break first;
                }
            }
            if Instant::now() > deadline {
                bail!("the members do not agree on a leader: {named:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let target = Target::Reef {
            urls: (0..3)
                .filter(|i| *i != leader)
                .map(|i| cluster.urls[i].clone())
                .collect(),
            token: cluster.token.clone(),
            ca: None,
        };
        times.push(first_write_after(&target, http, run, || cluster.kill(leader)).await?);
        cluster.launch(leader)?;
        cluster.wait_ready(leader).await?;
    }
    Ok(times)
}

/// etcd's runs, with its default timers (heartbeat 100 ms, election 1 s).
async fn etcd_failovers(runs: usize, http: &reqwest::Client) -> anyhow::Result<Vec<f64>> {
    let mut etcd = EtcdCluster::start(3).await?;
    let mut times = Vec::new();
    for run in 0..runs {
        let leader = etcd.leader(http).await?;
        let target = Target::Etcd {
            urls: (0..3)
                .filter(|i| *i != leader)
                .map(|i| etcd.urls[i].clone())
                .collect(),
        };
        times.push(first_write_after(&target, http, run, || etcd.kill(leader)).await?);
        etcd.launch(leader)?;
        etcd.wait_healthy(leader).await?;
        // The restarted member must have rejoined before the next kill.
        let deadline = Instant::now() + Duration::from_secs(60);
        while etcd.leader(http).await.is_err() {
            if Instant::now() > deadline {
                bail!("etcd has no leader after member {} rejoined", leader + 1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(times)
}

/// kill -9 the leader while a client writes through the other members; the
/// time to the first write acknowledged after the kill, reef beside etcd.
/// The killed member rejoins before the next run.
pub async fn failover(reef: &Path, runs: usize) -> anyhow::Result<()> {
    // A write that has not been answered in 250 ms is sent again: etcd holds
    // a request made during its election until its own timeout, which would
    // measure the client's timeout rather than the election.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(250))
        .build()?;
    let reef_times = reef_failovers(reef, runs, &http).await?;
    let etcd_times = etcd_failovers(runs, &http).await?;
    println!("| run | reef: kill → first acknowledged write (ms) | etcd (ms) |");
    println!("|---|---|---|");
    for (run, (r, e)) in reef_times.iter().zip(&etcd_times).enumerate() {
        println!("| {} | {r:.0} | {e:.0} |", run + 1);
    }
    let (reef_median, reef_max) = summary(&reef_times);
    let (etcd_median, etcd_max) = summary(&etcd_times);
    println!();
    println!("| system | median (ms) | max (ms) |");
    println!("|---|---|---|");
    println!("| reef (default timers, election watchdog) | {reef_median:.0} | {reef_max:.0} |");
    println!("| etcd 3.4 (default timers) | {etcd_median:.0} | {etcd_max:.0} |");
    println!(
        "reef / etcd: median {:.2}, max {:.2} over {runs} runs each (writes resent after 250 ms unanswered)",
        reef_median / etcd_median.max(1.0),
        reef_max / etcd_max.max(1.0)
    );
    Ok(())
}
