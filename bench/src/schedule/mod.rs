//! Scheduling throughput: one `reef control-plane` member, `--nodes` simulated nodes
//! registered through the API with no agents behind them (this process renews their
//! leases), and `--pods` bare Pods created through `POST /api/v1/apply` in batches.
//! A pod watch opened before the first create timestamps each binding as it arrives.
//!
//! Per pod: `created` = the apply that held it was acknowledged; `bound` = a watch
//! delivered it with `spec.node` set (so the bind is committed and applied).
//!
//! The pods are spread over `--namespaces` tenants (by default one per apply batch),
//! each followed by its own watch: the store drops a watcher that falls more than
//! about a thousand events behind, and a single all-pods watch is dropped when the
//! scheduler binds a few thousand pods at once (`--namespaces 1` shows that; binds
//! then seen only through a relist are counted as "late").

mod control_plane;
mod sim_nodes;
mod watch;

use crate::proc::{cpu_seconds, rss_mib};
use crate::replicated::{free_port, wait_for_file, Processes};
use anyhow::{bail, Context};
use control_plane::{get_json, put, ControlPlane};
use reef_api::quantity::{Cpu, Memory};
use serde_json::{json, Value};
use sim_nodes::{register_nodes, renew_leases, LeaseStats};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use watch::{watch_pods, Seen};

/// Pod names start with this, so the watch ignores anything else.
const PREFIX: &str = "sched-";
const NODE_CPU: &str = "4";
const NODE_MEMORY: &str = "8Gi";
const NODE_PODS: u64 = 110;
const POD_CPU: &str = "100m";
const POD_MEMORY: &str = "64Mi";
/// How often each simulated node renews its lease (as a node agent's heartbeat).
const LEASE_PERIOD: Duration = Duration::from_secs(10);
/// Give up when no pod has been bound for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

pub struct Options {
    pub nodes: usize,
    pub pods: usize,
    pub batch: usize,
    /// 0: one per apply batch.
    pub namespaces: usize,
}

/// "2026-11-25T18:41:07.840554Z" (UTC, as tracing writes it) to a time.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

fn pod_name(i: usize) -> String {
    format!("{PREFIX}pod-{i:05}")
}

