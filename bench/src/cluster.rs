//! A `reef up` process for benchmarks: started on port 0 in a throwaway home.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub home: tempfile::TempDir,
    child: Child,
    reef: PathBuf,
    pub api: String,
    pub ingress: String,
}

impl Cluster {
    pub fn start(reef: &Path) -> anyhow::Result<Cluster> {
        Cluster::start_with(reef, &[])
    }

    /// `reef up` with extra flags.
    pub fn start_with(reef: &Path, extra: &[&str]) -> anyhow::Result<Cluster> {
        let home = tempfile::tempdir()?;
        let data = home.path().join("data");
        let log = std::fs::File::create(home.path().join("reef-up.log"))?;
        let child = Command::new(reef)
            .args([
                "up",
                "--api",
                "127.0.0.1:0",
                "--ingress",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data)
            .args(extra)
            .envs(env(home.path()))
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", reef.display()))?;
        let mut cluster = Cluster {
            home,
            child,
            reef: reef.to_path_buf(),
            api: String::new(),
            ingress: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = loop {
            if let Ok(text) = std::fs::read_to_string(data.join("addresses")) {
                if text.ends_with('\n') {
                    break text;
                }
            }
            if Instant::now() > deadline {
                bail!("reef up did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("api=") {
                cluster.api = v.to_string();
            }
            if let Some(v) = part.strip_prefix("ingress=") {
                cluster.ingress = v.to_string();
            }
        }
        Ok(cluster)
    }

    /// The admin token `reef up` wrote into its client config.
    pub fn token(&self) -> anyhow::Result<String> {
        let path = self.home.path().join("config/reef/config.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config: reef_api::config::ClientConfig = toml::from_str(&text)?;
        config.token.context("reef up wrote no token")
    }

    /// Runs a `reef` client verb against this cluster; fails on a non-zero exit.
    pub fn reef(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.reef)
            .args(args)
            .envs(env(self.home.path()))
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("reef {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn env(home: &Path) -> Vec<(String, String)> {
    vec![
        (
            "XDG_CONFIG_HOME".into(),
            home.join("config").display().to_string(),
        ),
        (
            "XDG_DATA_HOME".into(),
            home.join("share").display().to_string(),
        ),
    ]
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
