//! Handler errors become JSON [`reef_api::ApiError`] bodies with the matching
//! status: the one place that maps registry outcomes onto HTTP.

use super::authz::{Request, Verb};
use crate::registry::RegistryError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reef_api::validate::FieldError;
use reef_api::ApiError;

pub struct ApiFailure(pub RegistryError);

impl From<RegistryError> for ApiFailure {
    fn from(e: RegistryError) -> Self {
        ApiFailure(e)
    }
}

impl ApiFailure {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiFailure(RegistryError::BadRequest(message.into()))
    }
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ApiFailure(RegistryError::Invalid(FieldError::new(path, message)))
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiFailure(RegistryError::Forbidden(message.into()))
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiFailure(RegistryError::Missing(message.into()))
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiFailure(RegistryError::TooLarge(message.into()))
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiFailure(RegistryError::Unavailable(message.into()))
    }
}

/// The status and reason word of each registry outcome.
fn status(e: &RegistryError) -> (StatusCode, &'static str) {
    match e {
        RegistryError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
        RegistryError::NotFound { .. }
        | RegistryError::UnknownKind(_)
        | RegistryError::Missing(_) => (StatusCode::NOT_FOUND, "NotFound"),
        RegistryError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        RegistryError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        RegistryError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "QuotaExceeded"),
        RegistryError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
        RegistryError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
        RegistryError::Gone { .. } => (StatusCode::GONE, "Expired"),
        RegistryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        RegistryError::Unknown(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        RegistryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    }
}

pub fn to_api_error(e: &RegistryError) -> ApiError {
    let (code, reason) = status(e);
    let (message, field) = match e {
        RegistryError::Invalid(f) => (f.message.clone(), Some(f.path.clone())),
        other => (other.to_string(), None),
    };
    ApiError {
        code: code.as_u16(),
        reason: reason.to_string(),
        message,
        field,
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (code, _) = status(&self.0);
        let body = to_api_error(&self.0);
        if code.is_server_error() {
            tracing::warn!("request failed: {}", body.message);
        }
        (code, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;

/// What a refused request asked for, in words that name no object (a refusal
/// must not confirm what exists in another tenant's namespace).
pub fn describe(request: &Request) -> String {
    match request {
        Request::Objects {
            verb,
            kind,
            namespace,
            ..
        } => {
            let verb = match verb {
                Verb::List => "list",
                Verb::Watch => "watch",
                Verb::Get => "read",
                Verb::Put => "write",
                Verb::PutStatus => "write the status of",
                Verb::Delete => "delete",
            };
            match namespace {
                Some(ns) => format!("{verb} {} in namespace {ns:?}", kind.plural()),
                None if kind.namespaced() => {
                    format!("{verb} {} across namespaces", kind.plural())
                }
                None => format!("{verb} {}", kind.plural()),
            }
        }
        Request::Apply => "apply objects".into(),
        Request::BlobRead { .. } => "read this component".into(),
        Request::BlobWrite => "upload components".into(),
        Request::BlobDelete => "delete components".into(),
        Request::PodLog { namespace, .. } => format!("read pod logs in namespace {namespace:?}"),
        Request::Members => "list control-plane members".into(),
        Request::AddMember => "add a control-plane member".into(),
        Request::RemoveMember => "remove a control-plane member".into(),
        Request::JoinInfo => "read the cluster's member secret".into(),
        Request::NodeAccess => "read the node-access key".into(),
        Request::NodeCredential { .. } => "register a node".into(),
        Request::NodeLoad { node } => format!("report the load of node {node:?}"),
        Request::Backup => "take a backup".into(),
        Request::TokensList => "list tokens".into(),
        Request::TokensCreate => "create tokens".into(),
        Request::TokensRevoke => "revoke tokens".into(),
        Request::Metrics => "read metrics".into(),
        Request::WhoAmI => "ask who it is".into(),
    }
}
