//! `containerd-shim-reef-v1`: containerd's runtime `io.containerd.reef.v1`.
//! containerd starts one per container; it runs the image's wasm component
//! with reef's runtime (the same engine, memory budget and epoch deadline as
//! a reef node) instead of a Linux process.

mod container;
mod serve;
mod service;
mod spec;
mod stdio;

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<service::ReefShim>("io.containerd.reef.v1", None).await;
    // A guest still running would keep the runtime (and the process) alive.
    std::process::exit(0);
}
