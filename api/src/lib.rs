//! `reef-api`: the vocabulary every part of reef shares.
//!
//! Owns the resource types and quantities (DESIGN §3), TOML manifest parsing with
//! source spans (§4), validation rules, the client config and the HTTP client (§6).
//! It does no storage and runs nothing, so the CLI and the node agent can link it
//! without pulling in Raft, RocksDB or wasmtime.

pub mod autoscale;
pub mod client;
pub mod component_ref;
pub mod config;
pub mod events;
pub mod identity;
pub mod kinds;
pub mod limits;
pub mod manifest;
pub mod quantity;
pub mod resource;
pub mod signing;
pub mod suggest;
pub mod validate;

pub use autoscale::{Autoscale, AutoscaleStatus, DeploymentLoad, LoadReport, ScaleTarget};
pub use client::{Client, ClientError};
pub use resource::*;

/// The current time as RFC 3339 (seconds), the form timestamps take in objects.
/// The `sha256:<hex>` digest of a component's bytes, as manifests and blobs name them.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Seconds since an RFC 3339 timestamp; `None` if it does not parse or lies ahead.
pub fn age(timestamp: &str) -> Option<std::time::Duration> {
    let then = humantime::parse_rfc3339_weak(timestamp).ok()?;
    std::time::SystemTime::now().duration_since(then).ok()
}
