//! Cluster operations over HTTP: membership, the join handshake and backups.

use super::error::{ApiFailure, ApiResult};
use super::ApiState;
use crate::registry::RegistryError;
use crate::store::{MemberRole, StoreError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    /// "leader", "follower" or "learner".
    pub role: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub id: u64,
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinInfo {
    pub raft_secret: String,
    /// The cluster CA, which a joining member serves under and trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<crate::tls::ClusterCa>,
}

fn store_error(e: StoreError) -> ApiFailure {
    ApiFailure(RegistryError::from(e))
}

type S = State<Arc<ApiState>>;

#[utoipa::path(
    get,
    path = "/api/v1/members",
    responses((status = 200, description = "the control-plane members", body = Vec<reef_api::client::Member>), super::openapi::Failures)
)]
pub async fn members(State(state): S) -> ApiResult<Response> {
    let members: Vec<MemberView> = state
        .registry
        .store()
        .members()
        .into_iter()
        .map(|m| MemberView {
            id: m.id,
            address: m.address,
            role: match m.role {
                MemberRole::Leader => "leader",
                MemberRole::Follower => "follower",
                MemberRole::Learner => "learner",
            }
            .to_string(),
        })
        .collect();
    Ok(Json(members).into_response())
}

/// Adds a member: learner first, voter once caught up. The member token may do
/// this, as that is how a new `reef control-plane --join` introduces itself.
#[utoipa::path(
    post,
    path = "/api/v1/members",
    request_body = super::openapi::NewMember,
    responses((status = 200, description = "the new membership", body = Vec<reef_api::client::Member>), super::openapi::Failures)
)]
pub async fn add_member(State(state): S, body: axum::body::Bytes) -> ApiResult<Response> {
    let request: JoinRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiFailure::invalid(
            "",
            format!("expected {{\"id\": N, \"address\": \"host:port\"}}: {e}"),
        )
    })?;
    if request.id == 0 {
        return Err(ApiFailure::invalid("id", "member ids start at 1"));
    }
    if request.address.parse::<std::net::SocketAddr>().is_err() && !request.address.contains(':') {
        return Err(ApiFailure::invalid(
            "address",
            format!("{:?} is not host:port", request.address),
        ));
    }
    state
        .registry
        .store()
        .add_member(request.id, request.address)
        .await
        .map_err(store_error)?;
    members(State(state)).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/members/{id}",
    params(
        ("id" = u64, Path)
    ),
    responses((status = 200, description = "the new membership", body = Vec<reef_api::client::Member>), super::openapi::Failures)
)]
pub async fn remove_member(State(state): S, Path(id): Path<u64>) -> ApiResult<Response> {
    state
        .registry
        .store()
        .remove_member(id)
        .await
        .map_err(store_error)?;
    members(State(state)).await
}

/// What a joining member needs before it can take part in Raft (member token only).
#[utoipa::path(
    get,
    path = "/api/v1/cluster/join",
    responses((status = 200, description = "the Raft secret and the cluster CA (member token only)", body = serde_json::Value), super::openapi::Failures)
)]
pub async fn join_info(State(state): S) -> ApiResult<Response> {
    let raft_secret = state
        .credentials
        .raft_secret()?
        .ok_or_else(|| RegistryError::Unavailable("the cluster has no Raft secret yet".into()))?;
    let ca = state.credentials.cluster_ca()?;
    Ok(Json(JoinInfo { raft_secret, ca }).into_response())
}

/// A consistent backup of the key space and blobs. Written to a temporary file
/// first (never held in memory), then streamed with its revision and checksum in
/// headers.
#[utoipa::path(
    get,
    path = "/api/v1/admin/backup",
    responses((status = 200, description = "a consistent backup", content_type = "application/octet-stream", body = Vec<u8>), super::openapi::Failures)
)]
pub async fn backup(State(state): S) -> ApiResult<Response> {
    let store = state.registry.store().clone();
    store
        .read_barrier()
        .await
        .map_err(|e| ApiFailure(crate::registry::read_error(e)))?;
    let file = tempfile::tempfile()
        .map_err(|e| RegistryError::Internal(format!("backup temp file: {e}")))?;
    let mut file = tokio::fs::File::from_std(file);
    let info = store.backup(&mut file).await.map_err(store_error)?;
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| RegistryError::Internal(format!("backup temp file: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, info.bytes.to_string()),
            (
                header::HeaderName::from_static("x-reef-revision"),
                info.revision.to_string(),
            ),
            (
                header::HeaderName::from_static("x-reef-sha256"),
                info.checksum.clone(),
            ),
        ],
        body,
    )
        .into_response())
}
