//! `reef-bench`: measures reef against baselines run in the same process, on the same
//! machine, at the same time, and prints markdown tables for docs/benchmarks.md.
//!
//! ```text
//! reef-bench apply-latency [--reef PATH] [--runs 10]
//! reef-bench pull-start [--reef PATH] [--runs 10]
//! reef-bench shim-start [--reef PATH] [--runs 1000] [--connections C]   (root, containerd, runc, gcc)
//! reef-bench proxy [--reef PATH] [--seconds 10] [--connections 32] [--rounds 3]
//! reef-bench replicated-writes [--reef PATH] [--seconds 10] [--leader-only] [--clients 1,16]   (needs etcd: apt-get install etcd-server)
//! reef-bench failover [--reef PATH] [--runs 10]
//! reef-bench watch-fanout [--reef PATH] [--seconds 10]
//! reef-bench security-cost --baseline PATH [--reef PATH] [--seconds 10]   (PATH: a reef built before identities, e.g. 7bd1299)
//! reef-bench schedule [--reef PATH] [--nodes 1000] [--pods 10000] [--batch 500] [--namespaces N] [--runs 3]
//! reef-bench density [--reef PATH] [--steps 1000,2500,5000,10000] [--command-steps 500,1000,2000,4000]
//! reef-bench cold-start [--reef PATH] [--runs 10]
//! ```
//! `proxy --wasmtime PATH` adds `wasmtime serve` (wasmtime-cli 48.0.8) to the comparison.
//! `--reef` defaults to the release binary in `$CARGO_TARGET_DIR` (or `target/`).

mod cluster;
mod etcd;
mod hyper_hello;
mod load;
mod node;
mod proc;
mod pull_start;
mod replicated;
mod schedule;
mod security_cost;
mod serverless;
mod shim_start;
mod timeline;
mod watch_fanout;
mod wrk;

use anyhow::{bail, Context};
use cluster::Cluster;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn default_reef() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/reef")
}

/// What to measure; each prints a markdown table for docs/benchmarks.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    /// `reef apply` returned → first 200, with a timeline of each step.
    ApplyLatency,
    /// Requests/s through the node proxy vs plain hyper (and `wasmtime serve`).
    Proxy,
    /// Writes/s and latency, reef vs etcd, 3 members each (needs etcd).
    ReplicatedWrites,
    /// kill -9 of the leader → first acknowledged write, reef vs etcd.
    Failover,
    /// Writes/s with 1,000 watchers, reef vs etcd.
    WatchFanout,
    /// The cost of identities and authorization (needs --baseline).
    SecurityCost,
    /// Pods bound and committed per second onto simulated nodes.
    Schedule,
    /// Pods per node: memory and start time as they grow.
    Density,
    /// Pod bound → first 200.
    ColdStart,
    /// Apply → first 200 for a component from an OCI registry vs an upload.
    PullStart,
    /// `ctr run` through containerd-shim-reef-v1 vs runc (root, containerd, gcc).
    ShimStart,
    /// Scale from zero, autoscaling and activation under load.
    Serverless,
}

