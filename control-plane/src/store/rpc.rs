//! The server side of the member RPCs: axum routes the API server mounts on
//! its port, and the wire forms both sides share. Besides openraft's three
//! (`append`, `vote`, `snapshot`) members call each other for forwarded
//! writes (`txn`), read indexes (`read-index`), membership changes
//! (`add-member`, `remove-member`), a member's progress (`GET status`) and
//! the election watchdog's pre-vote (`GET quiet`).
//!
//! Order of a request: bearer check (before the body is read), body limit,
//! MessagePack decode, then the local Raft node. Replies are
//! `Result<response, RaftError>` in MessagePack with status 200, so a Raft-level
//! refusal travels as data; HTTP errors mean the call itself failed.

use std::sync::{Arc, Weak};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::TryStreamExt;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::campaign::Contact;
use super::error::StoreError;
use super::state_machine::{Shared, StateMachine};
use super::types::{NodeId, RaftError, Snapshot, SnapshotMeta, Txn, TypeConfig, Vote};
use super::{Raft, Store};

pub(crate) const PATH_APPEND: &str = "/raft/append";
pub(crate) const PATH_VOTE: &str = "/raft/vote";
pub(crate) const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub(crate) const PATH_TXN: &str = "/raft/txn";
pub(crate) const PATH_READ_INDEX: &str = "/raft/read-index";
pub(crate) const PATH_STATUS: &str = "/raft/status";
pub(crate) const PATH_QUIET: &str = "/raft/quiet";
pub(crate) const PATH_ADD_MEMBER: &str = "/raft/add-member";
pub(crate) const PATH_REMOVE_MEMBER: &str = "/raft/remove-member";
pub(crate) const MSGPACK: &str = "application/msgpack";

/// Why the leader side did not carry out a member RPC; the reply is
/// `Result<T, Refusal>`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// Not the leader (or shutting down): nothing was proposed.
    NotLeader { leader: Option<NodeId> },
    /// Did not finish in time; a write's outcome is unknown.
    Timeout(String),
    /// Will not do it (see [`StoreError::Refused`]).
    Refused(String),
    /// Anything else, as text.
    Failed(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotLeader { leader } => Refusal::NotLeader { leader },
            StoreError::Timeout(m) => Refusal::Timeout(m),
            StoreError::Refused(m) => Refusal::Refused(m),
            other => Refusal::Failed(other.to_string()),
        }
    }
}

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotLeader { leader } => StoreError::NotLeader { leader },
            Refusal::Timeout(m) => StoreError::Timeout(m),
            Refusal::Refused(m) => StoreError::Refused(m),
            Refusal::Failed(m) => StoreError::Raft(format!("on the leader: {m}")),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AddMember {
    pub id: NodeId,
    pub address: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RemoveMember {
    pub id: NodeId,
}

/// A member's progress, as it reports it (`GET /raft/status`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MemberStatus {
    pub id: NodeId,
    /// Last applied log index (a log position, not a revision).
    pub applied: u64,
    pub last_log_index: Option<u64>,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Holds Raft state (false for a fresh or wiped data dir).
    pub initialized: bool,
}

/// What the handlers need: the Raft handle for openraft's RPCs, and the
/// store (weakly, so open connections do not keep a dropped store's
/// database open) for the others.
#[derive(Clone)]
struct RpcState {
    raft: Raft,
    store: Weak<Store>,
    /// Told of every leader this member accepts, for the election watchdog.
    contact: Arc<Contact>,
}

/// Far above axum's 2 MiB default, which silently stalls snapshot installs and
/// batches of blob chunks. Only authenticated members get this far.
pub(crate) const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// What precedes a snapshot's bytes in `POST /raft/snapshot`: the leader's
/// vote and the snapshot's metadata, as a big-endian `u32` length and that
/// many bytes of MessagePack.
#[derive(Serialize, Deserialize)]
struct SnapshotHead {
    vote: Vote,
    meta: SnapshotMeta,
}

/// The largest snapshot head accepted (it holds the membership).
const SNAPSHOT_HEAD_LIMIT: u32 = 1 << 20;
/// The largest snapshot accepted: it carries every blob, so far above
/// [`BODY_LIMIT`]; only authenticated members get this far.
const SNAPSHOT_LIMIT: u64 = 64 << 30;

pub(crate) fn snapshot_head(vote: &Vote, meta: &SnapshotMeta) -> Result<Vec<u8>, StoreError> {
    let head = rmp_serde::to_vec_named(&SnapshotHead {
        vote: *vote,
        meta: meta.clone(),
    })
    .map_err(|e| StoreError::Codec(e.to_string()))?;
    let len = u32::try_from(head.len())
        .ok()
        .filter(|&l| l <= SNAPSHOT_HEAD_LIMIT)
        .ok_or_else(|| StoreError::TooLarge(format!("a snapshot head of {} bytes", head.len())))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&head);
    Ok(out)
}

