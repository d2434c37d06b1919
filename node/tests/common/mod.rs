//! Building the guest components the node's tests run (wasm32-wasip2, release),
//! in the same target dir as everything else so dependencies compile once.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub mod pods;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target dir this test was built in (`CARGO_TARGET_TMPDIR` is its `tmp/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join(".."))
}

/// One build at a time within a test process.
static BUILD: Mutex<()> = Mutex::new(());

pub fn run(command: &mut Command) {
    let status = command
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// Builds the guest crate in `node/tests/<dir>` (a no-op when fresh) and reads
/// its `<artifact>.wasm`. Call once per process (behind a `OnceLock`).
pub fn build_guest(dir: &str, artifact: &str) -> Vec<u8> {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir)
        .join("Cargo.toml");
    run(Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest));
    let path = target_dir().join(format!("wasm32-wasip2/release/{artifact}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `examples/hello/hello.wasm`, built by `examples/build.sh` if missing so
/// `cargo test` works on a fresh clone.
pub fn hello_wasm() -> Vec<u8> {
    let path = repo_root().join("examples/hello/hello.wasm");
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        run(&mut Command::new(repo_root().join("examples/build.sh")));
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
