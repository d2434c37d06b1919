//! `reef-node`: everything a worker node runs (DESIGN §9).
//!
//! Owns the wasm [`runtime`] (wasmtime: compiling components, instances per
//! request, memory and CPU limits, the outbound HTTP policy), the [`agent`]
//! (the node's kubelet) and the [`proxy`] (ingress and routing). A node
//! never touches the control plane's store: it talks to the API server
//! through `reef-api`'s client and keeps serving its pods when that is away.

pub mod agent;
pub mod containerd;
pub mod credential;
pub mod daemon;
pub mod logs;
pub mod pods;
pub mod proxy;
pub mod reflector;
pub mod runtime;
