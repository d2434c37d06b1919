//! Serverless benchmarks (`reef-bench serverless`), one control-plane member
//! and two nodes as separate processes:
//! - the first request to a function at zero (its artifact cached) beside a
//!   warm request, in the same run;
//! - the autoscaler's reaction to a step load, up and back to zero;
//! - requests/s and latency through the proxy to a pod on the same node and
//!   on another, beside plain hyper and (given `--wasmtime`) `wasmtime serve`;
//! - what load reports from 1,000 simulated nodes cost the control plane.

use crate::node::Pair;
use crate::proc::cpu_seconds;
use crate::{examples_dir, first_200, hyper_hello, median, wrk};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Options<'a> {
    pub reef: &'a Path,
    pub runs: usize,
    pub seconds: u32,
    pub connections: u32,
    pub nodes: usize,
    pub wasmtime: Option<&'a Path>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn apply(pair: &Pair, http: &reqwest::Client, objects: Value) -> anyhow::Result<()> {
    let response = http
        .post(format!("{}/api/v1/apply", pair.api))
        .bearer_auth(&pair.token)
        .json(&objects)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("apply: {}: {}", response.status(), response.text().await?);
    }
    Ok(())
}

async fn upload(pair: &Pair, http: &reqwest::Client, name: &str) -> anyhow::Result<String> {
    let wasm = std::fs::read(examples_dir().join(format!("{name}/{name}.wasm")))
        .with_context(|| format!("examples/{name}/{name}.wasm: run examples/build.sh"))?;
    crate::node::upload(pair, http, &wasm).await
}