pub(crate) fn router(store: &Arc<Store>) -> Router {
    let state = RpcState {
        raft: store.raft().clone(),
        store: Arc::downgrade(store),
        contact: store.contact.clone(),
    };
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_TXN, post(txn))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_STATUS, get(status))
        .route(PATH_QUIET, get(quiet))
        .route(PATH_ADD_MEMBER, post(add_member))
        .route(PATH_REMOVE_MEMBER, post(remove_member))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(store.secret(), authorize))
        .with_state(state)
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

async fn append(State(s): State<RpcState>, body: Bytes) -> Response {
    match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => {
            let result = s.raft.append_entries(req).await;
            // Anything but "your vote is stale" comes from the leader this member follows.
            if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                s.contact.heard();
            }
            reply(&result)
        }
        Err(e) => bad_request(e),
    }
}

async fn vote(State(s): State<RpcState>, body: Bytes) -> Response {
    match decode::<VoteRequest<TypeConfig>>(&body) {
        Ok(req) => {
            let result = s.raft.vote(req).await;
            // A candidate this member voted for is about to lead: do not run against it.
            if matches!(&result, Ok(r) if r.vote_granted) {
                s.contact.heard();
            }
            reply(&result)
        }
        Err(e) => bad_request(e),
    }
}

async fn snapshot(State(s): State<RpcState>, body: axum::body::Body) -> Response {
    let Some(store) = s.store.upgrade() else {
        return gone();
    };
    let shared = store.shared.clone();
    drop(store);
    let (vote, snapshot) = match receive_snapshot(&shared, body).await {
        Ok(received) => received,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("snapshot not received: {e}\n"),
            )
                .into_response()
        }
    };
    let result: Result<_, RaftError> = s
        .raft
        .install_full_snapshot(vote, snapshot)
        .await
        .map_err(RaftError::Fatal);
    if matches!(&result, Ok(r) if r.vote == vote) {
        s.contact.heard();
    }
    reply(&result)
}

/// Reads the head, then the rest of the body into a scratch file, bounded.
async fn receive_snapshot(
    shared: &Shared,
    body: axum::body::Body,
) -> Result<(Vote, Snapshot), StoreError> {
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let len = reader.read_u32().await?;
    if len > SNAPSHOT_HEAD_LIMIT {
        return Err(StoreError::TooLarge(format!(
            "a snapshot head of {len} bytes"
        )));
    }
    let mut head = vec![0; len as usize];
    reader.read_exact(&mut head).await?;
    let head: SnapshotHead =
        rmp_serde::from_slice(&head).map_err(|e| StoreError::Codec(e.to_string()))?;
    let mut file = StateMachine::scratch_file(shared)?;
    let copied = tokio::io::copy(&mut (&mut reader).take(SNAPSHOT_LIMIT + 1), &mut file).await?;
    if copied > SNAPSHOT_LIMIT {
        return Err(StoreError::TooLarge(format!(
            "a snapshot over {SNAPSHOT_LIMIT} bytes"
        )));
    }
    file.flush().await?;
    file.rewind().await?;
    Ok((
        head.vote,
        Snapshot {
            meta: head.meta,
            snapshot: file,
        },
    ))
}

async fn quiet(State(s): State<RpcState>) -> Response {
    match s.store.upgrade() {
        Some(store) => reply(&store.quiet().map_err(Refusal::from)),
        None => gone(),
    }
}

/// The store was dropped: the caller may safely try another member.
fn gone() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this member's store is closed\n",
    )
        .into_response()
}

async fn txn(State(s): State<RpcState>, body: Bytes) -> Response {
    let Some(store) = s.store.upgrade() else {
        return gone();
    };
    match decode::<Txn>(&body) {
        Ok(txn) => reply(&store.serve_txn(txn).await),
        Err(e) => bad_request(e),
    }
}

async fn read_index(State(s): State<RpcState>) -> Response {
    match s.store.upgrade() {
        Some(store) => reply(&store.serve_read_index().await),
        None => gone(),
    }
}

async fn status(State(s): State<RpcState>) -> Response {
    match s.store.upgrade() {
        Some(store) => reply(&Ok::<_, Refusal>(store.status())),
        None => gone(),
    }
}

async fn add_member(State(s): State<RpcState>, body: Bytes) -> Response {
    let Some(store) = s.store.upgrade() else {
        return gone();
    };
    match decode::<AddMember>(&body) {
        Ok(req) => reply(&store.serve_add_member(req).await),
        Err(e) => bad_request(e),
    }
}

async fn remove_member(State(s): State<RpcState>, body: Bytes) -> Response {
    let Some(store) = s.store.upgrade() else {
        return gone();
    };
    match decode::<RemoveMember>(&body) {
        Ok(req) => reply(&store.serve_remove_member(req).await),
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
