//! The runtimes a test body can run its pods under, so one body checks
//! both: the embedded wasmtime and containerd through the reef shim (a
//! private containerd of the test's own).

use super::containerd::PrivateContainerd;
use std::path::Path;
use std::process::Command;

/// A test's own containerd, with this build's shim on its PATH, or None
/// (said loudly) where it cannot run: it needs root and the binary. CI
/// sets REEF_REQUIRE_CONTAINERD where both are, which turns a skip into
/// a failure.
pub fn private_containerd(namespace: &str) -> Option<PrivateContainerd> {
    let installed = Command::new("containerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // Root, by the effective uid in /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !installed || !root {
        assert!(
            std::env::var_os("REEF_REQUIRE_CONTAINERD").is_none(),
            "containerd (as root) is required here"
        );
        eprintln!("*** SKIPPED: containerd tests need the containerd binary and root ***");
        return None;
    }
    let shim_dir = Path::new(super::REEF).parent().expect("bin dir");
    assert!(
        shim_dir.join("containerd-shim-reef-v1").exists(),
        "no containerd-shim-reef-v1 in {}: build the workspace (cargo build --workspace --bins)",
        shim_dir.display()
    );
    Some(PrivateContainerd::start(shim_dir, namespace).unwrap_or_else(|e| panic!("{e}")))
}

/// The runtime a test body's pods run under: the same bodies run under both.
pub enum Runtime {
    Embedded,
    Containerd(PrivateContainerd),
}

impl Runtime {
    /// Pods as tasks of a private containerd, or None where it cannot run.
    pub fn containerd() -> Option<Runtime> {
        private_containerd("reef").map(Runtime::Containerd)
    }

    /// `reef up` flags for this runtime.
    pub fn flags(&self) -> Vec<String> {
        match self {
            Runtime::Embedded => Vec::new(),
            Runtime::Containerd(c) => vec![
                "--runtime".into(),
                "containerd".into(),
                "--containerd-socket".into(),
                c.socket.display().to_string(),
            ],
        }
    }

    /// A manifest whose deployments name this runtime.
    pub fn manifest(&self, text: &str) -> String {
        match self {
            Runtime::Embedded => text.to_string(),
            Runtime::Containerd(_) => text.replace(
                "[[deployment]]\n",
                "[[deployment]]\nruntime = \"containerd\"\n",
            ),
        }
    }

    /// Tasks containerd runs in reef's namespace now.
    pub fn tasks(&self) -> Vec<String> {
        match self {
            Runtime::Embedded => Vec::new(),
            Runtime::Containerd(c) => c
                .ctr_checked(&["tasks", "list", "-q"])
                .unwrap_or_else(|e| panic!("{e}"))
                .lines()
                .map(str::to_string)
                .collect(),
        }
    }
}