/// A quantity the server returns as a string ("100m", "64Mi") or a plain number.
fn quantity<Q: std::str::FromStr>(v: &Value, value: fn(Q) -> u64) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok().map(value),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn run_once(reef: &Path, options: &Options) -> anyhow::Result<RunResult> {
    let Options {
        nodes,
        pods,
        batch,
        namespaces,
    } = *options;
    let batch = batch.max(1);
    let namespaces = if namespaces == 0 {
        pods.div_ceil(batch).max(1)
    } else {
        namespaces
    };
    let cp = ControlPlane::start(reef).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(60))
        .build()?;
    let watch_http = reqwest::Client::new();

    let t = Instant::now();
    register_nodes(&http, &cp, nodes).await?;
    let register_secs = t.elapsed().as_secs_f64();
    eprintln!("registered {nodes} nodes in {register_secs:.1} s");
    let leases = Arc::new(Mutex::new(LeaseStats::default()));
    let renewer = tokio::spawn(renew_leases(
        http.clone(),
        cp.url.clone(),
        cp.token.clone(),
        nodes,
        leases.clone(),
    ));

    // Namespaces are tenants (without quotas).
    let namespace_names: Vec<String> = (0..namespaces).map(|i| format!("{PREFIX}{i}")).collect();
    for ns in &namespace_names {
        let tenant = json!({"kind": "Tenant", "metadata": {"name": ns}, "spec": {}});
        put(
            &http,
            &format!("{}/api/v1/tenants/{ns}", cp.url),
            &cp.token,
            &tenant,
        )
        .await?;
    }
    // A namespace's pods may only name components uploaded into it; the
    // simulated nodes never fetch them.
    let wasm = std::fs::read(crate::examples_dir().join("hello/hello.wasm"))
        .context("examples/hello/hello.wasm (run examples/build.sh)")?;
    let mut digest = reef_api::digest_of(&wasm);
    for ns in &namespace_names {
        digest = crate::node::upload_to(&http, &cp.url, &cp.token, &wasm, Some(ns)).await?;
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let list = get_json(&http, &format!("{}/api/v1/pods", cp.url), &cp.token).await?;
    let since = list["resource_version"]
        .as_u64()
        .context("list without resource_version")?;
    let watchers: Vec<_> = namespace_names
        .iter()
        .map(|ns| {
            tokio::spawn(watch_pods(
                watch_http.clone(),
                cp.url.clone(),
                cp.token.clone(),
                ns.clone(),
                since,
                seen.clone(),
            ))
        })
        .collect();
    // Let the watch connect and the scheduler settle after the node registrations.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cpu_before = cpu_seconds(cp.pid);
    let start = Instant::now();
    let start_wall = SystemTime::now();
    let mut created: Vec<Instant> = Vec::with_capacity(pods);
    let mut apply_ms: Vec<f64> = Vec::new();
    for first in (0..pods).step_by(batch) {
        let last = (first + batch).min(pods);
        let namespace = &namespace_names[(first / batch) % namespaces];
        let items: Vec<Value> = (first..last)
            .map(|i| {
                json!({
                    "kind": "Pod",
                    "metadata": {"name": pod_name(i), "namespace": namespace},
                    "spec": {"component": digest, "cpu": POD_CPU, "memory": POD_MEMORY},
                })
            })
            .collect();
        let sent = Instant::now();
        let response = http
            .post(format!("{}/api/v1/apply", cp.url))
            .bearer_auth(&cp.token)
            .json(&items)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "apply of pods {first}..{last}: {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let acked = Instant::now();
        apply_ms.push((acked - sent).as_secs_f64() * 1000.0);
        created.extend(std::iter::repeat_n(acked, last - first));
    }
    let created_all = created.last().copied().unwrap_or(start);
    eprintln!(
        "created {pods} pods in {:.2} s",
        (created_all - start).as_secs_f64()
    );

    // Wait for every pod to be bound, printing progress once a second.
    let mut last_progress = (0usize, Instant::now());
    let mut timeline: Vec<usize> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bound = seen.lock().unwrap_or_else(|e| e.into_inner()).bound.len();
        if bound != last_progress.0 {
            last_progress = (bound, Instant::now());
        }
        let secs = start.elapsed().as_secs() as usize;
        while timeline.len() < secs {
            timeline.push(bound);
            eprintln!("t={:>3}s bound {bound}/{pods}", timeline.len());
        }
        if bound >= pods {
            break;
        }
        if last_progress.1.elapsed() > IDLE_LIMIT {
            eprintln!("no binding for {IDLE_LIMIT:?}: giving up with {bound}/{pods} bound");
            break;
        }
    }
    let cpu_after = cpu_seconds(cp.pid);
    let elapsed_run = start.elapsed().as_secs_f64();
    for watcher in &watchers {
        watcher.abort();
    }
    // Steady state: everything bound, only the leases (100 writes/s for 1,000 nodes).
    let idle = Duration::from_secs(10);
    let idle_before = cpu_seconds(cp.pid);
    tokio::time::sleep(idle).await;
    let idle_cpu = idle_before
        .zip(cpu_seconds(cp.pid))
        .map(|(a, b)| (b - a) / idle.as_secs_f64());

    // Final state, from lists.
    let final_pods = get_json(&http, &format!("{}/api/v1/pods", cp.url), &cp.token).await?;
    let final_nodes = get_json(&http, &format!("{}/api/v1/nodes", cp.url), &cp.token).await?;
    renewer.abort();
    let mut used: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let mut unbound = 0usize;
    for pod in final_pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        match pod["spec"]["node"].as_str() {
            Some(node) => {
                let entry = used.entry(node.to_string()).or_default();
                entry.0 += quantity(&pod["spec"]["cpu"], Cpu::millis).unwrap_or(0);
                entry.1 += quantity(&pod["spec"]["memory"], Memory::bytes).unwrap_or(0);
                entry.2 += 1;
            }
            None if name.starts_with(PREFIX) => unbound += 1,
            None => {}
        }
    }
    let mut over = 0usize;
    let mut not_ready = 0usize;
    let mut per_node: Vec<u64> = Vec::new();
    for node in final_nodes["items"].as_array().into_iter().flatten() {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let alloc = &node["spec"]["allocatable"];
        let (cpu, memory, slots) = used.get(name).copied().unwrap_or_default();
        let fits = quantity(&alloc["cpu"], Cpu::millis).is_some_and(|a| cpu <= a)
            && quantity(&alloc["memory"], Memory::bytes).is_some_and(|a| memory <= a)
            && alloc["pods"].as_u64().is_some_and(|a| slots <= a);
        if !fits {
            over += 1;
        }
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if !ready {
            not_ready += 1;
        }
        if name.starts_with("sim-") {
            per_node.push(slots);
        }
    }
    per_node.sort_unstable();

    // Latencies.
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let mut latencies: Vec<f64> = Vec::new();
    let mut before_ack = 0usize;
    let mut last_bind = start;
    for (i, at) in created.iter().enumerate() {
        if let Some((bound_at, _)) = seen.bound.get(&pod_name(i)) {
            last_bind = last_bind.max(*bound_at);
            if bound_at < at {
                before_ack += 1;
            }
            latencies.push(bound_at.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let bound = latencies.len();
    let window = (last_bind - start).as_secs_f64();
    let create_window = (created_all - start).as_secs_f64();
    apply_ms.sort_by(f64::total_cmp);

    // Scheduler passes that bound pods, from its log ("bound N pod(s)").
    let log = std::fs::read_to_string(cp.log_path()).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("bound ")) {
        eprintln!("control plane: {line}");
    }
    // Each line starts with its RFC 3339 timestamp: when that batch had committed.
    let bind_lines: Vec<(Option<SystemTime>, u64)> = log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("bound ")? + 6..];
            let n = rest.split_whitespace().next()?.parse().ok()?;
            let at = l.split_whitespace().next().and_then(parse_rfc3339);
            Some((at, n))
        })
        .collect();
    let mut passes: Vec<u64> = bind_lines.iter().map(|(_, n)| *n).collect();
    passes.sort_unstable();
    // The scheduler's own view: first create sent → its last bind committed.
    let last_logged = bind_lines.iter().filter_map(|(at, _)| *at).max();
    let committed_window = last_logged.and_then(|t| t.duration_since(start_wall).ok());
    let watch_lag = last_logged.map(|t| {
        let seen = start_wall + (last_bind - start);
        seen.duration_since(t)
            .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
    });
    let warning_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    for line in warning_lines.iter().take(5) {
        eprintln!("control plane warned: {line}");
    }
    let warnings = warning_lines.len();

    let lease = leases.lock().unwrap_or_else(|e| e.into_inner());
    let result = RunResult {
        setup: format!(
            "1 control-plane member (release build, fsync on){}, {nodes} simulated nodes ({NODE_CPU} cpu, {NODE_MEMORY}, {NODE_PODS} pod slots each; leases renewed every {} s by the bench), {pods} bare pods ({POD_CPU}, {POD_MEMORY}) created {batch} per `POST /api/v1/apply` into {namespaces} namespace(s), one pod watch per namespace",
            cp.node_grace.map(|g| format!(" with --node-grace {g}")).unwrap_or_default(),
            LEASE_PERIOD.as_secs(),
        ),
        pods,
        bound,
        window,
        create_rate: pods as f64 / create_window.max(1e-9),
        apply_p50: percentile(&apply_ms, 0.5),
        apply_max: apply_ms.last().copied().unwrap_or(0.0),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or(0.0),
        unbound,
        over,
        logged_rate: committed_window
            .map(|w| passes.iter().sum::<u64>() as f64 / w.as_secs_f64().max(1e-9)),
        watch_lag,
        per_node: (
            per_node.first().copied().unwrap_or(0),
            per_node.last().copied().unwrap_or(0),
        ),
        passes: (!passes.is_empty()).then(|| {
            (
                passes.len(),
                passes[passes.len() / 2],
                passes[passes.len() - 1],
            )
        }),
        cpu_share: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) / elapsed_run.max(1e-9)),
        idle_share: idle_cpu,
        rss: rss_mib(cp.pid),
        leases: (lease.ok, lease.failed, lease.max_gap.as_secs_f64()),
        not_ready,
        register_secs,
        reconnects: seen.reconnects,
        relists: seen.relists,
        late: seen.late,
        before_ack,
        warnings,
        timeline,
    };
    drop(cp.processes);
    Ok(result)
}

