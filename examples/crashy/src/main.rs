//! `crashy`: a `command` pod that works for `CRASH_AFTER_MS` milliseconds
//! (default 3000) and then panics, so its pod restarts with growing back-off
//! and `reef logs --previous` shows the panic message of the run before.
//! With `EXIT_CODE` set it exits with that code instead of panicking, through
//! `wasi:cli/exit`'s `exit-with-code` (Rust's `std::process::exit` can only
//! say success or failure on WASI 0.2).

use std::time::Duration;

fn main() {
    let after = std::env::var("CRASH_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000u64);
    let code = std::env::var("EXIT_CODE")
        .ok()
        .and_then(|v| v.parse::<u8>().ok());
    println!("crashy: up, crashing in {after} ms");
    std::thread::sleep(Duration::from_millis(after));
    if let Some(code) = code {
        eprintln!("crashy: exiting with code {code}, as designed");
        wasip2::cli::exit::exit_with_code(code);
    }
    panic!("crashy: giving up after {after} ms, as designed");
}
