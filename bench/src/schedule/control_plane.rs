//! The one `reef control-plane` member the scheduling bench runs, and the
//! admin's JSON calls to it.

use super::{free_port, wait_for_file, Processes};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(super) struct ControlPlane {
    pub(super) home: tempfile::TempDir,
    pub(super) processes: Processes,
    pub(super) url: String,
    pub(super) token: String,
    pub(super) pid: u32,
    pub(super) node_grace: Option<&'static str>,
}

impl ControlPlane {
    pub(super) async fn start(reef: &Path) -> anyhow::Result<ControlPlane> {
        let home = tempfile::tempdir()?;
        let dir = home.path().join("m1");
        std::fs::create_dir_all(&dir)?;
        let address = format!("127.0.0.1:{}", free_port()?);
        // A node-lifecycle controller, where there is one, must not evict the
        // simulated nodes because a renewal was late on a saturated machine.
        let help = Command::new(reef)
            .args(["control-plane", "--help"])
            .output()
            .context("running reef control-plane --help")?;
        let node_grace = String::from_utf8_lossy(&help.stdout)
            .contains("--node-grace")
            .then_some("300s");
        let log = std::fs::File::create(home.path().join("control-plane.log"))?;
        let mut cmd = Command::new(reef);
        cmd.args(["control-plane", "--id", "1", "--init", "--listen", &address])
            .arg("--data-dir")
            .arg(&dir)
            // The scheduler logs one line per pass that bound pods.
            .env("RUST_LOG", "warn,reef_control_plane::scheduler=info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(grace) = node_grace {
            cmd.args(["--node-grace", grace]);
        }
        let child = cmd.spawn().context("starting reef control-plane")?;
        let pid = child.id();
        let processes = Processes(vec![Some(child)]);
        wait_for_file(&dir.join("admin.token"), Duration::from_secs(120)).await?;
        let token = std::fs::read_to_string(dir.join("admin.token"))?
            .trim()
            .to_string();
        let url = format!("http://{address}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("the control plane did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ControlPlane {
            home,
            processes,
            url,
            token,
            pid,
            node_grace,
        })
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.home.path().join("control-plane.log")
    }
}

pub(super) async fn put(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let response = http.put(url).bearer_auth(token).json(body).send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "PUT {url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<Value> {
    let response = http.get(url).bearer_auth(token).send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "GET {url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}