struct RunResult {
    setup: String,
    pods: usize,
    bound: usize,
    /// Seconds from the first create sent to the last bind seen.
    window: f64,
    create_rate: f64,
    apply_p50: f64,
    apply_max: f64,
    p50: f64,
    p99: f64,
    max: f64,
    unbound: usize,
    over: usize,
    /// Pods bound per second by the scheduler's log: first create sent → the log line
    /// of its last bind batch (which it writes once the batch has committed).
    logged_rate: Option<f64>,
    /// Seconds from that log line to the bench's watch delivering the last bind.
    watch_lag: Option<f64>,
    /// Fewest and most pods on one simulated node.
    per_node: (u64, u64),
    /// Scheduler passes that bound pods: count, median and largest pods per pass.
    passes: Option<(usize, u64, u64)>,
    /// Control-plane CPU (cores) from the first create to the last bind seen.
    cpu_share: Option<f64>,
    /// Control-plane CPU (cores) over 10 s afterwards, with only lease renewals.
    idle_share: Option<f64>,
    rss: Option<f64>,
    /// Lease renewals ok, failed, and the longest gap between one node's renewals (s).
    leases: (u64, u64, f64),
    not_ready: usize,
    register_secs: f64,
    reconnects: usize,
    relists: usize,
    late: usize,
    before_ack: usize,
    warnings: usize,
    timeline: Vec<usize>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.bound as f64 / self.window.max(1e-9)
    }
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or("?".to_string(), |v| format!("{:.*}", digits, v * scale))
}

