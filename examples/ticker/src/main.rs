//! `ticker`: a `command` pod. Prints `NAME: tick N` every `INTERVAL_MS`
//! milliseconds (default 1000) to stdout, so `reef logs -f` has something to
//! follow. With `TICKS` set it stops after that many lines and exits 0 (a
//! run-to-completion pod); otherwise it runs forever.
//!
//! It keeps its count in `/tmp/ticks`, the pod's scratch directory: a
//! restarted pod carries on counting where it stopped, a new pod starts at 1.

use std::io::Write as _;
use std::time::Duration;

const STATE: &str = "/tmp/ticks";

fn main() {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let interval = var("INTERVAL_MS").unwrap_or(1000);
    let ticks = var("TICKS");
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ticker".to_string());
    let first = std::fs::read_to_string(STATE)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(1, |last| last + 1);
    let mut out = std::io::stdout();
    for n in first.. {
        // A closed stdout or a full disk is no reason to stop ticking.
        let _ = writeln!(out, "{name}: tick {n}").and_then(|()| out.flush());
        let _ = std::fs::write(STATE, n.to_string());
        if ticks.is_some_and(|t| n >= first + t - 1) {
            return;
        }
        std::thread::sleep(Duration::from_millis(interval));
    }
}
