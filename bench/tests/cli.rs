//! `reef-bench`'s arguments, as a person types them: help for any bench,
//! and a clear refusal of what it does not take (before, a panic).

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_reef-bench");

#[test]
fn help_after_a_bench_prints_usage_and_succeeds() {
    let out = Command::new(BENCH)
        .args(["proxy", "--help"])
        .output()
        .expect("run reef-bench");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Usage: reef-bench"), "{said}");
    assert!(
        said.contains("shim-start") && said.contains("--connections"),
        "{said}"
    );
}

#[test]
fn unknown_benches_and_flags_are_refused_with_a_usage_error() {
    for args in [
        &["nonsense"][..],
        &["proxy", "--bogus", "1"],
        &["proxy", "--seconds", "many"],
        &[],
    ] {
        let out = Command::new(BENCH)
            .args(args)
            .output()
            .expect("run reef-bench");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.starts_with("error: ") && said.contains("try '--help'"),
            "{args:?}: {said}"
        );
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
}
