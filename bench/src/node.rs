//! Node benchmarks: density (how many idle http pods, and how many sleeping
//! command pods, one node holds within an RSS budget) and cold start (pod
//! bound → first 200, compiling from scratch vs loading the cached artifact).

use crate::cluster::Cluster;
use crate::proc::rss_mib;
use crate::replicated::{free_port, wait_for_file, Processes};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One control-plane member and one node, as separate processes, so the
/// node's RSS is its own.
pub(crate) struct Pair {
    home: tempfile::TempDir,
    processes: Processes,
    pub(crate) api: String,
    pub(crate) token: String,
    pub(crate) node_pid: u32,
    pub(crate) ingress: String,
    pub(crate) cp_pid: u32,
    reef: std::path::PathBuf,
}

/// Starts `reef node NAME` against the member at `api`; returns it and its ingress.
async fn spawn_node(
    reef: &Path,
    home: &Path,
    api: &str,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<(std::process::Child, String)> {
    let node_dir = home.join(format!("node-{name}"));
    std::fs::create_dir_all(&node_dir)?;
    let node = Command::new(reef)
        .args(["node", "--name", name, "--server"])
        .arg(format!("http://{api}"))
        .arg("--data-dir")
        .arg(&node_dir)
        .arg("--join-token-file")
        .arg(home.join("cp").join("join.token"))
        .args([
            "--ingress",
            "127.0.0.1:0",
            "--cpu",
            "1000000m",
            "--memory",
            "1000Gi",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            home.join(format!("node-{name}.log")),
        )?)
        .spawn()
        .context("starting reef node")?;
    wait_for_file(&node_dir.join("addresses"), Duration::from_secs(60)).await?;
    let line = std::fs::read_to_string(node_dir.join("addresses"))?;
    let ingress = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("ingress="))
        .context("no ingress in the node's addresses")?
        .to_string();
    Ok((node, ingress))
}

