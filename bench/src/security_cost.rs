//! What authorization and TLS cost on the write path, measured in one run:
//! the same 3-member loopback cluster and load as `replicated-writes`, once
//! with a baseline binary (built before tokens had identities: no
//! authorizer), once with this one on plain HTTP (gate + authorizer), and
//! once with `--tls` (gate + authorizer + HTTPS between clients and members
//! and between members).

use crate::load::{load, Target};
use crate::replicated::{ClusterOptions, ReefCluster};
use std::path::Path;
use std::time::Duration;

async fn measure(
    reef: &Path,
    options: ClusterOptions,
    seconds: u64,
    clients: &[usize],
) -> anyhow::Result<Vec<crate::load::LoadResult>> {
    let cluster = ReefCluster::start_with(reef, 3, options).await?;
    let target = Target::Reef {
        urls: cluster.urls.clone(),
        token: cluster.token.clone(),
        ca: cluster.ca.clone(),
    };
    load(&target, 4, Duration::from_secs(2)).await;
    let mut results = Vec::new();
    for &n in clients {
        results.push(load(&target, n, Duration::from_secs(seconds)).await);
    }
    Ok(results)
}

pub async fn run(reef: &Path, baseline: &Path, seconds: u64) -> anyhow::Result<()> {
    let clients = [1usize, 16, 64];
    let legacy = ClusterOptions {
        legacy: true,
        ..ClusterOptions::default()
    };
    let plain = ClusterOptions::default();
    let tls = ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    };
    let rows = [
        (
            "baseline (no authorizer, HTTP)",
            measure(baseline, legacy, seconds, &clients).await?,
        ),
        (
            "authorizer, HTTP",
            measure(reef, plain, seconds, &clients).await?,
        ),
        (
            "authorizer, HTTPS (--tls)",
            measure(reef, tls, seconds, &clients).await?,
        ),
    ];
    println!("3 members on loopback; ~256-byte Service PUTs spread over the members; {seconds} s per cell");
    println!();
    println!("| clients | build | writes/s | p50 (ms) | p99 (ms) | errors | vs baseline writes/s | vs baseline p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, n) in clients.iter().enumerate() {
        let base = &rows[0].1[i];
        for (name, results) in &rows {
            let r = &results[i];
            println!(
                "| {n} | {name} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} |",
                r.writes_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                r.writes_per_sec / base.writes_per_sec.max(1.0),
                r.p99_ms / base.p99_ms.max(0.001)
            );
        }
    }
    Ok(())
}
