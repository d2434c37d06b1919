//! Component bytes, content-addressed by sha256 and replicated through the Raft log in
//! chunks, so every member holds them before the Blob object commits.

use super::error::{ApiFailure, ApiResult};
use super::ApiState;
use crate::registry::{Precondition, RegistryError};
use crate::store::{Op, Txn};
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reef_api::validate;
use reef_api::{BlobSpec, Kind, Metadata, Object};
use sha2::{Digest, Sha256};

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

pub fn get(state: &ApiState, digest: &str) -> ApiResult<Response> {
    // The Blob object commits after the last chunk, so its presence means complete bytes.
    state.registry.get(Kind::Blob, None, digest)?;
    let bytes = state
        .registry
        .store()
        .read_blob(digest)
        .map_err(RegistryError::from)?
        .ok_or_else(|| RegistryError::NotFound {
            kind: Kind::Blob,
            name: digest.to_string(),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}