/// A deployment and its Service (host `NAME.local`).
fn app(name: &str, digest: &str, extra: Value) -> Value {
    let mut spec = json!({
        "replicas": 1,
        "template": {"component": digest, "memory": "64Mi"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "node_selector" {
                spec["template"]["node_selector"] = v.clone();
            } else {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    json!([
        {"kind": "Deployment", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": spec},
        {"kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"selector": {"app": name}, "host": format!("{name}.local"), "path": "/"}},
    ])
}

async fn deployment(pair: &Pair, http: &reqwest::Client, name: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!(
            "{}/api/v1/namespaces/default/deployments/{name}",
            pair.api
        ))
        .bearer_auth(&pair.token)
        .send()
        .await?
        .json()
        .await?)
}

/// Waits until `ok` holds of the deployment's status.
async fn until(
    pair: &Pair,
    http: &reqwest::Client,
    name: &str,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if ok(&deployment(pair, http, name).await?["status"]) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{name} did not reach the state awaited within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn timed_get(http: &reqwest::Client, url: &str, host: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = http.get(url).header("host", host).send().await?;
    let status = response.status();
    response.bytes().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(started.elapsed())
}

pub async fn run(options: Options<'_>) -> anyhow::Result<()> {
    let mut pair = Pair::start_with(options.reef, 1000, &["--labels", "zone=a"]).await?;
    let (remote_ingress, _) = pair.add_node("n2", &["--labels", "zone=b"]).await?;
    let http = reqwest::Client::new();
    let function = upload(&pair, &http, "function").await?;
    let hello = upload(&pair, &http, "hello").await?;

    // 1. Scale from zero.
    let autoscale = json!({"min": 0, "max": 10, "concurrency": 4, "idle": "1s", "window": "5s", "panic_window": "1s"});
    apply(
        &pair,
        &http,
        app(
            "function",
            &function,
            json!({"autoscale": autoscale, "node_selector": {"zone": "a"}}),
        ),
    )
    .await?;
    let url = format!("http://{}/", pair.ingress);
    let host = "function.local";
    first_200(&http, &url, host, Duration::from_secs(60)).await?;
    let at_zero = |s: &Value| s["replicas"] == 0 && s["autoscale"]["desired"] == 0;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..options.runs {
        until(&pair, &http, "function", at_zero).await?;
        cold.push(ms(timed_get(&http, &url, host).await?));
        warm.push(ms(timed_get(&http, &url, host).await?));
    }
    println!(
        "## Scale from zero ({} runs, artifact cached)\n",
        options.runs
    );
    println!("| request | median (ms) | p99 (ms) |\n|---|---|---|");
    println!(
        "| first, at zero | {:.1} | {:.1} |",
        median(&mut cold.clone()),
        percentile(&cold, 0.99)
    );
    println!(
        "| next, warm | {:.2} | {:.2} |",
        median(&mut warm.clone()),
        percentile(&warm, 0.99)
    );
    println!(
        "\ncold / warm (medians): {:.1}×\n",
        median(&mut cold.clone()) / median(&mut warm.clone())
    );

    // 2. Step load: 32 clients each with one 100 ms request in flight, 4 per pod.
    until(&pair, &http, "function", at_zero).await?;
    let stop = Instant::now() + Duration::from_secs(8);
    let step_started = Instant::now();
    let clients = (0..32).map(|_| {
        let (http, url) = (
            http.clone(),
            format!("http://{}/sleep?ms=100", pair.ingress),
        );
        async move {
            let mut failures = 0;
            while Instant::now() < stop {
                if timed_get(&http, &url, host).await.is_err() {
                    failures += 1;
                }
            }
            failures
        }
    });
    let reach = until(&pair, &http, "function", |s| {
        s["ready_replicas"].as_u64() >= Some(8)
    });
    let (failures, reached) = tokio::join!(futures::future::join_all(clients), reach);
    let failures: usize = failures.into_iter().sum();
    let reached = reached?;
    let stopped = Instant::now();
    until(&pair, &http, "function", at_zero).await?;
    let down = stopped.elapsed();
    println!("## Autoscaler reaction (32 requests in flight, concurrency 4, idle 1 s)\n");
    println!("| step | time |\n|---|---|");
    println!("| load starts → 8 ready pods | {:.0} ms |", ms(reached));
    println!("| load stops → 0 pods | {:.0} ms (idle is 1 s) |", ms(down));
    println!(
        "\nfailed requests during the step: {failures} (load ran {:.1} s)\n",
        step_started.elapsed().as_secs_f64()
    );

    // 3. Throughput to a local and a remote pod, through n1's ingress.
    apply(
        &pair,
        &http,
        app("local", &hello, json!({"node_selector": {"zone": "a"}})),
    )
    .await?;
    apply(
        &pair,
        &http,
        app("remote", &hello, json!({"node_selector": {"zone": "b"}})),
    )
    .await?;
    let local = format!("http://{}/world", pair.ingress);
    first_200(&http, &local, "local.local", Duration::from_secs(60)).await?;
    first_200(&http, &local, "remote.local", Duration::from_secs(60)).await?;
    let _ = remote_ingress;
    let hyper_addr = hyper_hello::start().await?;
    let mut servers = vec![
        (
            "plain hyper".to_string(),
            format!("http://{hyper_addr}/world"),
            "x",
        ),
        (
            "reef → pod on this node".to_string(),
            local.clone(),
            "local.local",
        ),
        (
            "reef → pod on another node".to_string(),
            local.clone(),
            "remote.local",
        ),
    ];
    let _wasmtime = match options.wasmtime {
        Some(wasmtime) => {
            let (process, url) =
                crate::wasmtime_serve(wasmtime, &examples_dir().join("hello/hello.wasm")).await?;
            servers.push(("wasmtime serve hello.wasm".to_string(), url, "x"));
            Some(process)
        }
        None => None,
    };
    for (_, url, host) in &servers {
        wrk::run(url, host, options.connections, 2)?;
    }
    println!(
        "## Through the proxy (wrk -t2 -c{} -d{}s, hello.wasm)\n",
        options.connections, options.seconds
    );
    println!("| server | requests/s | p50 (ms) | p99 (ms) | errors | vs plain hyper |\n|---|---|---|---|---|---|");
    let mut hyper = None;
    for (name, url, host) in &servers {
        let r = wrk::run(url, host, options.connections, options.seconds)?;
        let base = *hyper.get_or_insert(r.requests_per_sec);
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.3} |",
            r.requests_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.requests_per_sec / base
        );
    }
    println!();

    // 4. Load reports from simulated nodes, each once a second.
    load_reports(&pair, &http, options.nodes, options.seconds).await
}

/// Raft's last log index on the member, from /metrics.
async fn last_log_index(pair: &Pair, http: &reqwest::Client) -> anyhow::Result<u64> {
    let text = http
        .get(format!("{}/metrics", pair.api))
        .bearer_auth(&pair.token)
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("reef_store_last_log_index "))
        .and_then(|v| v.trim().parse().ok())
        .context("no reef_store_last_log_index in /metrics")
}

async fn load_reports(
    pair: &Pair,
    http: &reqwest::Client,
    nodes: usize,
    seconds: u32,
) -> anyhow::Result<()> {
    let report = |node: usize| {
        json!({"deployments": (0..5).map(|d| json!({
            "namespace": "default",
            "deployment": format!("fn-{d}"),
            "in_flight": (node + d) % 7,
            "waiting": 0,
            "requests": node * 1000 + d,
        })).collect::<Vec<_>>()})
    };
    let measure = |sending: bool| async move {
        let cpu0 = cpu_seconds(pair.cp_pid).unwrap_or(0.0);
        let log0 = last_log_index(pair, http).await?;
        let started = Instant::now();
        let mut latencies = Vec::new();
        let mut errors = 0usize;
        for second in 0..seconds {
            let tick = started + Duration::from_secs(u64::from(second));
            tokio::time::sleep_until(tick.into()).await;
            if !sending {
                continue;
            }
            // Each node once a second, spread over the second, 64 at a time.
            let sends = futures::stream::iter(0..nodes).map(|i| {
                let body = report(i);
                async move {
                    let at = Instant::now();
                    let ok = http
                        .put(format!("{}/api/v1/nodes/sim-{i}/load", pair.api))
                        .bearer_auth(&pair.token)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    (ok, ms(at.elapsed()))
                }
            });
            use futures::StreamExt as _;
            let results: Vec<(bool, f64)> = sends.buffer_unordered(64).collect().await;
            for (ok, latency) in results {
                errors += usize::from(!ok);
                latencies.push(latency);
            }
        }
        tokio::time::sleep_until((started + Duration::from_secs(u64::from(seconds))).into()).await;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pair.cp_pid).unwrap_or(0.0) - cpu0;
        let entries = last_log_index(pair, http).await? - log0;
        anyhow::Ok((cpu / elapsed, entries as f64 / elapsed, latencies, errors))
    };
    let (idle_cpu, idle_entries, _, _) = measure(false).await?;
    let (cpu, entries, latencies, errors) = measure(true).await?;
    println!("## Load reports: {nodes} simulated nodes, one report each per second, 5 deployments each ({seconds} s)\n");
    println!("| | control-plane CPU (cores) | Raft entries/s | report p50 (ms) | report p99 (ms) | errors |\n|---|---|---|---|---|---|");
    println!("| no reports | {idle_cpu:.3} | {idle_entries:.1} | - | - | - |");
    println!(
        "| {nodes} nodes reporting | {cpu:.3} | {entries:.1} | {:.2} | {:.2} | {errors} |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    Ok(())
}
