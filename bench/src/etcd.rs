//! Debian's etcd 3.4 as the baseline: a cluster of members on loopback,
//! started by hand (its service does not start in a sandbox).

use crate::replicated::{free_port, Processes};
use anyhow::{bail, Context};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdCluster {
    home: tempfile::TempDir,
    processes: Processes,
    pub urls: Vec<String>,
    peers: Vec<String>,
}

impl EtcdCluster {
    pub async fn start(members: usize) -> anyhow::Result<EtcdCluster> {
        let mut urls = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..members {
            urls.push(format!("http://127.0.0.1:{}", free_port()?));
            peers.push(format!("http://127.0.0.1:{}", free_port()?));
        }
        let mut cluster = EtcdCluster {
            home: tempfile::tempdir()?,
            processes: Processes((0..members).map(|_| None).collect()),
            urls,
            peers,
        };
        for i in 0..members {
            cluster.launch(i)?;
        }
        for i in 0..members {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    /// Starts member `i` (again: a restarted member keeps its data dir).
    pub fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let initial: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}={p}", i + 1))
            .collect();
        let child = Command::new("etcd")
            .args(["--name", &format!("e{}", i + 1)])
            .arg("--data-dir")
            .arg(self.home.path().join(format!("e{}", i + 1)))
            .args([
                "--listen-client-urls",
                &self.urls[i],
                "--advertise-client-urls",
                &self.urls[i],
            ])
            .args([
                "--listen-peer-urls",
                &self.peers[i],
                "--initial-advertise-peer-urls",
                &self.peers[i],
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
        self.processes.0[i] = Some(child);
        Ok(())
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes.0[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn wait_healthy(&self, i: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = &self.urls[i];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = http
                .get(format!("{url}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd at {url} did not become healthy");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
