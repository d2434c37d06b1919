//! The wasmtime runtime: turns component bytes into running pods.
//!
//! One [`Runtime`] per node holds the one `Engine` (pooling allocator, epoch
//! interruption) and the one `Linker` (WASI p2 + wasi:http). The agent asks
//! it to [`Runtime::prepare_http`] a component by digest, wraps the result in
//! an [`HttpPod`] with the pod's settings, and the proxy calls
//! [`HttpPod::handle`] once per request.
//!
//! Invariants:
//! - every request runs in a fresh instance in a fresh `Store`; nothing a
//!   guest does survives its request;
//! - a pod's live instances together stay within its memory budget, and no
//!   instance runs past its request's deadline;
//! - a guest gets no sockets, no files, and outbound HTTP only to the
//!   authorities its pod lists.
//!
//! The runtime knows nothing of the API, the store or routing: it is given
//! bytes and settings, and answers requests.

mod engine;
mod http;
mod limits;
mod outbound;
mod state;

pub use engine::{digest_of, HttpComponent, PrepareError, Runtime, RuntimeConfig};
pub use http::{HandleError, HttpPod, PodSettings, ResponseBody};
pub use outbound::{InvalidPattern, OutboundPolicy};
