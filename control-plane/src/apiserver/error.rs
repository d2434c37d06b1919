//! Handler errors become JSON [`reef_api::ApiError`] bodies with the matching status.

use crate::registry::RegistryError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reef_api::validate::FieldError;

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
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = self.0.to_api_error();
        if body.code >= 500 {
            tracing::warn!("request failed: {}", body.message);
        }
        let status = StatusCode::from_u16(body.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;
