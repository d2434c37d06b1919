//! Pod logs through the API server: `GET …/pods/{name}/log[?follow=1][&previous=1]`.
//!
//! Logs live on the pod's node, so the member authorises the caller, finds the
//! node, and relays the node's answer as it streams. Nodes take such requests
//! only with the cluster's node-access secret, which nodes fetch with their
//! join token and which no other API accepts: a leaked one reads logs, nothing
//! more.

use super::auth::{new_token, Role};
use super::error::{ApiFailure, ApiResult};
use super::objects::{authorize, linearizable, Action};
use super::{ApiState, Caller};
use crate::registry::RegistryError;
use crate::store::{Check, Op, Txn};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use reef_api::client::NodeAccess;
use reef_api::{ApiError, Kind, Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the node-access secret lives in the key space (replicated, backed up).
const NODE_ACCESS_KEY: &str = "/cluster/node-access";

/// The node-access secret, minted on first use.
async fn node_access_secret(state: &ApiState) -> ApiResult<String> {
    let store = state.registry.store();
    if let Some(kv) = store.get(NODE_ACCESS_KEY).map_err(RegistryError::from)? {
        return Ok(String::from_utf8_lossy(&kv.value).into_owned());
    }
    let secret = new_token();
    // Only if still absent: two members minting at once agree on the first.
    store
        .txn(Txn {
            checks: vec![Check::Absent {
                key: NODE_ACCESS_KEY.into(),
            }],
            ops: vec![Op::Put {
                key: NODE_ACCESS_KEY.into(),
                value: secret.clone().into_bytes(),
            }],
        })
        .await
        .map_err(RegistryError::from)?;
    let kv = store
        .get(NODE_ACCESS_KEY)
        .map_err(RegistryError::from)?
        .ok_or_else(|| {
            ApiFailure(RegistryError::Internal(
                "node-access secret vanished".into(),
            ))
        })?;
    Ok(String::from_utf8_lossy(&kv.value).into_owned())
}

/// One pooled client to the nodes, made on first use.
fn node_client() -> ApiResult<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| ApiFailure(RegistryError::Internal(e.to_string())))?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `GET /api/v1/cluster/node-access`: for nodes (and admins).
pub async fn node_access(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    // Exhaustive on purpose: a new role must decide whether it may see this.
    match caller.role {
        Role::Admin | Role::Node => {}
    }
    linearizable(&state).await?;
    let secret = node_access_secret(&state).await?;
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
pub async fn pod_log(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    authorize(&caller, Action::Read, Kind::Pod)?;
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
    if node.spec.address.is_empty() {
        // Not 503: that would make clients try other members, which know no better.
        return Ok(gateway(
            StatusCode::BAD_GATEWAY,
            format!("node {node_name} publishes no address to fetch logs from"),
        ));
    }
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "1" || v == "true");
    let (follow, previous) = (flag("follow"), flag("previous"));
    let secret = node_access_secret(&state).await?;
    let url = format!(
        "http://{}/_reef/logs/{namespace}/{name}?uid={}&follow={}&previous={}",
        node.spec.address,
        pod.metadata.uid,
        u8::from(follow),
        u8::from(previous)
    );
    let answer = match node_client()?.get(&url).bearer_auth(&secret).send().await {
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
