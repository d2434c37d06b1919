//! The wasmtime runtime: turns component bytes into running pods.
//!
//! One [`Runtime`] per node holds the one `Engine` (pooling allocator, epoch
//! interruption), the one `Linker` (WASI p2 + wasi:http) and the on-disk
//! cache of compiled components. The agent asks it to
//! [`Runtime::prepare_http`] or [`Runtime::prepare_command`] a component by
//! digest and wraps the result with the pod's settings: the proxy calls
//! [`HttpPod::handle`] once per request; the agent calls [`CommandPod::run`]
//! once per run of a command.
//!
//! Invariants:
//! - every request runs in a fresh instance in a fresh `Store`; nothing a
//!   guest does survives its request but what it writes to its pod's
//!   scratch directory;
//! - a pod's live instances together stay within its memory budget, no
//!   request runs past its deadline, and every guest yields on each epoch
//!   tick, so no pod starves another;
//! - a guest gets no sockets, no files but its pod's scratch directory, and
//!   outbound HTTP only to the authorities its pod lists, and only where they
//!   resolve to an address the node's network policy permits, or to its own
//!   namespace's Services through the node's proxy ([`ServiceCalls`]);
//! - a compiled artifact is loaded only if its checksum holds (the one
//!   `unsafe` in reef, in `cache.rs`).
//!
//! The runtime knows nothing of the API, the store or routing: it is given
//! bytes and settings, and answers requests.

mod cache;
mod command;
mod egress;
mod engine;
mod http;
mod limits;
mod outbound;
mod output;
mod prefetch;
mod scratch;
mod services;
mod state;

pub use cache::CacheStats;
pub use command::{CommandPod, Exit};
pub use egress::{Cidr, NetworkPolicy};
pub use engine::{
    digest_of, CommandComponent, HttpComponent, PrepareError, Runtime, RuntimeConfig,
};
pub use http::{FailureSink, HandleError, HttpPod, PodLimits, PodSettings, ResponseBody};
pub use outbound::{InvalidPattern, OutboundPolicy};
pub use output::{OutputSink, Stream};
pub use scratch::{ScratchDir, ScratchQuota};
pub use services::{ServiceAccess, ServiceCalls, ServiceFuture, ServiceResponse, ServiceTarget};
pub use state::SCRATCH_GUEST_PATH;
