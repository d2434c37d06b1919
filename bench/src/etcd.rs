//! Debian's etcd 3.4 as the baseline: a cluster of members on loopback,
//! started by hand (its service does not start in a sandbox).

use crate::replicated::{free_port, Processes};
use anyhow::{bail, Context};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

impl EtcdCluster {
    /// The index of the member that leads (from each member's status).
    pub async fn leader(&self, http: &reqwest::Client) -> anyhow::Result<usize> {
        for (i, url) in self.urls.iter().enumerate() {
            let status: serde_json::Value = http
                .post(format!("{url}/v3/maintenance/status"))
                .json(&serde_json::json!({}))
                .send()
                .await?
                .json()
                .await?;
            if status["leader"].is_string() && status["leader"] == status["header"]["member_id"] {
                return Ok(i);
            }
        }
        bail!("no etcd member says it leads")
    }
}
