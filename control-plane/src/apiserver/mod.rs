//! The API server (DESIGN §6): HTTP in front of the [`Registry`].
//!
//! Order of the stack, outermost first: body limit → authentication (bearer token →
//! role) → handler (authorisation by role, then the registry does validation,
//! admission and the compare-and-swap write). Raft RPCs share the port but not the
//! authentication: they carry the cluster secret.

pub mod auth;
mod blobs;
pub mod cluster;
mod error;
mod filter;
mod logs;
mod objects;
mod watch;

use crate::registry::Registry;
use auth::Role;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiFailure;
use reef_api::Kind;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiResult;

/// Largest JSON request body: a manifest of thousands of objects fits easily.
const JSON_BODY_LIMIT: usize = 8 << 20;

/// Who is calling, as established by the bearer token.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub role: Role,
}

pub struct ApiState {
    pub registry: Registry,
    pub max_blob_size: usize,
    pub bookmark_interval: Duration,
}

pub struct ApiConfig {
    pub max_blob_size: usize,
    pub bookmark_interval: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_blob_size: 64 << 20,
            bookmark_interval: Duration::from_secs(10),
        }
    }
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let role = match token {
        Some(token) => auth::role_of(&state.registry, token),
        None => Ok(None),
    };
    match role {
        Ok(Some(role)) => {
            request.extensions_mut().insert(Caller { role });
            next.run(request).await
        }
        Ok(None) => {
            let body = reef_api::ApiError {
                code: 401,
                reason: "Unauthorized".into(),
                message: "missing or unknown bearer token: use the admin token from `reef up` (in the client config) or REEF_TOKEN".into(),
                field: None,
            };
            (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
        }
        Err(e) => ApiFailure(e).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when this member knows a leader and can serve the key space.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    match state.registry.store().leader_id() {
        Some(leader) => (StatusCode::OK, format!("ok (leader {leader})\n")).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no raft leader known\n").into_response(),
    }
}

/// A few Prometheus gauges; more arrive with the features that need them.
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let store = state.registry.store();
    let progress = store.progress();
    let gauges = [
        (
            "reef_store_revision",
            "last applied Raft index",
            store.revision(),
        ),
        (
            "reef_store_is_leader",
            "1 on the leader",
            u64::from(store.is_leader()),
        ),
        ("reef_store_term", "current Raft term", progress.term),
        (
            "reef_store_last_log_index",
            "last Raft log index",
            progress.last_log_index,
        ),
        (
            "reef_store_snapshot_index",
            "last index in this member's snapshot",
            progress.snapshot_index,
        ),
        (
            "reef_store_purged_index",
            "log compacted up to here",
            progress.purged_index,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    out.push_str("# TYPE reef_objects gauge\n");
    for kind in Kind::ALL {
        if let Ok((items, _)) = state
            .registry
            .store()
            .range(&crate::registry::prefix(kind, None))
        {
            out.push_str(&format!(
                "reef_objects{{kind=\"{}\"}} {}\n",
                kind.plural(),
                items.len()
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The whole HTTP surface of a control-plane member.
pub fn router(registry: Registry, config: ApiConfig) -> Router {
    let raft = registry.store().raft_router();
    let state = Arc::new(ApiState {
        registry,
        max_blob_size: config.max_blob_size,
        bookmark_interval: config.bookmark_interval,
    });
    let blob_limit = state.max_blob_size + (1 << 20);
    let api = Router::new()
        .route(
            "/api/v1/blobs/{digest}",
            get(blobs::get_handler)
                .head(blobs::head_handler)
                .put(blobs::put_handler)
                .layer(DefaultBodyLimit::max(blob_limit))
                .delete(objects::delete_blob),
        )
        .route("/api/v1/apply", post(objects::apply))
        .route(
            "/api/v1/members",
            get(cluster::members).post(cluster::add_member),
        )
        .route(
            "/api/v1/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route("/api/v1/cluster/join", get(cluster::join_info))
        .route("/api/v1/cluster/node-access", get(logs::node_access))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/log",
            get(logs::pod_log),
        )
        .route("/api/v1/admin/backup", get(cluster::backup))
        .route("/api/v1/namespaces/{ns}/{kind}", get(objects::list_ns))
        .route(
            "/api/v1/namespaces/{ns}/{kind}/{name}",
            get(objects::get_ns)
                .put(objects::put_ns)
                .delete(objects::delete_ns),
        )
        .route(
            "/api/v1/namespaces/{ns}/{kind}/{name}/status",
            axum::routing::put(objects::status_ns),
        )
        .route("/api/v1/{kind}", get(objects::list_cluster))
        .route(
            "/api/v1/{kind}/{name}",
            get(objects::get_cluster)
                .put(objects::put_cluster)
                .delete(objects::delete_cluster),
        )
        .route(
            "/api/v1/{kind}/{name}/status",
            axum::routing::put(objects::status_cluster),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        // JSON bodies are small; only blob uploads (above) may be large.
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
        .merge(raft)
}
