//! Closed-loop clients against reef's API or etcd's HTTP/JSON gateway: one
//! write of a ~256-byte value, or one linearizable read, as each system
//! takes it; throughput and latency percentiles.

use crate::replicated::http_client;
use anyhow::bail;
use std::time::{Duration, Instant};

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

pub(crate) fn base64(bytes: &[u8]) -> String {
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

/// What each closed-loop client does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Writes a new key each time.
    Writes,
    /// Linearizable reads of one of [`READ_KEYS`] existing keys.
    Reads,
}

/// Keys the read benchmark reads (written once before it).
const READ_KEYS: usize = 100;

impl Target {
    async fn run(&self, http: &reqwest::Client, work: Work, client: usize, seq: u64) -> bool {
        match work {
            Work::Writes => self.write(http, client, seq).await,
            Work::Reads => self.read(http, client, seq).await,
        }
    }

    /// A linearizable read: reef's GET (a read barrier on any member), etcd's
    /// range with its default (linearizable, not serializable) consistency.
    async fn read(&self, http: &reqwest::Client, client: usize, seq: u64) -> bool {
        let key = (client * 31 + seq as usize) % READ_KEYS;
        match self {
            Target::Reef { urls, token, .. } => {
                let url = format!(
                    "{}/api/v1/namespaces/default/services/r-{key}",
                    urls[client % urls.len()]
                );
                http.get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            Target::Etcd { urls } => {
                let body = serde_json::json!({"key": base64(format!("/bench/r-{key}").as_bytes())});
                let url = format!("{}/v3/kv/range", urls[client % urls.len()]);
                match http.post(url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|v| v["count"].as_str() == Some("1")),
                    _ => false,
                }
            }
        }
    }

    /// Writes the keys the read benchmark reads.
    pub(crate) async fn prepare_reads(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        for key in 0..READ_KEYS {
            if !self.put(http, 0, &format!("r-{key}")).await {
                bail!("could not write read key {key}");
            }
        }
        Ok(())
    }

    /// Writes a new key for client `client`.
    pub(crate) async fn write(&self, http: &reqwest::Client, client: usize, seq: u64) -> bool {
        self.put(http, client, &format!("w{client}-{seq}")).await
    }

    /// One ~256-byte value under `name`, through the member `client` uses.
    async fn put(&self, http: &reqwest::Client, client: usize, name: &str) -> bool {
        match self {
            Target::Reef { urls, token, .. } => {
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
                    "key": base64(format!("/bench/{name}").as_bytes()),
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
    load_work(target, Work::Writes, clients, duration).await
}

/// `clients` closed-loop clients doing `work` for `duration`.
pub async fn load_work(
    target: &Target,
    work: Work,
    clients: usize,
    duration: Duration,
) -> LoadResult {
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
                    if target.run(&http, work, c, seq).await {
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