impl Pair {
    /// Starts another node; returns its ingress and process id.
    pub(crate) async fn add_node(
        &mut self,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<(String, u32)> {
        let api = self.api.trim_start_matches("http://").to_string();
        let (node, ingress) = spawn_node(&self.reef, self.home.path(), &api, name, extra).await?;
        let pid = node.id();
        self.processes.0.push(Some(node));
        Ok((ingress, pid))
    }

    pub(crate) async fn start(reef: &Path, pods: u32) -> anyhow::Result<Pair> {
        Pair::start_with(reef, pods, &[]).await
    }

    /// [`Pair::start`] with extra flags for the node `n1`.
    pub(crate) async fn start_with(
        reef: &Path,
        pods: u32,
        node_flags: &[&str],
    ) -> anyhow::Result<Pair> {
        let home = tempfile::tempdir()?;
        let cp_dir = home.path().join("cp");
        std::fs::create_dir_all(&cp_dir)?;
        let api = format!("127.0.0.1:{}", free_port()?);
        let log = |name: &str| std::fs::File::create(home.path().join(name));
        let cp = Command::new(reef)
            .args(["control-plane", "--id", "1", "--init", "--listen", &api])
            .arg("--data-dir")
            .arg(&cp_dir)
            // Thousands of pod status writes must not make a busy node look dead.
            .args(["--node-grace", "600s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log("control-plane.log")?)
            .spawn()
            .context("starting reef control-plane")?;
        let cp_pid = cp.id();
        let mut processes = Processes(vec![Some(cp)]);
        wait_for_file(&cp_dir.join("join.token"), Duration::from_secs(120)).await?;
        let token = std::fs::read_to_string(cp_dir.join("admin.token"))?
            .trim()
            .to_string();
        let pods = pods.to_string();
        let mut flags = vec!["--pods", pods.as_str()];
        flags.extend_from_slice(node_flags);
        let (node, ingress) = spawn_node(reef, home.path(), &api, "n1", &flags).await?;
        let node_pid = node.id();
        processes.0.push(Some(node));
        Ok(Pair {
            home,
            processes,
            api: format!("http://{api}"),
            token,
            node_pid,
            ingress,
            cp_pid,
            reef: reef.to_path_buf(),
        })
    }

    async fn put(&self, http: &reqwest::Client, path: &str, body: &Value) -> anyhow::Result<()> {
        let response = http
            .put(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "PUT {path}: {}: {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// (pods that are Running and ready, pods in all, pods Failed).
    async fn counts(
        &self,
        http: &reqwest::Client,
        prefix: &str,
    ) -> anyhow::Result<(usize, usize, usize)> {
        let list: Value = http
            .get(format!("{}/api/v1/namespaces/default/pods", self.api))
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?;
        let pods: Vec<&Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect();
        let ready = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["ready"] == true)
            .count();
        let failed = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Failed")
            .count();
        Ok((ready, pods.len(), failed))
    }
}

pub(crate) async fn upload(
    pair: &Pair,
    http: &reqwest::Client,
    wasm: &[u8],
) -> anyhow::Result<String> {
    upload_to(http, &pair.api, &pair.token, wasm, None).await
}

/// Uploads a component through the API at `api` (into `namespace`, as the
/// admin may); returns its digest.
pub(crate) async fn upload_to(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    wasm: &[u8],
    namespace: Option<&str>,
) -> anyhow::Result<String> {
    let digest = reef_api::digest_of(wasm);
    let query = namespace
        .map(|ns| format!("?namespace={ns}"))
        .unwrap_or_default();
    let response = http
        .put(format!("{api}/api/v1/blobs/{digest}{query}"))
        .bearer_auth(token)
        .body(wasm.to_vec())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("blob upload: {}", response.status());
    }
    Ok(digest)
}

fn deployment(name: &str, replicas: usize, template: Value) -> Value {
    serde_json::json!({
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "strategy": {"max_surge": 1, "max_unavailable": 0},
            "template": template,
        },
    })
}

/// Scales one deployment through `steps`, waiting for every replica to be
/// Running and ready, and prints the node's RSS at each; stops past `budget_mib`.
async fn fill(
    pair: &Pair,
    http: &reqwest::Client,
    name: &str,
    template: Value,
    steps: &[usize],
    budget_mib: f64,
) -> anyhow::Result<Vec<(usize, f64, f64)>> {
    let mut rows = Vec::new();
    let baseline = rss_mib(pair.node_pid).unwrap_or(0.0);
    for &n in steps {
        let started = Instant::now();
        pair.put(
            http,
            &format!("/api/v1/namespaces/default/deployments/{name}"),
            &deployment(name, n, template.clone()),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let (ready, total, failed) = pair.counts(http, &format!("{name}-")).await?;
            if failed > 0 {
                bail!("{failed} {name} pods failed at {n} (see the node log)");
            }
            if ready >= n && total == n {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {ready}/{n} {name} pods ready after 30 min");
            }
            eprintln!(
                "{name}: {ready}/{n} ready, node RSS {:.0} MiB",
                rss_mib(pair.node_pid).unwrap_or(0.0)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        // Let allocator caches and lazily touched pages settle before reading RSS.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = rss_mib(pair.node_pid).context("the node process is gone")?;
        eprintln!(
            "{name}: {n} ready after {:.0} s, node RSS {rss:.0} MiB",
            started.elapsed().as_secs_f64()
        );
        rows.push((n, rss, (rss - baseline) * 1024.0 / n as f64));
        if rss > budget_mib {
            break;
        }
    }
    Ok(rows)
}

pub async fn density(
    reef: &Path,
    http_steps: &[usize],
    command_steps: &[usize],
) -> anyhow::Result<()> {
    let budget = 2048.0;
    let max = http_steps
        .iter()
        .chain(command_steps)
        .copied()
        .max()
        .unwrap_or(1000);
    let pair = Pair::start(reef, (max + 100) as u32).await?;
    let http = reqwest::Client::new();
    let hello = std::fs::read(crate::examples_dir().join("hello/hello.wasm"))
        .context("examples/hello/hello.wasm (run examples/build.sh)")?;
    let ticker = std::fs::read(crate::examples_dir().join("ticker/ticker.wasm"))
        .context("examples/ticker/ticker.wasm (run examples/build.sh)")?;
    let hello_digest = upload(&pair, &http, &hello).await?;
    let ticker_digest = upload(&pair, &http, &ticker).await?;
    // Wait for the node to register.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{}/api/v1/nodes/n1", pair.api))
        .bearer_auth(&pair.token)
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("the node did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let baseline = rss_mib(pair.node_pid).unwrap_or(0.0);
    println!("one `reef node` (release), its own process; one `reef control-plane` beside it; RSS of the node process only (VmRSS), idle baseline {baseline:.0} MiB; budget {budget:.0} MiB");
    println!();

    // Idle http pods, behind one Service so they are routable.
    pair.put(
        &http,
        "/api/v1/namespaces/default/services/idle",
        &serde_json::json!({
            "kind": "Service",
            "metadata": {"name": "idle", "namespace": "default"},
            "spec": {"selector": {"app": "idle"}, "host": "idle.local", "path": "/"},
        }),
    )
    .await?;
    let http_template = serde_json::json!({
        "component": hello_digest, "cpu": "1m", "memory": "4Mi", "env": {"GREETING": "idle"},
    });
    let http_rows = fill(&pair, &http, "idle", http_template, http_steps, budget).await?;
    // The last of them still answers through the proxy.
    let answered = http
        .get(format!("http://{}/", pair.ingress))
        .header("host", "idle.local")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    println!("| idle http pods (hello, 4Mi budget each, one Service) | node RSS (MiB) | KiB per pod above baseline |");
    println!("|---|---|---|");
    for (n, rss, per) in &http_rows {
        println!("| {n} | {rss:.0} | {per:.1} |");
    }
    println!();
    println!("a request to idle.local with all of them up: {answered}");
    println!();
    pair.put(
        &http,
        "/api/v1/namespaces/default/deployments/idle",
        &deployment(
            "idle",
            0,
            serde_json::json!({"component": hello_digest, "cpu": "1m", "memory": "4Mi"}),
        ),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while pair.counts(&http, "idle-").await?.1 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Sleeping command pods: the ticker prints once, then sleeps an hour.
    let command_template = serde_json::json!({
        "component": ticker_digest, "world": "command", "cpu": "1m", "memory": "4Mi",
        "env": {"INTERVAL_MS": "3600000"},
    });
    let command_rows = fill(
        &pair,
        &http,
        "sleeper",
        command_template,
        command_steps,
        budget,
    )
    .await;
    println!("| sleeping command pods (ticker, one live instance each) | node RSS (MiB) | KiB per pod above baseline |");
    println!("|---|---|---|");
    match command_rows {
        Ok(rows) => {
            for (n, rss, per) in &rows {
                println!("| {n} | {rss:.0} | {per:.1} |");
            }
        }
        Err(e) => println!("| stopped: {e:#} | | |"),
    }
    drop(pair.processes);
    Ok(())
}

/// `wasm` with a custom section holding `nonce` appended: the same program
/// under a new digest, so the node has never compiled it.
fn variant(wasm: &[u8], nonce: &str) -> Vec<u8> {
    let name = b"reef-bench-nonce";
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(nonce.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(payload.len()));
    out.extend(payload);
    out
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Resolves when a pod named `prefix…` is first seen bound, via the API's watch.
async fn bound_at(api: &str, token: &str, prefix: &str, since: u64) -> anyhow::Result<Instant> {
    use futures::StreamExt as _;
    let response = reqwest::Client::new()
        .get(format!(
            "{api}/api/v1/namespaces/default/pods?watch=1&since={since}"
        ))
        .bearer_auth(token)
        .send()
        .await?;
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let pod = &event["object"];
            let named = pod["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix));
            if named && pod["spec"]["node"].is_string() {
                return Ok(Instant::now());
            }
        }
    }
    bail!("the watch ended before {prefix} was bound")
}

async fn revision(api: &str, token: &str) -> anyhow::Result<u64> {
    let list: Value = reqwest::Client::new()
        .get(format!("{api}/api/v1/namespaces/default/pods"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    list["resource_version"]
        .as_u64()
        .context("no resource_version")
}

/// Applies a one-replica deployment `name` of the component in `dir` with a
/// Service on `name.local`; returns ms from the pod bound to the first 200.
async fn bound_to_200(cluster: &Cluster, dir: &Path, name: &str) -> anyhow::Result<f64> {
    let token = std::fs::read_to_string(cluster.home.path().join("data/admin.token"))?
        .trim()
        .to_string();
    let api = format!("http://{}", cluster.api);
    let since = revision(&api, &token).await?;
    let watch = tokio::spawn({
        let (api, token, prefix) = (api.clone(), token.clone(), format!("{name}-"));
        async move { bound_at(&api, &token, &prefix, since).await }
    });
    let manifest = dir.join(format!("{name}.toml"));
    std::fs::write(
        &manifest,
        format!(
            "[[deployment]]\nname = \"{name}\"\nlabels = {{ app = \"{name}\" }}\ncomponent = \"c.wasm\"\n\n\
             [[service]]\nname = \"{name}\"\nselector = {{ app = \"{name}\" }}\nhost = \"{name}.local\"\n"
        ),
    )?;
    cluster.reef(&["apply", "-f", manifest.to_str().context("utf-8 path")?])?;
    let http = reqwest::Client::new();
    let ok = crate::first_200(
        &http,
        &format!("http://{}/", cluster.ingress),
        &format!("{name}.local"),
        Duration::from_secs(60),
    )
    .await?;
    let bound = watch.await??;
    Ok(ok.saturating_duration_since(bound).as_secs_f64() * 1000.0)
}

pub async fn cold_start(reef: &Path, runs: usize) -> anyhow::Result<()> {
    let cluster = Cluster::start(reef)?;
    let hello = std::fs::read(crate::examples_dir().join("hello/hello.wasm"))
        .context("examples/hello/hello.wasm (run examples/build.sh)")?;
    println!("`reef up` (release); each run a hello variant under a digest the node has never seen (a custom section with a nonce); 1 replica + a Service; time from the watch showing the pod bound to the first 200 through the proxy, polled 1 ms apart");
    println!();
    println!("| run | compile from scratch (ms) | cached artifact, not in memory (ms) |");
    println!("|---|---|---|");
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("c.wasm"),
            variant(&hello, &format!("{run}-{:?}", Instant::now())),
        )?;
        let first = bound_to_200(&cluster, dir.path(), &format!("cold{run}")).await?;
        // Gone from the node (its agent says Killed), so its compiled code left
        // memory; the artifact stays on disk.
        cluster.reef(&["delete", "deployment", &format!("cold{run}")])?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events: Value =
                serde_json::from_str(&cluster.reef(&["get", "events", "-o", "json"])?)?;
            let killed = events["items"].as_array().into_iter().flatten().any(|e| {
                e["spec"]["reason"] == "Killed"
                    && e["spec"]["involved"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&format!("cold{run}-")))
            });
            if killed {
                break;
            }
            if Instant::now() > deadline {
                bail!("cold{run} not stopped a minute after its deletion");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = bound_to_200(&cluster, dir.path(), &format!("warm{run}")).await?;
        println!("| {} | {first:.1} | {second:.1} |", run + 1);
        cold.push(first);
        warm.push(second);
    }
    let (c, w) = (crate::median(&mut cold), crate::median(&mut warm));
    println!();
    println!(
        "median of {runs}: compile from scratch {c:.1} ms, cached artifact {w:.1} ms (ratio {:.2})",
        w / c
    );
    Ok(())
}
