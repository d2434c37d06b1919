//! Watch fan-out: writes/s with and without 1,000 watchers on one member,
//! reef beside etcd: watchers of every write, watchers of prefixes no write
//! touches, and what becomes of a watcher that never reads.

use crate::etcd::EtcdCluster;
use crate::load::{base64, load, LoadResult, Target};
use crate::replicated::{ClusterOptions, ReefCluster};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCHERS: usize = 1000;
const CLIENTS: usize = 16;

/// What the watchers watch.
#[derive(Clone, Copy)]
enum Scope {
    /// Every key the writers write: each watcher receives every write.
    Everything,
    /// Nothing the writers write, as a node agent watches only its own pods:
    /// for reef a label selector of its own on the written kind and namespace
    /// (each change is still checked against every watcher's filter), for
    /// etcd a key range of its own.
    Nothing,
}

/// One watch stream, read until it ends, counting bytes.
async fn watcher(request: reqwest::RequestBuilder, bytes: Arc<AtomicU64>) {
    let Ok(mut response) = request.send().await else {
        return;
    };
    if !response.status().is_success() {
        return;
    }
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

/// Watch `i` of `scope` on `url`, as each system takes it.
fn watch_request(
    http: &reqwest::Client,
    target: &Target,
    url: &str,
    scope: Scope,
    i: usize,
) -> reqwest::RequestBuilder {
    match target {
        Target::Reef { token, .. } => {
            let selector = match scope {
                Scope::Everything => String::new(),
                Scope::Nothing => format!("&labels=watcher=w{i}"),
            };
            http.get(format!(
                "{url}/api/v1/namespaces/default/services?watch=1{selector}"
            ))
            .bearer_auth(token)
        }
        Target::Etcd { .. } => {
            // The writers' keys are /bench/NAME; "0" follows "/" in byte order.
            let (key, end) = match scope {
                Scope::Everything => ("/bench/".to_string(), "/bench0".to_string()),
                Scope::Nothing => (format!("/watcher-{i}/"), format!("/watcher-{i}0")),
            };
            http.post(format!("{url}/v3/watch"))
                .json(&serde_json::json!({
                    "create_request": {
                        "key": base64(key.as_bytes()),
                        "range_end": base64(end.as_bytes()),
                    }
                }))
        }
    }
}

fn rss_mib(pid: Option<u32>) -> f64 {
    pid.and_then(crate::proc::rss_mib).unwrap_or(0.0)
}

/// Writes with `WATCHERS` watchers of `scope` open on member `leader`.
async fn with_watchers(
    target: &Target,
    urls: &[String],
    leader: usize,
    scope: Scope,
    duration: Duration,
) -> anyhow::Result<(LoadResult, f64, usize)> {
    let bytes = Arc::new(AtomicU64::new(0));
    let streams = reqwest::Client::builder()
        .pool_max_idle_per_host(WATCHERS)
        .http1_only()
        .build()?;
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|i| {
            let request = watch_request(&streams, target, &urls[leader], scope, i);
            tokio::spawn(watcher(request, bytes.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received_before = bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    let result = load(target, CLIENTS, duration).await;
    let mib_per_sec = (bytes.load(Ordering::Relaxed) - received_before) as f64
        / started.elapsed().as_secs_f64()
        / (1 << 20) as f64;
    let open = watchers.iter().filter(|w| !w.is_finished()).count();
    for w in watchers {
        w.abort();
    }
    Ok((result, mib_per_sec, open))
}

fn row(system: &str, watchers: &str, result: &LoadResult, base: f64, mib: f64) {
    println!(
        "| {system} | {watchers} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {mib:.1} |",
        result.writes_per_sec,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        result.writes_per_sec / base.max(1.0)
    );
}

/// The cells of one system: no watchers, watchers of nothing written,
/// watchers of every write, and no watchers again. Each cell writes more into
/// the store than the one before and leaves the member busier (compactions,
/// freed buffers), so the ratios are against the mean of the first and last.
async fn cells(
    system: &str,
    target: &Target,
    urls: &[String],
    leader: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    load(target, 4, Duration::from_secs(2)).await;
    let before = load(target, CLIENTS, duration).await;
    let (none, none_mib, none_open) =
        with_watchers(target, urls, leader, Scope::Nothing, duration).await?;
    let (all, all_mib, all_open) =
        with_watchers(target, urls, leader, Scope::Everything, duration).await?;
    let after = load(target, CLIENTS, duration).await;
    let base = (before.writes_per_sec + after.writes_per_sec) / 2.0;
    row(system, "0 (first)", &before, base, 0.0);
    row(
        system,
        &format!("{WATCHERS} of nothing written ({none_open} open)"),
        &none,
        base,
        none_mib,
    );
    row(
        system,
        &format!("{WATCHERS} of every write ({all_open} open)"),
        &all,
        base,
        all_mib,
    );
    row(system, "0 (last)", &after, base, 0.0);
    Ok(())
}

pub async fn run(reef: &Path, seconds: u64) -> anyhow::Result<()> {
    let duration = Duration::from_secs(seconds);
    println!("3 members each on loopback; {CLIENTS} writers spread over all members; the watchers on the leader; {seconds} s per cell");
    println!();
    println!("| system | watchers | writes/s | p50 (ms) | p99 (ms) | errors | vs no watchers | watchers received (MiB/s) |");
    println!("|---|---|---|---|---|---|---|---|");
    {
        let etcd = EtcdCluster::start(3).await?;
        let http = reqwest::Client::new();
        let leader = etcd.leader(&http).await?;
        let target = Target::Etcd {
            urls: etcd.urls.clone(),
        };
        cells("etcd", &target, &etcd.urls, leader, duration).await?;
    }
    let options = ClusterOptions {
        // Room for a cell's watchers while the previous cell's are still being released.
        max_watches: Some(2 * WATCHERS + 10),
        ..ClusterOptions::default()
    };
    let cluster = ReefCluster::start_with(reef, 3, options).await?;
    let http = reqwest::Client::new();
    let leader = cluster.leader(&http, 0).await.unwrap_or(0);
    let target = Target::Reef {
        urls: cluster.urls.clone(),
        token: cluster.token.clone(),
        ca: None,
    };
    let rss_before = rss_mib(cluster.pid(leader));
    cells("reef", &target, &cluster.urls, leader, duration).await?;
    println!(
        "reef leader RSS {rss_before:.0} MiB before the cells, {:.0} MiB after",
        rss_mib(cluster.pid(leader))
    );
    let streams = reqwest::Client::builder().http1_only().build()?;

    // A watcher that never reads: the member cuts it off and lets its events go.
    let mut stalled = streams
        .get(format!(
            "{}/api/v1/namespaces/default/services?watch=1",
            cluster.urls[leader]
        ))
        .bearer_auth(&cluster.token)
        .send()
        .await?;
    let rss_idle = rss_mib(cluster.pid(leader));
    load(&target, CLIENTS, duration).await;
    // Past the member's stalled-client limit (10 s) with the socket buffers full.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_after = rss_mib(cluster.pid(leader));
    // Reading now drains what the socket buffers hold, then the stream must end.
    let mut drained = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.chunk()).await {
            Ok(Ok(Some(chunk))) => drained += chunk.len() as u64,
            Ok(_) => break true,
            Err(_) => break false,
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    println!(
        "a watcher that never read: {} ({} KiB were buffered); leader RSS {rss_idle:.0} MiB -> {rss_after:.0} MiB over the writes",
        if ended { "cut off by the member" } else { "STILL OPEN" },
        drained / 1024
    );
    Ok(())
}
