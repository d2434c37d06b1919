//! A containerd of one test's or benchmark's own: its root, state and socket
//! under a short temp dir (socket paths stay under 108 bytes), the CRI plugin
//! off, and `containerd-shim-reef-v1` found on its PATH. Dropping it stops
//! containerd, the shims it started (they outlive it otherwise) and unmounts
//! what it left mounted. Shared by tests/containerd.rs and reef-bench.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateContainerd {
    child: Child,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    namespace: String,
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims ignore SIGTERM; each names this containerd's socket.
        let _ = Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("containerd-shim-.* {}", self.socket.display()),
            ])
            .status();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().to_string();
        for mount in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if mount.starts_with(&root) {
                let _ = Command::new("umount").arg(mount).status();
            }
        }
    }
}

impl PrivateContainerd {
    /// Starts containerd with `shim_dir` first on its PATH; ctr calls use
    /// `namespace`. Waits (polling, 30 s at most) until it answers.
    pub fn start(shim_dir: &Path, namespace: &str) -> Result<PrivateContainerd, String> {
        let dir = tempfile::Builder::new()
            .prefix("reef-ctd")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        let socket = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{socket}\"\n",
                root = dir.path().display(),
                socket = socket.display()
            ),
        )
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))
            .map_err(|e| format!("containerd.log: {e}"))?;
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("REEF_SHIM_CACHE", dir.path().join("shim-cache"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting containerd: {e}"))?;
        let containerd = PrivateContainerd {
            child,
            socket,
            dir,
            namespace: namespace.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd did not answer in 30 s:\n{}",
                    containerd.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(containerd)
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running ctr: {e}"))
    }

    /// ctr's stdout, or its stderr and containerd's last lines.
    pub fn ctr_checked(&self, args: &[&str]) -> Result<String, String> {
        let out = self.ctr(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!(
                "ctr {args:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ))
        }
    }

    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
