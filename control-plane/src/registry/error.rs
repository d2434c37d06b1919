//! Why an object operation failed. The API server maps each variant onto an HTTP
//! status (`apiserver/error.rs`); the registry itself knows nothing of HTTP.

use crate::store::{Revision, StoreError};
use reef_api::validate::FieldError;
use reef_api::Kind;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: Kind, name: String },
    /// Something other than an object is not there (a token id).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "no kind {0:?}: known kinds are tenants, nodes, deployments, pods, services, events, blobs"
    )]
    UnknownKind(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// A write would take a tenant past its quota (Kubernetes answers 403 too).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A caller over one of its concurrency limits (open watches).
    #[error("{0}")]
    TooMany(String),
    /// An input over one of the cluster's size limits.
    #[error("{0}")]
    TooLarge(String),
    #[error("the store's history no longer reaches revision {since}; relist and watch from the list's resource_version")]
    Gone { since: Revision },
    #[error("{0}")]
    Unavailable(String),
    #[error("the write's outcome is unknown (it may still commit): {0}")]
    Unknown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { oldest } => RegistryError::Gone { since: oldest },
            // No quorum reachable from this member (election, partition, shutdown)
            // and nothing was proposed: 503 tells clients to try another member.
            StoreError::NotLeader { .. } | StoreError::Stopped(_) => {
                RegistryError::Unavailable(e.to_string())
            }
            // A write whose outcome is unknown (proposed, not confirmed in time):
            // 504, which clients must not blindly retry.
            StoreError::Timeout(_) => RegistryError::Unknown(e.to_string()),
            StoreError::TooLarge(m) => RegistryError::TooLarge(m),
            // A valid request the cluster will not carry out (removing its last
            // voter, re-using a member id elsewhere): the caller's to change.
            StoreError::Refused(m) => RegistryError::Conflict(m),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for RegistryError {
    fn from(e: serde_json::Error) -> Self {
        RegistryError::Internal(format!("stored object does not decode: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A read that timed out changed nothing: retryable, unlike a write's timeout.
pub fn read_error(e: StoreError) -> RegistryError {
    match e {
        StoreError::Timeout(m) => RegistryError::Unavailable(m),
        other => other.into(),
    }
}

pub(super) fn stale(kind: Kind, name: &str, given: Revision, stored: Revision) -> RegistryError {
    RegistryError::Conflict(format!(
        "{kind} {name:?} has changed: you sent resource_version {given}, the stored one is {stored}; read it again and retry"
    ))
}

pub(super) fn concurrent(kind: Kind, name: &str) -> RegistryError {
    RegistryError::Conflict(format!(
        "{kind} {name:?} was modified concurrently; read it again and retry"
    ))
}

/// Prefixes a field path with the item's index in an apply request.
pub(super) fn at_item(index: usize, error: RegistryError) -> RegistryError {
    match error {
        RegistryError::Invalid(e) => RegistryError::Invalid(FieldError::new(
            format!("items[{index}].{}", e.path),
            e.message,
        )),
        other => other,
    }
}
