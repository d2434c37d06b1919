//! Watch fan-out: writes/s with and without 1,000 watchers streaming every
//! change from one member, and what becomes of a watcher that never reads.

use crate::load::{load, Target};
use crate::replicated::{ClusterOptions, ReefCluster};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCHERS: usize = 1000;
const CLIENTS: usize = 16;

/// Opens a watch of every Service in `default` and reads it until the
/// server ends it, counting bytes.
async fn watcher(http: reqwest::Client, url: String, token: String, bytes: Arc<AtomicU64>) {
    let Ok(mut response) = http
        .get(format!("{url}/api/v1/namespaces/default/services?watch=1"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return;
    };
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

fn rss_mib(pid: Option<u32>) -> f64 {
    pid.and_then(crate::proc::rss_mib).unwrap_or(0.0)
}

pub async fn run(reef: &Path, seconds: u64) -> anyhow::Result<()> {
    let options = ClusterOptions {
        max_watches: Some(WATCHERS + 10),
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
    let duration = Duration::from_secs(seconds);
    load(&target, 4, Duration::from_secs(2)).await;
    let before = load(&target, CLIENTS, duration).await;

    // 1,000 watchers on the leader, each reading every change.
    let bytes = Arc::new(AtomicU64::new(0));
    let streams = reqwest::Client::builder()
        .pool_max_idle_per_host(WATCHERS)
        .http1_only()
        .build()?;
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            tokio::spawn(watcher(
                streams.clone(),
                cluster.urls[leader].clone(),
                cluster.token.clone(),
                bytes.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = rss_mib(cluster.pid(leader));
    let received_before = bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    let with = load(&target, CLIENTS, duration).await;
    let fanned = bytes.load(Ordering::Relaxed) - received_before;
    let open = watchers.iter().filter(|w| !w.is_finished()).count();
    println!("3 members on loopback; {CLIENTS} writers spread over all members; {WATCHERS} watchers of every Service on the leader; {seconds} s per cell");
    println!();
    println!("| watchers | writes/s | p50 (ms) | p99 (ms) | errors | vs no watchers |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| 0 | {:.0} | {:.2} | {:.2} | {} | 1.00 |",
        before.writes_per_sec, before.p50_ms, before.p99_ms, before.errors
    );
    println!(
        "| {WATCHERS} ({open} still open) | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
        with.writes_per_sec,
        with.p50_ms,
        with.p99_ms,
        with.errors,
        with.writes_per_sec / before.writes_per_sec.max(1.0)
    );
    println!(
        "watchers received {:.1} MiB/s in all; leader RSS {rss_before:.0} MiB before the writes, {:.0} MiB after",
        fanned as f64 / started.elapsed().as_secs_f64() / (1 << 20) as f64,
        rss_mib(cluster.pid(leader))
    );
    for w in watchers {
        w.abort();
    }

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
