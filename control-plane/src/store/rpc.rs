//! The server side of the Raft RPCs: axum routes the API server mounts on its
//! port, and the wire forms both sides share.
//!
//! Order of a request: bearer check (before the body is read), body limit,
//! MessagePack decode, then the local Raft node. Replies are
//! `Result<response, RaftError>` in MessagePack with status 200, so a Raft-level
//! refusal travels as data; HTTP errors mean the call itself failed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{NodeId, Raft, SnapshotMeta, TypeConfig, Vote};

pub(crate) const PATH_APPEND: &str = "/raft/append";
pub(crate) const PATH_VOTE: &str = "/raft/vote";
pub(crate) const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub(crate) const MSGPACK: &str = "application/msgpack";

/// Far above axum's 2 MiB default, which silently stalls snapshot installs and
/// batches of blob chunks. Only authenticated members get this far.
pub(crate) const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// openraft's `InstallSnapshotRequest` with its data as MessagePack `bin`
/// (serde's default would send every byte as a separate integer).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotChunk {
    vote: Vote,
    meta: SnapshotMeta,
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> Self {
        SnapshotChunk {
            vote: r.vote,
            meta: r.meta,
            offset: r.offset,
            data: r.data,
            done: r.done,
        }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(c: SnapshotChunk) -> Self {
        InstallSnapshotRequest {
            vote: c.vote,
            meta: c.meta,
            offset: c.offset,
            data: c.data,
            done: c.done,
        }
    }
}

pub(crate) fn router(raft: Raft, secret: Arc<str>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(secret, authorize))
        .with_state(raft)
}

/// Compares without an early exit, so timing does not reveal the secret.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn authorize(
    State(secret): State<Arc<str>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same_secret(token.as_bytes(), secret.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            "raft RPCs need the member secret\n",
        )
            .into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(body)
}

fn bad_request(e: rmp_serde::decode::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("undecodable raft request: {e}\n"),
    )
        .into_response()
}

fn reply<T: Serialize>(value: &T) -> Response {
    match rmp_serde::to_vec_named(value) {
        Ok(body) => ([(header::CONTENT_TYPE, MSGPACK)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode raft reply: {e}\n"),
        )
            .into_response(),
    }
}

async fn append(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => reply(&raft.append_entries(req).await),
        Err(e) => bad_request(e),
    }
}

async fn vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode::<VoteRequest<NodeId>>(&body) {
        Ok(req) => reply(&raft.vote(req).await),
        Err(e) => bad_request(e),
    }
}

async fn snapshot(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode::<SnapshotChunk>(&body) {
        Ok(chunk) => reply(&raft.install_snapshot(chunk.into()).await),
        Err(e) => bad_request(e),
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secret_comparison() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
