//! Component bytes, content-addressed by sha256 and replicated through the Raft log in
//! chunks, so every member holds them before the Blob object commits.

use super::error::{ApiFailure, ApiResult};
use super::objects::{authorize, Action};
use super::{ApiState, Caller};
use crate::registry::{Precondition, RegistryError};
use crate::store::{Op, Txn};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use reef_api::validate;
use reef_api::{BlobSpec, Kind, Metadata, Object};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One Raft entry per chunk keeps entries small enough to replicate smoothly.
const CHUNK: usize = 1 << 20;

pub async fn put(state: &ApiState, digest: &str, body: Bytes) -> ApiResult<Response> {
    validate::digest(digest).map_err(|m| ApiFailure::invalid("metadata.name", m))?;
    if body.len() > state.max_blob_size {
        return Err(ApiFailure::bad_request(format!(
            "the blob is {} bytes, over this cluster's limit of {} (--max-blob-size)",
            body.len(),
            state.max_blob_size
        )));
    }
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if actual != digest {
        return Err(ApiFailure::invalid(
            "body",
            format!("the body hashes to {actual}, not {digest}"),
        ));
    }
    if let Some(existing) = state.registry.try_get(Kind::Blob, None, digest)? {
        return Ok(Json(existing).into_response());
    }
    let store = state.registry.store();
    for (i, chunk) in body.chunks(CHUNK).enumerate() {
        let txn = Txn {
            checks: vec![],
            ops: vec![Op::PutBlobChunk {
                digest: digest.to_string(),
                offset: (i * CHUNK) as u64,
                data: chunk.to_vec(),
            }],
        };
        store.txn(txn).await.map_err(RegistryError::from)?;
    }
    let blob = Object {
        kind: Kind::Blob,
        metadata: Metadata {
            name: digest.to_string(),
            ..Metadata::default()
        },
        spec: BlobSpec {
            size: body.len() as u64,
        },
        status: serde_json::Value::Null,
    };
    let raw = blob.to_raw().map_err(RegistryError::from)?;
    let stored = match state.registry.put(&raw, Precondition::CreateOnly).await {
        Ok(stored) => stored,
        // A concurrent upload of the same bytes won: same content, same answer.
        Err(RegistryError::Conflict(_)) => state.registry.get(Kind::Blob, None, digest)?,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(stored).into_response())
}

async fn read(state: &ApiState, digest: &str) -> ApiResult<Response> {
    // A lagging member catches up first: an upload acknowledged elsewhere is visible here.
    state
        .registry
        .store()
        .read_barrier()
        .await
        .map_err(RegistryError::from)?;
    // The Blob object commits after the last chunk, so its presence means complete bytes.
    state.registry.get(Kind::Blob, None, digest)?;
    let store = state.registry.store().clone();
    let key = digest.to_string();
    // A RocksDB read of up to the blob cap: keep it off the async workers.
    let bytes = tokio::task::spawn_blocking(move || store.read_blob(&key))
        .await
        .map_err(|e| RegistryError::Internal(format!("blob read task: {e}")))?
        .map_err(RegistryError::from)?
        .ok_or_else(|| RegistryError::NotFound {
            kind: Kind::Blob,
            name: digest.to_string(),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

type S = State<Arc<ApiState>>;
type C = Extension<Caller>;

pub async fn get_handler(
    State(state): S,
    Extension(caller): C,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    authorize(&caller, Action::Read, Kind::Blob)?;
    read(&state, &digest).await
}

/// Existence and size from the Blob object alone, without reading the bytes.
pub async fn head_handler(
    State(state): S,
    Extension(caller): C,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    authorize(&caller, Action::Read, Kind::Blob)?;
    state
        .registry
        .store()
        .read_barrier()
        .await
        .map_err(RegistryError::from)?;
    let blob = state.registry.get(Kind::Blob, None, &digest)?;
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

pub async fn put_handler(
    State(state): S,
    Extension(caller): C,
    Path(digest): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&caller, Action::WriteSpec, Kind::Blob)?;
    put(&state, &digest, body).await
}