/// `reef-bench`: measures reef against a baseline run in the same process,
/// on the same machine, at the same time.
#[derive(clap::Parser)]
#[command(name = "reef-bench", version)]
struct Args {
    command: Bench,
    /// The reef binary to measure [default: the release build in $CARGO_TARGET_DIR or target/].
    #[arg(long, default_value_os_t = default_reef())]
    reef: PathBuf,
    /// Runs to time; each bench has its own default.
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds per measured cell (proxy, replicated-writes, watch-fanout, security-cost, serverless).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Connections or concurrent clients (proxy, serverless, shim-start).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Rounds (proxy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write to the leader only (replicated-writes).
    #[arg(long)]
    leader_only: bool,
    /// Simulated nodes (schedule, serverless).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to schedule (schedule).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Pods per apply batch (schedule).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Namespaces the pods spread over (schedule; 0: one).
    #[arg(long, default_value_t = 0)]
    namespaces: usize,
    /// Http pods per step (density).
    #[arg(long, value_delimiter = ',', default_value = "1000,2500,5000,10000")]
    steps: Vec<usize>,
    /// Command pods per step (density).
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,4000")]
    command_steps: Vec<usize>,
    /// Client counts to run (replicated-writes) [default: all].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// A wasmtime-cli 48.0.8 binary, to add `wasmtime serve` (proxy, serverless).
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// A reef built before identities, e.g. 7bd1299 (security-cost).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Polls `url` with `host` until it answers 200; returns when it did.
pub(crate) async fn first_200(
    http: &reqwest::Client,
    url: &str,
    host: &str,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(response) = http.get(url).header("host", host).send().await {
            if response.status().as_u16() == 200 {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!("{host} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Time from `reef apply` returning to the first 200 through the proxy, for a new
/// deployment + service each run. Run 1 compiles the component; later runs reuse it.
async fn apply_latency(args: &Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(&args.reef)?;
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        examples_dir().join("hello/hello.wasm"),
        dir.path().join("hello.wasm"),
    )
    .context("examples/hello/hello.wasm (run examples/build.sh)")?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/", cluster.ingress);
    let timeline = timeline::Timeline::default();
    let watches = timeline.follow(&cluster.api, &cluster.token()?, "default");
    // Each step as ms after `reef apply` started (the pods are created while it runs).
    let steps: Vec<&str> = timeline::STEPS.to_vec();
    println!(
        "| run | `reef apply` wall time (ms) | apply returned → first 200 (ms) | {} , first 200: ms after apply began |",
        steps.join(", ")
    );
    println!("|---|---|---|---|");
    let mut to_200 = Vec::new();
    let mut applies = Vec::new();
    let mut step_ms: Vec<Vec<f64>> = vec![Vec::new(); steps.len() + 1];
    let runs = args.runs.unwrap_or(10);
    for run in 0..runs {
        let manifest = dir.path().join(format!("app-{run}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[[deployment]]\nname = \"hello-{run}\"\nlabels = {{ app = \"hello-{run}\" }}\ncomponent = \"hello.wasm\"\n\n\
                 [[service]]\nname = \"hello-{run}\"\nselector = {{ app = \"hello-{run}\" }}\nhost = \"hello-{run}.local\"\n"
            ),
        )?;
        let path = manifest.to_str().context("utf-8 path")?;
        let start = Instant::now();
        cluster.reef(&["apply", "-f", path])?;
        let returned = Instant::now();
        let answered = first_200(
            &http,
            &url,
            &format!("hello-{run}.local"),
            Duration::from_secs(60),
        )
        .await?;
        let apply_ms = (returned - start).as_secs_f64() * 1000.0;
        let ms = (answered - returned).as_secs_f64() * 1000.0;
        let since_start = |at: Instant| at.saturating_duration_since(start).as_secs_f64() * 1000.0;
        let app = format!("hello-{run}");
        let mut cells = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match timeline.at(&app, step) {
                Some(at) => {
                    step_ms[i].push(since_start(at));
                    cells.push(format!("{:.1}", since_start(at)));
                }
                None => cells.push("—".into()),
            }
        }
        step_ms[steps.len()].push(since_start(answered));
        cells.push(format!("{:.1}", since_start(answered)));
        println!(
            "| {} | {apply_ms:.1} | {ms:.1} | {} |",
            run + 1,
            cells.join(" / ")
        );
        applies.push(apply_ms);
        to_200.push(ms);
    }
    for watch in watches {
        watch.abort();
    }
    let first = to_200[0];
    let max = to_200.iter().copied().fold(0.0, f64::max);
    println!();
    println!(
        "median of {}: apply {:.1} ms, apply → first 200 {:.1} ms (max {max:.1} ms; run 1, which compiles the component, {first:.1} ms)",
        runs,
        median(&mut applies),
        median(&mut to_200)
    );
    let medians: Vec<String> = step_ms
        .iter_mut()
        .map(|v| format!("{:.1}", median(v)))
        .collect();
    println!(
        "median ms after apply began: {}, first 200: {}",
        steps
            .iter()
            .zip(&medians)
            .map(|(s, m)| format!("{s} {m}"))
            .collect::<Vec<_>>()
            .join(", "),
        medians[steps.len()]
    );
    Ok(())
}

/// `wasmtime serve` (wasmtime-cli) serving `wasm` with pooling, on a free port.
pub(crate) async fn wasmtime_serve(
    wasmtime: &Path,
    wasm: &Path,
) -> anyhow::Result<(replicated::Processes, String)> {
    let port = replicated::free_port()?;
    let child = std::process::Command::new(wasmtime)
        .args([
            "serve",
            "-Scli",
            "-Opooling-allocator",
            "--env",
            "GREETING=Hello",
        ])
        .arg(format!("--addr=127.0.0.1:{port}"))
        .arg(wasm)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} serve", wasmtime.display()))?;
    let url = format!("http://127.0.0.1:{port}/world");
    let processes = replicated::Processes(vec![Some(child)]);
    first_200(
        &reqwest::Client::new(),
        &url,
        "hello.local",
        Duration::from_secs(60),
    )
    .await?;
    Ok((processes, url))
}

/// Requests/s through the reef proxy to hello, beside a plain hyper server (and,
/// given `--wasmtime`, `wasmtime serve` on the same component), with the same wrk
/// settings, interleaved so drift on a shared machine hits all alike.
async fn proxy(args: &Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(&args.reef)?;
    let app = examples_dir().join("hello/app.toml");
    cluster.reef(&["apply", "-f", app.to_str().context("utf-8 path")?])?;
    let http = reqwest::Client::new();
    let reef_url = format!("http://{}/world", cluster.ingress);
    first_200(&http, &reef_url, "hello.local", Duration::from_secs(60)).await?;
    let hyper_addr = hyper_hello::start().await?;
    let mut servers = vec![
        (
            "plain hyper".to_string(),
            format!("http://{hyper_addr}/world"),
        ),
        ("reef proxy → hello.wasm".to_string(), reef_url),
    ];
    let _wasmtime = match &args.wasmtime {
        Some(wasmtime) => {
            let (process, url) =
                wasmtime_serve(wasmtime, &examples_dir().join("hello/hello.wasm")).await?;
            servers.push(("wasmtime serve hello.wasm".to_string(), url));
            Some(process)
        }
        None => None,
    };
    // Warm all up.
    for (_, url) in &servers {
        wrk::run(url, "hello.local", args.connections, 2)?;
    }
    println!(
        "wrk -t2 -c{} -d{}s, {} interleaved rounds",
        args.connections, args.seconds, args.rounds
    );
    println!();
    println!("| server | round | requests/s | p50 (ms) | p99 (ms) | errors |");
    println!("|---|---|---|---|---|---|");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for round in 1..=args.rounds {
        for (i, (name, url)) in servers.iter().enumerate() {
            let r = wrk::run(url, "hello.local", args.connections, args.seconds)?;
            println!(
                "| {name} | {round} | {:.0} | {:.2} | {:.2} | {} |",
                r.requests_per_sec, r.p50_ms, r.p99_ms, r.errors
            );
            rates[i].push(r.requests_per_sec);
            p50s[i].push(r.p50_ms);
            p99s[i].push(r.p99_ms);
        }
    }
    let hyper = median(&mut rates[0].clone());
    println!();
    println!(
        "| server (median of {} rounds) | requests/s | p50 (ms) | p99 (ms) | vs plain hyper |",
        args.rounds
    );
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in servers.iter().enumerate() {
        let rps = median(&mut rates[i]);
        println!(
            "| {name} | {rps:.0} | {:.2} | {:.2} | {:.3} |",
            median(&mut p50s[i]),
            median(&mut p99s[i]),
            rps / hyper
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    if !args.reef.exists() {
        bail!(
            "{} not found: build it with `cargo build --release` or pass --reef PATH",
            args.reef.display()
        );
    }
    match args.command {
        Bench::ApplyLatency => apply_latency(&args).await,
        Bench::Proxy => proxy(&args).await,
        Bench::ReplicatedWrites => {
            replicated::writes(
                &args.reef,
                u64::from(args.seconds),
                args.leader_only,
                args.clients.as_deref(),
            )
            .await
        }
        Bench::Failover => replicated::failover(&args.reef, args.runs.unwrap_or(10)).await,
        Bench::WatchFanout => watch_fanout::run(&args.reef, u64::from(args.seconds)).await,
        Bench::SecurityCost => {
            let baseline = args.baseline.clone().context(
                "security-cost needs --baseline PATH: a reef binary built before identities",
            )?;
            security_cost::run(&args.reef, &baseline, u64::from(args.seconds)).await
        }
        Bench::Schedule => {
            let options = schedule::Options {
                nodes: args.nodes,
                pods: args.pods,
                batch: args.batch,
                namespaces: args.namespaces,
            };
            schedule::run(&args.reef, &options, args.runs.unwrap_or(3)).await
        }
        Bench::Density => node::density(&args.reef, &args.steps, &args.command_steps).await,
        Bench::ColdStart => node::cold_start(&args.reef, args.runs.unwrap_or(10)).await,
        Bench::PullStart => {
            pull_start::pull_start(&args.reef, args.runs.unwrap_or(10).max(2)).await
        }
        Bench::ShimStart => shim_start::run(
            &args.reef,
            args.runs.unwrap_or(1000).max(1),
            args.connections.max(1) as usize,
        ),
        Bench::Serverless => {
            serverless::run(serverless::Options {
                reef: &args.reef,
                runs: args.runs.unwrap_or(20),
                seconds: args.seconds,
                connections: args.connections,
                nodes: args.nodes,
                wasmtime: args.wasmtime.as_deref(),
            })
            .await
        }
    }
}
