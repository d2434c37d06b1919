//! Tokens over HTTP: mint, list and revoke tenants' tokens, exchange a join
//! token for a node's credential, and tell a caller who it is. The gate has
//! already decided the caller may use these routes; here each answer is
//! scoped to what the caller's identity covers.

use super::error::{ApiFailure, ApiResult};
use super::{ApiState, Caller};
use crate::credentials::Identity;
use crate::registry::RegistryError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use reef_api::identity::{IssuedToken, TokenInfo, TokenRequest};
use reef_api::validate::parse_at;
use reef_api::Kind;
use std::sync::Arc;

type S = State<Arc<ApiState>>;
type C = Extension<Caller>;

/// The tenant whose tokens a caller manages: all (admin) or its own.
fn scope(caller: &Caller) -> ApiResult<Option<&str>> {
    match &caller.identity {
        Identity::Admin => Ok(None),
        Identity::Tenant { tenant, .. } => Ok(Some(tenant)),
        other => Err(ApiFailure::forbidden(format!("{other} manages no tokens"))),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    responses((status = 200, description = "the caller's identity and token id", body = serde_json::Value), super::openapi::Failures)
)]
pub async fn whoami(Extension(caller): C) -> Response {
    Json(serde_json::json!({
        "identity": caller.identity,
        "token_id": caller.token_id,
    }))
    .into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    responses((status = 200, description = "tokens the caller manages, without secrets", body = serde_json::Value), super::openapi::Failures)
)]
pub async fn list(State(state): S, Extension(caller): C) -> ApiResult<Response> {
    let tenant = scope(&caller)?;
    super::objects::linearizable(&state).await?;
    let tokens = state.credentials.list_tokens(tenant)?;
    Ok(Json(serde_json::json!({ "items": tokens })).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    request_body = TokenRequest,
    responses((status = 200, description = "the token, shown once", body = IssuedToken), super::openapi::Failures)
)]
pub async fn create(State(state): S, Extension(caller): C, body: Bytes) -> ApiResult<Response> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiFailure::bad_request(format!("the body is not valid JSON: {e}")))?;
    let request: TokenRequest = parse_at("", &value)
        .map_err(|e| ApiFailure::invalid(e.path.trim_start_matches('.').to_string(), e.message))?;
    if let Some(own) = scope(&caller)? {
        if own != request.tenant {
            return Err(ApiFailure::forbidden(format!(
                "{} may only mint tokens of tenant {own:?}",
                caller.identity
            )));
        }
    }
    const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
    if request.ttl.is_some_and(|ttl| ttl.0 > MAX_TTL) {
        return Err(ApiFailure::invalid(
            "ttl",
            "a token's ttl may be at most a year",
        ));
    }
    super::objects::linearizable(&state).await?;
    state
        .registry
        .get(Kind::Tenant, None, &request.tenant)
        .map_err(|e| match e {
            RegistryError::NotFound { .. } => ApiFailure::invalid(
                "tenant",
                format!("there is no tenant {:?}: create it first", request.tenant),
            ),
            other => ApiFailure(other),
        })?;
    let identity = Identity::Tenant {
        tenant: request.tenant,
        role: request.role,
    };
    let (info, token) = state
        .credentials
        .create_token(identity, request.ttl.map(|t| t.0))
        .await?;
    Ok(Json(IssuedToken { info, token }).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    params(
        ("id" = String, Path)
    ),
    responses((status = 200, description = "the revoked token", body = TokenInfo), super::openapi::Failures)
)]
pub async fn revoke(
    State(state): S,
    Extension(caller): C,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let tenant = scope(&caller)?;
    let revoked = state.credentials.revoke(&id, tenant).await?;
    Ok(Json(revoked).into_response())
}

/// `POST /api/v1/nodes/{name}/credential` with the join token.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{name}/credential",
    params(
        ("name" = String, Path)
    ),
    responses((status = 200, description = "the node's own credential (join token only, once per name)", body = serde_json::Value), super::openapi::Failures)
)]
pub async fn node_credential(State(state): S, Path(name): Path<String>) -> ApiResult<Response> {
    super::objects::linearizable(&state).await?;
    let token = state.credentials.issue_node_credential(&name).await?;
    Ok(Json(serde_json::json!({ "token": token })).into_response())
}
