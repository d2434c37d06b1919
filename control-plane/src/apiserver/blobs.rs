//! Component bytes over HTTP: `PUT|GET|HEAD /api/v1/blobs/sha256:HEX`. The
//! registry verifies, stores and claims them; here the caller's namespace is
//! chosen (a tenant's own; the admin's `?namespace=`) and the size capped.

use super::error::{ApiFailure, ApiResult};
use super::{ApiState, Caller};
use crate::credentials::Identity;
use crate::registry::RegistryError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use reef_api::{Kind, RawObject};
use std::collections::HashMap;
use std::sync::Arc;

type S = State<Arc<ApiState>>;
type C = Extension<Caller>;
type Q = Query<HashMap<String, String>>;

/// The namespace an upload or a presence check is for.
fn namespace<'a>(caller: &'a Caller, query: &'a HashMap<String, String>) -> Option<&'a str> {
    match &caller.identity {
        Identity::Tenant { tenant, .. } => Some(tenant),
        _ => query.get("namespace").map(String::as_str),
    }
}

fn missing(digest: &str) -> ApiFailure {
    ApiFailure(RegistryError::NotFound {
        kind: Kind::Blob,
        name: digest.to_string(),
    })
}

#[utoipa::path(
    put,
    path = "/api/v1/blobs/{digest}",
    params(
        ("digest" = String, Path, description = "sha256:HEX of the body"),
        ("namespace" = Option<String>, Query, description = "the namespace the upload is for (admin; a tenant's is its own)")
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn put_handler(
    State(state): S,
    Extension(caller): C,
    Path(digest): Path<String>,
    Query(query): Q,
    body: Bytes,
) -> ApiResult<Response> {
    if body.len() > state.max_blob_size {
        return Err(ApiFailure::too_large(format!(
            "the blob is {} bytes, over this cluster's limit of {} (--max-blob-size)",
            body.len(),
            state.max_blob_size
        )));
    }
    let stored = state
        .registry
        .put_blob(&digest, &body, namespace(&caller, &query))
        .await?;
    Ok(Json(stored).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/blobs/{digest}",
    params(
        ("digest" = String, Path, description = "sha256:HEX")
    ),
    responses((status = 200, description = "the component's bytes", content_type = "application/wasm", body = Vec<u8>), super::openapi::Failures)
)]
pub async fn get_handler(State(state): S, Path(digest): Path<String>) -> ApiResult<Response> {
    // A lagging member catches up first: an upload acknowledged elsewhere is visible here.
    super::objects::linearizable(&state).await?;
    let registry = state.registry.clone();
    let key = digest.clone();
    // A RocksDB read of up to the blob cap: keep it off the async workers.
    let bytes = tokio::task::spawn_blocking(move || registry.read_blob(&key))
        .await
        .map_err(|e| RegistryError::Internal(format!("blob read task: {e}")))??
        .ok_or_else(|| missing(&digest))?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

/// Existence and size from the Blob object alone, without reading the bytes;
/// with a namespace, only if the component was uploaded to it.
#[utoipa::path(
    head,
    path = "/api/v1/blobs/{digest}",
    params(
        ("digest" = String, Path, description = "sha256:HEX"),
        ("namespace" = Option<String>, Query, description = "only if uploaded to this namespace")
    ),
    responses((status = 200, description = "the component exists (and was uploaded to the namespace)"), super::openapi::Failures)
)]
pub async fn head_handler(
    State(state): S,
    Extension(caller): C,
    Path(digest): Path<String>,
    Query(query): Q,
) -> ApiResult<Response> {
    super::objects::linearizable(&state).await?;
    let blob = state
        .registry
        .blob_in(&digest, namespace(&caller, &query))?
        .ok_or_else(|| missing(&digest))?;
    let size = blob
        .spec
        .get("size")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        (),
    )
        .into_response())
}
