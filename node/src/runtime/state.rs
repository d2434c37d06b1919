//! The host state of one store (one request), and the views WASI needs.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{MemoryBudget, PodLimiter};
use super::outbound::{OutboundHooks, OutboundPolicy};

/// Everything one instance's host calls can reach. Built fresh per store, so
/// nothing leaks from one request to the next.
pub(crate) struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    pub(crate) limiter: PodLimiter,
}

impl HostState {
    pub(crate) fn new(
        env: &[(String, String)],
        policy: Arc<OutboundPolicy>,
        budget: MemoryBudget,
    ) -> HostState {
        let wasi = WasiCtx::builder()
            .envs(env)
            // No sockets: wasi:sockets stays linked (std imports it) but
            // every address is refused and names do not resolve. Outbound
            // traffic goes through wasi:http and its policy only.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks { policy },
            limiter: PodLimiter::new(budget),
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
