//! Task starts through containerd: `ctr run --rm` of a wasm command through
//! `containerd-shim-reef-v1` beside a static native hello through runc
//! (containerd's default runtime), in one private containerd, in one run.
//! Both print one line and exit; both pay the same ctr and containerd costs,
//! so the difference is the runtime's.
//!
//! Needs root, containerd, runc and gcc (for the static native hello).

use crate::{examples_dir, median};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[path = "../../tests/common/containerd.rs"]
mod private_containerd;
use private_containerd::PrivateContainerd as Containerd;

/// A static native hello, built here with gcc.
fn native_hello(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let source = dir.join("hello.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\nint main(void){write(1,\"hello\\n\",6);return 0;}\n",
    )?;
    let binary = dir.join("hello");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .context("gcc")?;
    if !status.success() {
        bail!("gcc -static failed (is libc6-dev installed?)");
    }
    Ok(std::fs::read(binary)?)
}

struct Runtime {
    label: &'static str,
    /// `ctr run` flags and arguments around the task id.
    before_id: Vec<String>,
    after_id: Vec<String>,
}

impl Runtime {
    fn args(&self, id: &str) -> Vec<String> {
        let mut args = vec!["run".to_string(), "--rm".to_string()];
        args.extend(self.before_id.iter().cloned());
        args.push(id.to_string());
        args.extend(self.after_id.iter().cloned());
        args
    }
}

/// One `ctr run --rm` to its end, in ms; checks it printed its line.
fn run_once(containerd: &Containerd, runtime: &Runtime, id: &str) -> anyhow::Result<f64> {
    let args = runtime.args(id);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = containerd.ctr(&args);
    let took = start.elapsed().as_secs_f64() * 1000.0;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.trim().is_empty() {
        bail!(
            "{} run {id}: {}{}",
            runtime.label,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(reef: &Path, runs: usize, concurrency: usize) -> anyhow::Result<()> {
    let shim_dir = reef.parent().context("reef's directory")?;
    if !shim_dir.join("containerd-shim-reef-v1").exists() {
        bail!(
            "no containerd-shim-reef-v1 beside {}: cargo build --release --workspace --bins",
            reef.display()
        );
    }
    let containerd = Containerd::start(shim_dir, "bench").map_err(anyhow::Error::msg)?;
    let work = tempfile::tempdir()?;
    let ticker = examples_dir().join("ticker/ticker.wasm");
    let archive = work.path().join("ticker.tar");
    let packed = Command::new(reef)
        .args(["image", "pack", ticker.to_str().context("utf-8")?, "-o"])
        .arg(&archive)
        .args(["--name", "docker.io/bench/ticker:v1"])
        .output()?;
    if !packed.status.success() {
        bail!(
            "reef image pack: {}",
            String::from_utf8_lossy(&packed.stderr)
        );
    }
    let native = reef_oci::image::pack_native_image(
        &native_hello(work.path())?,
        "hello",
        "docker.io/bench/native:v1",
    )?;
    let native_archive = work.path().join("native.tar");
    std::fs::write(&native_archive, native)?;
    for archive in [&archive, &native_archive] {
        containerd
            .ctr_checked(&["image", "import", archive.to_str().context("utf-8")?])
            .map_err(anyhow::Error::msg)?;
    }
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let runtimes = [
        Runtime {
            label: "reef shim (wasm command)",
            before_id: strings(&[
                "--runtime",
                "io.containerd.reef.v1",
                "--env",
                "TICKS=1",
                "docker.io/bench/ticker:v1",
            ]),
            after_id: strings(&["/ticker.wasm", "hello"]),
        },
        Runtime {
            label: "runc (static native hello)",
            before_id: strings(&["docker.io/bench/native:v1"]),
            after_id: Vec::new(),
        },
    ];
    // Warm: the shim's compiled-code cache, the snapshots, the page cache.
    for (i, runtime) in runtimes.iter().enumerate() {
        for n in 0..3 {
            run_once(&containerd, runtime, &format!("warm-{i}-{n}"))?;
        }
    }
    // Latency: one task at a time, the two runtimes alternating.
    let mut latencies = vec![Vec::with_capacity(runs), Vec::with_capacity(runs)];
    for n in 0..runs {
        for (i, runtime) in runtimes.iter().enumerate() {
            latencies[i].push(run_once(&containerd, runtime, &format!("seq-{i}-{n}"))?);
        }
    }
    // Throughput: `concurrency` ctr clients at once, `runs` tasks in all. A
    // run that fails (ctr has been seen to lose a task's output under
    // concurrency) is counted and reported, not retried.
    let mut rates = Vec::new();
    let mut failures = Vec::new();
    for (i, runtime) in runtimes.iter().enumerate() {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::Mutex::new(Vec::<String>::new());
        let start = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        loop {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if n >= runs {
                                return Ok(());
                            }
                            if let Err(e) = run_once(&containerd, runtime, &format!("par-{i}-{n}"))
                            {
                                failed
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(e.to_string());
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("worker panicked"))??;
            }
            Ok(())
        })?;
        rates.push(runs as f64 / start.elapsed().as_secs_f64());
        let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = failed.first() {
            eprintln!(
                "{}: {} failed runs, the first: {first}",
                runtime.label,
                failed.len()
            );
        }
        failures.push(failed.len());
    }
    println!("{runs} runs of `ctr run --rm` each, private containerd 1.6; tasks/s with {concurrency} ctr clients at once");
    println!("| runtime | start→exit median (ms) | p99 (ms) | tasks/s | vs runc | failed runs |");
    println!("|---|---|---|---|---|---|");
    for (i, runtime) in runtimes.iter().enumerate() {
        let mut sorted = latencies[i].clone();
        let med = median(&mut sorted);
        println!(
            "| {} | {med:.1} | {:.1} | {:.1} | {:.2}× | {} |",
            runtime.label,
            percentile(&sorted, 0.99),
            rates[i],
            rates[i] / rates[1],
            failures[i]
        );
    }
    Ok(())
}
