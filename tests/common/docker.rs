//! Docker for multi-host tests: an image holding only the `reef` binary and its
//! shared-library closure (no registry here), and containers on a private network
//! that a test can cut off and reconnect.

use super::REEF;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a Docker engine answers. Tests that need one say so loudly and skip.
pub fn available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The shared libraries `ldd` says a binary needs.
fn library_closure(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Builds (once per test binary) an image with `/reef` and its libraries.
pub fn reef_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let context = tempfile::tempdir().expect("tempdir");
            let root = context.path().join("rootfs");
            std::fs::create_dir_all(root.join("tmp")).expect("rootfs");
            std::fs::copy(REEF, root.join("reef")).expect("copy reef");
            for lib in library_closure(Path::new(REEF)) {
                let target = root.join(lib.strip_prefix("/").expect("absolute"));
                std::fs::create_dir_all(target.parent().expect("parent")).expect("lib dir");
                std::fs::copy(&lib, &target).expect("copy library");
            }
            std::fs::write(
                context.path().join("Dockerfile"),
                "FROM scratch\nLABEL reef-test=1\nCOPY rootfs/ /\nENV HOME=/tmp\nENTRYPOINT [\"/reef\"]\n",
            )
            .expect("Dockerfile");
            let tag = "reef-test:dev".to_string();
            docker(&["build", "-q", "-t", &tag, &context.path().display().to_string()]);
            // Earlier builds of this tag are left dangling: drop them (ours only).
            let _ = Command::new("docker")
                .args(["image", "prune", "-f", "--filter", "label=reef-test=1"])
                .output();
            tag
        })
        .clone()
}

/// Removes containers and networks an earlier, killed test run left behind.
fn sweep_leftovers() {
    let listed = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=reef-test=1"])
        .output();
    if let Ok(out) = listed {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
    let _ = Command::new("docker")
        .args(["network", "prune", "-f", "--filter", "label=reef-test=1"])
        .output();
}

/// A private bridge network with a subnet of its own; removed on drop.
pub struct Network {
    pub name: String,
    /// The first three octets, e.g. "172.29.41".
    pub prefix: String,
    containers: Vec<String>,
}

impl Network {
    pub fn create(label: &str) -> Network {
        sweep_leftovers();
        for attempt in 0..20u32 {
            let octet = (std::process::id() + attempt * 7) % 200 + 20;
            let prefix = format!("172.30.{octet}");
            let name = format!("reef-{label}-{}-{attempt}", std::process::id());
            let ok = Command::new("docker")
                .args([
                    "network",
                    "create",
                    "--subnet",
                    &format!("{prefix}.0/24"),
                    &name,
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Network {
                    name,
                    prefix,
                    containers: Vec::new(),
                };
            }
        }
        panic!("could not create a docker network with a free subnet");
    }

    pub fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    /// Starts a detached container running `reef ARGS` at `ip`, with `mounts`
    /// (`host:container[:ro]`). Returns its name.
    pub fn run(&mut self, name: &str, ip: &str, mounts: &[String], args: &[&str]) -> String {
        let full = format!("{}-{name}", self.name);
        let mut cmd: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            full.clone(),
            "--network".into(),
            self.name.clone(),
            "--ip".into(),
            ip.into(),
            "-e".into(),
            "RUST_LOG=info".into(),
            "--label".into(),
            "reef-test=1".into(),
        ];
        for m in mounts {
            cmd.push("-v".into());
            cmd.push(m.clone());
        }
        cmd.push(reef_image());
        cmd.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        docker(&refs);
        self.containers.push(full.clone());
        full
    }

    pub fn disconnect(&self, container: &str) {
        docker(&["network", "disconnect", &self.name, container]);
    }

    pub fn connect(&self, container: &str, ip: &str) {
        docker(&["network", "connect", "--ip", ip, &self.name, container]);
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for c in &self.containers {
            let logs = Command::new("docker")
                .args(["logs", "--tail", "40", c])
                .output();
            if let Ok(o) = logs {
                out.push_str(&format!(
                    "--- {c} ---\n{}{}\n",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        out
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}
