//! The shim binary as a person at a terminal meets it (containerd's use of
//! it is tested end to end in the workspace's tests/containerd.rs, which
//! also relies on this package's integration test making cargo build the
//! binary beside `reef`).

use std::process::Command;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-reef-v1");

#[test]
fn it_tells_its_version() {
    let out = Command::new(SHIM).arg("-v").output().expect("run the shim");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(env!("CARGO_PKG_VERSION")) && said.contains("io.containerd.reef.v1"),
        "{said}"
    );
}

#[test]
fn started_by_hand_it_says_what_starts_it() {
    let out = Command::new(SHIM)
        .env_remove("TTRPC_ADDRESS")
        .output()
        .expect("run the shim");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("containerd starts this program"), "{said}");
}
