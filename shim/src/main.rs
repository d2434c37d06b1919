//! `containerd-shim-reef-v1`: containerd's runtime `io.containerd.reef.v1`.
//! containerd starts one per container; it runs the image's wasm component
//! with reef's runtime (the same engine, memory budget and epoch deadline as
//! a reef node) instead of a Linux process.

mod container;
mod serve;
mod service;
mod spec;
mod stdio;

const RUNTIME: &str = "io.containerd.reef.v1";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-v" || a == "--version") {
        println!(
            "containerd-shim-reef-v1 {} (runtime {RUNTIME})",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    // containerd always sets it; without it a person started the shim, and
    // the shim crate's own answer would be a bare `Env(NotPresent)`.
    if std::env::var_os("TTRPC_ADDRESS").is_none() {
        eprintln!(
            "containerd-shim-reef-v1: containerd starts this program, as runtime {RUNTIME}: \
             `ctr run --runtime {RUNTIME} …`, or a reef node with --runtime containerd \
             (docs/containerd.md)"
        );
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("containerd-shim-reef-v1: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(containerd_shim::asynchronous::run::<service::ReefShim>(
        RUNTIME, None,
    ));
    // A guest still running would keep the runtime (and the process) alive.
    std::process::exit(0);
}