/// `runs` runs, each against a fresh control plane; one row per run, then the median.
pub async fn run(reef: &Path, options: &Options, runs: usize) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for r in 0..runs.max(1) {
        eprintln!("run {}", r + 1);
        results.push(run_once(reef, options).await?);
    }
    println!("{}", results[0].setup);
    println!();
    println!("| run | pods bound | bound and committed / s (first create → last bind) | created → bound p50 / p99 / max (ms) | unbound | nodes over allocatable | pods per node min / max | pods created / s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.0} / {:.0} / {:.0} | {} | {} | {} / {} | {} |",
            i + 1,
            thousands(r.bound as u64),
            thousands(r.rate().round() as u64),
            r.p50,
            r.p99,
            r.max,
            r.unbound,
            r.over,
            r.per_node.0,
            r.per_node.1,
            thousands(r.create_rate.round() as u64),
        );
    }
    println!();
    println!("| run | bound / s by the scheduler's log (first create → last bind batch logged) | last bind logged → seen on the watch (ms) | scheduler passes that bound pods (median / max pods per pass) | control-plane CPU while scheduling (cores) | control-plane CPU afterwards, leases only (cores) | RSS (MiB) | lease renewals ok / failed; longest gap (s) | nodes not Ready | apply of one batch p50 / max (ms) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {}; {:.1} | {} | {:.0} / {:.0} |",
            i + 1,
            r.logged_rate
                .map_or("?".to_string(), |v| thousands(v.round() as u64)),
            opt(r.watch_lag, 1000.0, 0),
            r.passes.map_or("?".to_string(), |(n, median, max)| format!(
                "{n} ({median} / {max})"
            )),
            opt(r.cpu_share, 1.0, 2),
            opt(r.idle_share, 1.0, 2),
            opt(r.rss, 1.0, 0),
            r.leases.0,
            r.leases.1,
            r.leases.2,
            r.not_ready,
            r.apply_p50,
            r.apply_max,
        );
    }
    println!();
    for (i, r) in results.iter().enumerate() {
        let steps: Vec<String> = r
            .timeline
            .iter()
            .enumerate()
            .map(|(s, n)| format!("{}s:{n}", s + 1))
            .collect();
        println!(
            "run {}: registering the nodes took {:.1} s; watch reconnects {}, relists {} ({} binds first seen in a relist); {} pods seen bound before their apply was acknowledged (counted as 0 ms); control-plane warnings/errors logged: {}; bound by second since the first create: {}",
            i + 1,
            r.register_secs,
            r.reconnects,
            r.relists,
            r.late,
            r.before_ack,
            r.warnings,
            steps.join(" ")
        );
    }
    let mut rates: Vec<f64> = results.iter().map(RunResult::rate).collect();
    let mut p50s: Vec<f64> = results.iter().map(|r| r.p50).collect();
    let mut p99s: Vec<f64> = results.iter().map(|r| r.p99).collect();
    println!();
    println!(
        "median of {} run(s): {} pods bound and committed per second; created → bound p50 {:.0} ms, p99 {:.0} ms; {} of {} pods left unbound in total; {} node(s) over allocatable in total",
        results.len(),
        thousands(crate::median(&mut rates).round() as u64),
        crate::median(&mut p50s),
        crate::median(&mut p99s),
        results.iter().map(|r| r.unbound).sum::<usize>(),
        results.iter().map(|r| r.pods).sum::<usize>(),
        results.iter().map(|r| r.over).sum::<usize>(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn tracing_timestamps_parse() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.500000Z"),
            Some(t + Duration::from_millis(500))
        );
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn quantities_parse_strings_and_numbers() {
        assert_eq!(quantity(&json!("100m"), Cpu::millis), Some(100));
        assert_eq!(quantity(&json!("4"), Cpu::millis), Some(4000));
        assert_eq!(quantity(&json!("8Gi"), Memory::bytes), Some(8 << 30));
        assert_eq!(quantity(&json!(5), Memory::bytes), Some(5));
        assert_eq!(quantity::<Cpu>(&json!("12 parsecs"), Cpu::millis), None);
    }
}
