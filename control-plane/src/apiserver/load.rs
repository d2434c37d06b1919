//! `PUT /api/v1/nodes/{name}/load`: a node proxy's load report, for the
//! autoscaler. Held in the leader's memory, never written to the store; a
//! follower answers 503, which sends the node's client on to the next
//! member it knows (nodes should know every member).

use super::error::{ApiFailure, ApiResult};
use super::ApiState;
use crate::autoscaler::board::MAX_REPORTED_DEPLOYMENTS;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reef_api::validate::parse_at;
use reef_api::LoadReport;
use std::sync::Arc;

#[utoipa::path(
    put,
    path = "/api/v1/nodes/{name}/load",
    params(
        ("name" = String, Path)
    ),
    request_body = LoadReport,
    responses((status = 204, description = "taken"), super::openapi::Failures)
)]
pub async fn report(
    State(state): State<Arc<ApiState>>,
    Path(node): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiFailure::bad_request(format!("the body is not valid JSON: {e}")))?;
    let report: LoadReport = parse_at("", &value)
        .map_err(|e| ApiFailure::invalid(e.path.trim_start_matches('.').to_string(), e.message))?;
    if report.deployments.len() > MAX_REPORTED_DEPLOYMENTS {
        return Err(ApiFailure::invalid(
            "deployments",
            format!(
                "a report names at most {MAX_REPORTED_DEPLOYMENTS} deployments, this one {}",
                report.deployments.len()
            ),
        ));
    }
    let store = state.registry.store();
    if !store.is_leader() {
        let leader = store
            .leader_id()
            .map_or("none known".to_string(), |id| format!("member {id}"));
        return Err(ApiFailure::unavailable(format!(
            "load reports go to the leader ({leader}), which runs the autoscaler"
        )));
    }
    state.load.report(&node, report);
    Ok(StatusCode::NO_CONTENT.into_response())
}
