//! Pod logs through the API server: `GET …/pods/{name}/log[?follow=1][&previous=1]`.
//!
//! Logs live on the pod's node, so the member (after the gate authorised its
//! caller) finds the node and relays the node's answer as it streams. The
//! request to the node is signed with the node-access key
//! ([`reef_api::signing`]), which nodes fetch with their own credential and
//! no tenant can read; the client follows no redirects, so a node address
//! can only ever mean that node's own port.

use super::error::{ApiFailure, ApiResult};
use super::objects::linearizable;
use super::ApiState;
use crate::registry::RegistryError;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reef_api::client::NodeAccess;
use reef_api::{ApiError, Kind, Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Who signs the control plane's requests to nodes.
const SIGNER: &str = "control-plane";

/// One pooled client to the nodes, made on first use.
fn node_client() -> ApiResult<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| ApiFailure(RegistryError::Internal(e.to_string())))?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `GET /api/v1/cluster/node-access`: for nodes (and admins).
#[utoipa::path(
    get,
    path = "/api/v1/cluster/node-access",
    responses((status = 200, description = "the key node-to-node requests are signed with (nodes, admin)", body = reef_api::client::NodeAccess), super::openapi::Failures)
)]
pub async fn node_access(State(state): State<Arc<ApiState>>) -> ApiResult<Response> {
    linearizable(&state).await?;
    let secret = state.credentials.node_access_key().await?;
    Ok(Json(NodeAccess { secret }).into_response())
}

fn gateway(status: StatusCode, message: String) -> Response {
    let body = ApiError {
        code: status.as_u16(),
        reason: status
            .canonical_reason()
            .unwrap_or("Error")
            .replace(' ', ""),
        message,
        field: None,
    };
    (status, Json(body)).into_response()
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/pods/{name}/log",
    params(
        ("ns" = String, Path, description = "namespace"),
        ("name" = String, Path),
        ("follow" = Option<String>, Query, description = "1: keep streaming"),
        ("previous" = Option<String>, Query, description = "1: the run before the last restart")
    ),
    responses((status = 200, description = "stdout and stderr", content_type = "text/plain", body = String), super::openapi::Failures)
)]
pub async fn pod_log(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    linearizable(&state).await?;
    let pod: Pod = state
        .registry
        .get(Kind::Pod, Some(&namespace), &name)?
        .typed::<PodSpec, PodStatus>()
        .map_err(|e| ApiFailure(RegistryError::Internal(e.to_string())))?;
    let Some(node_name) = pod.spec.node.clone() else {
        return Ok(gateway(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{name} is not bound to a node yet: it has no logs"),
        ));
    };
    let node: Node = state
        .registry
        .get(Kind::Node, None, &node_name)?
        .typed::<NodeSpec, NodeStatus>()
        .map_err(|e| ApiFailure(RegistryError::Internal(e.to_string())))?;
    if reef_api::validate::host_port(&node.spec.address).is_err() {
        // Not 503: that would make clients try other members, which know no better.
        return Ok(gateway(
            StatusCode::BAD_GATEWAY,
            format!("node {node_name} publishes no address to fetch logs from"),
        ));
    }
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "1" || v == "true");
    let (follow, previous) = (flag("follow"), flag("previous"));
    let key = state.credentials.node_access_key().await?;
    let target = format!(
        "/_reef/logs/{namespace}/{name}?uid={}&follow={}&previous={}",
        pod.metadata.uid,
        u8::from(follow),
        u8::from(previous)
    );
    let signature = reef_api::signing::sign(&key, SIGNER, "GET", &target, "");
    let url = format!("http://{}{target}", node.spec.address);
    let answer = match node_client()?
        .get(&url)
        .header(reef_api::signing::SIGNATURE_HEADER, signature)
        .send()
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            return Ok(gateway(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cannot reach node {node_name} at {} for the logs of {namespace}/{name}: {e}",
                    node.spec.address
                ),
            ))
        }
    };
    let status = match answer.status().as_u16() {
        // The node refused this member's credentials: not the caller's fault.
        401 | 403 => StatusCode::BAD_GATEWAY,
        code => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
    };
    if !status.is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Ok(gateway(
            status,
            format!("node {node_name}: {}", text.trim_end()),
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(answer.bytes_stream()),
    )
        .into_response())
}
