//! What a pod's instances may touch ([`Sandbox`]), and the host state of one
//! store built from it, with the views WASI needs.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{MemoryBudget, PodLimiter};
use super::outbound::{OutboundHooks, OutboundPolicy};
use super::output::{GuestOutput, OutputSink, Stream};
use super::scratch::{QuotaFs, ScratchDir};
use wasmtime_wasi::filesystem::WasiFilesystemView;

/// Where a pod's scratch directory appears inside the guest.
pub const SCRATCH_GUEST_PATH: &str = "/tmp";

/// Everything a pod's instances can reach beyond their own memory: their
/// env and args, the outbound allow-list, one scratch directory, and a sink
/// for their output. Nothing else: no other files, no sockets.
#[derive(Clone, Default)]
pub struct Sandbox {
    pub env: Vec<(String, String)>,
    /// The command world's arguments (`argv[1..]`; `argv[0]` is the pod's name).
    pub args: Vec<String>,
    pub outbound: Arc<OutboundPolicy>,
    /// Which resolved addresses outbound connections may reach.
    pub network: Arc<super::egress::NetworkPolicy>,
    /// A host directory the guest sees read-write at [`SCRATCH_GUEST_PATH`].
    pub scratch: Option<Arc<ScratchDir>>,
    /// Receives stdout and stderr; without one, output is discarded.
    pub output: Option<Arc<dyn OutputSink>>,
    /// `argv[0]`.
    pub program: String,
    /// The cluster's Services this pod may call by name.
    pub services: Option<super::services::ServiceAccess>,
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
                network: sandbox.network.clone(),
                services: sandbox.services.clone(),
            },
            limiter: PodLimiter::new(budget),
            _scratch: sandbox.scratch.clone(),
        })
    }
}

impl HostState {
    /// The filesystem as the guest sees it: its scratch directory, within quota.
    pub(crate) fn quota_fs(&mut self) -> QuotaFs<'_> {
        let scratch = self._scratch.clone();
        QuotaFs {
            inner: self.filesystem(),
            scratch,
        }
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
