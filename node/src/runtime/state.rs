//! What a pod's instances may touch ([`Sandbox`]), and the host state of one
//! store built from it, with the views WASI needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{MemoryBudget, PodLimiter};
use super::outbound::{OutboundHooks, OutboundPolicy};
use super::output::{GuestOutput, OutputSink, Stream};

/// Where a pod's scratch directory appears inside the guest.
pub const SCRATCH_GUEST_PATH: &str = "/tmp";

/// A pod's scratch directory. Removed when its last holder lets go: the pod,
/// and any request still running in it after the pod was retired.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates the directory (or takes over the one a previous run left).
    pub fn create(path: PathBuf) -> std::io::Result<Arc<ScratchDir>> {
        std::fs::create_dir_all(&path)?;
        Ok(Arc::new(ScratchDir { path }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        let remove = move || match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %path.display(), "cannot remove scratch dir: {e}"),
        };
        // A guest may have left a big tree: not on an async worker, not under
        // whatever lock the last holder dropped it in.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Everything a pod's instances can reach beyond their own memory: their
/// env and args, the outbound allow-list, one scratch directory, and a sink
/// for their output. Nothing else: no other files, no sockets.
#[derive(Clone, Default)]
pub struct Sandbox {
    pub env: Vec<(String, String)>,
    /// The command world's arguments (`argv[1..]`; `argv[0]` is the pod's name).
    pub args: Vec<String>,
    pub outbound: Arc<OutboundPolicy>,
    /// A host directory the guest sees read-write at [`SCRATCH_GUEST_PATH`].
    pub scratch: Option<Arc<ScratchDir>>,
    /// Receives stdout and stderr; without one, output is discarded.
    pub output: Option<Arc<dyn OutputSink>>,
    /// `argv[0]`.
    pub program: String,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("env", &self.env.len())
            .field("args", &self.args)
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

/// Everything one instance's host calls can reach. Built fresh per store, so
/// nothing leaks from one request to the next.
pub(crate) struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    pub(crate) limiter: PodLimiter,
    /// Held while the instance lives, so its directory outlasts it (an http
    /// guest may still be streaming its body after its pod was retired).
    _scratch: Option<Arc<ScratchDir>>,
}

impl HostState {
    /// Fails only if the scratch directory cannot be opened.
    pub(crate) fn new(sandbox: &Sandbox, budget: MemoryBudget) -> std::io::Result<HostState> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&sandbox.env)
            // No sockets: wasi:sockets stays linked (std imports it) but
            // every address is refused and names do not resolve. Outbound
            // traffic goes through wasi:http and its policy only.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !sandbox.args.is_empty() || !sandbox.program.is_empty() {
            let mut argv = vec![sandbox.program.clone()];
            argv.extend(sandbox.args.iter().cloned());
            wasi.args(&argv);
        }
        if let Some(sink) = &sandbox.output {
            wasi.stdout(GuestOutput::new(sink.clone(), Stream::Stdout))
                .stderr(GuestOutput::new(sink.clone(), Stream::Stderr));
        }
        if let Some(dir) = &sandbox.scratch {
            wasi.preopened_dir(dir.path(), SCRATCH_GUEST_PATH, FsPerms::ReadWrite)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        }
        Ok(HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                policy: sandbox.outbound.clone(),
            },
            limiter: PodLimiter::new(budget),
            _scratch: sandbox.scratch.clone(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}
