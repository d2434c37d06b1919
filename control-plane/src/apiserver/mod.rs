//! The API server (DESIGN §6): HTTP in front of the [`Registry`].
//!
//! Order of the stack for `/api/v1/*`, outermost first: a declared body over
//! the route's limit is refused before anything is read → the gate (bearer
//! token → identity, then the one authorizer, [`authz`]) → body limit while
//! reading → handler (the registry does validation, admission and the
//! compare-and-swap write). Health
//! checks and the OpenAPI document need no token. Raft RPCs share the port but
//! not the gate: they carry the Raft secret, which only members hold.

pub mod authz;
mod blobs;
pub mod cluster;
mod error;
mod filter;
mod load;
mod logs;
mod objects;
pub mod openapi;
mod tokens;
mod watch;

use crate::autoscaler::board::LoadBoard;
use crate::credentials::{Authenticated, Credentials};
use crate::registry::Registry;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiFailure;
use reef_api::Kind;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiResult;

/// Largest JSON request body: a manifest of hundreds of objects fits easily.
pub const JSON_BODY_LIMIT: usize = 8 << 20;

/// Who is calling, as established by the bearer token.
pub type Caller = Authenticated;

pub struct ApiState {
    pub registry: Registry,
    pub credentials: Credentials,
    pub max_blob_size: usize,
    pub bookmark_interval: Duration,
    pub watches: watch::WatchLimits,
    /// Node proxies' load reports, for the autoscaler.
    pub load: LoadBoard,
}

pub struct ApiConfig {
    pub max_blob_size: usize,
    pub bookmark_interval: Duration,
    /// Open watch streams one token may hold.
    pub max_watches_per_token: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_blob_size: 64 << 20,
            bookmark_interval: Duration::from_secs(10),
            max_watches_per_token: 100,
        }
    }
}

fn unauthorized(message: &str) -> Response {
    let body = reef_api::ApiError {
        code: 401,
        reason: "Unauthorized".into(),
        message: message.into(),
        field: None,
    };
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// A request the authorizer cannot name never reaches a handler: 405 with
/// the methods the path takes, or 404 for a path the API does not serve.
fn unclassified(request: &Request, query: &HashMap<String, String>) -> Response {
    use axum::http::Method;
    let path = request.uri().path();
    let allowed: Vec<&str> = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
    ]
    .iter()
    .filter(|m| authz::classify(m, path, query).is_some())
    .map(Method::as_str)
    .collect();
    if allowed.is_empty() {
        return ApiFailure::not_found(format!("no route {path}")).into_response();
    }
    let body = reef_api::ApiError {
        code: 405,
        reason: "MethodNotAllowed".into(),
        message: format!(
            "{} is not served here; use {}",
            request.method(),
            allowed.join(", ")
        ),
        field: None,
    };
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allowed.join(", "))],
        axum::Json(body),
    )
        .into_response()
}

/// Authenticates the bearer token, then asks the authorizer; only a request
/// both let through reaches a handler, with its [`Caller`] attached.
async fn gate(State(state): State<Arc<ApiState>>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION);
    let token = match header.map(|v| v.to_str().map(|v| v.strip_prefix("Bearer "))) {
        None => return unauthorized(
            "missing bearer token: use the admin token from `reef up` (in the client config), a token from `reef token create`, or REEF_TOKEN",
        ),
        Some(Ok(Some(token))) if !token.trim().is_empty() => token.trim(),
        Some(_) => return unauthorized("malformed Authorization header: expected `Bearer TOKEN`"),
    };
    let caller = match state.credentials.authenticate(token) {
        Ok(Some(caller)) => caller,
        Ok(None) => return unauthorized("unknown, revoked or expired token"),
        Err(e) => return ApiFailure(e).into_response(),
    };
    let query = Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let Some(asked) = authz::classify(request.method(), request.uri().path(), &query) else {
        return unclassified(&request, &query);
    };
    let allowed = match authz::decide(&caller.identity, &asked) {
        authz::Decision::Allow => true,
        authz::Decision::Deny => false,
        authz::Decision::AllowIf(condition) => {
            match authz::holds(&condition, &state.registry).await {
                Ok(true) => true,
                // A component the caller may not have is one it cannot tell exists.
                Ok(false) if condition.hides_existence() => {
                    return ApiFailure::not_found("no such component").into_response()
                }
                Ok(false) => false,
                Err(e) => return ApiFailure(e).into_response(),
            }
        }
    };
    if !allowed {
        return ApiFailure::forbidden(format!(
            "{} may not do this: {}",
            caller.identity,
            error::describe(&asked)
        ))
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Refuses a request whose declared length is over its route's limit with
/// 413, before a byte of the body is read (bodies without a declared length
/// are cut off at the same limit as they are read).
async fn declared_length(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = if request.uri().path().starts_with("/api/v1/blobs/") {
        state.max_blob_size
    } else {
        JSON_BODY_LIMIT
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiFailure::too_large(format!(
            "the body is {} bytes; this route takes at most {limit}",
            declared.unwrap_or_default()
        ))
        .into_response();
    }
    next.run(request).await
}

#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "the process serves", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when this member knows a leader and can serve the key space.
#[utoipa::path(get, path = "/readyz", security(()), responses((status = 200, description = "a leader is known", body = String), (status = 503, description = "no leader known", body = String)))]
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    match state.registry.store().leader_id() {
        Some(leader) => (StatusCode::OK, format!("ok (leader {leader})\n")).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no raft leader known\n").into_response(),
    }
}

/// A few Prometheus gauges (cluster admin only: they count every tenant's objects).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text (cluster admin)", content_type = "text/plain", body = String), openapi::Failures))]
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let store = state.registry.store();
    let progress = store.progress();
    let gauges = [
        (
            "reef_store_revision",
            "the store's revision (one per applied write)",
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
pub fn router(registry: Registry, config: ApiConfig, load: LoadBoard) -> Router {
    let raft = registry.store().raft_router();
    let credentials = Credentials::new(registry.store().clone());
    let state = Arc::new(ApiState {
        registry,
        credentials,
        max_blob_size: config.max_blob_size,
        bookmark_interval: config.bookmark_interval,
        watches: watch::WatchLimits::new(config.max_watches_per_token),
        load,
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
        .route("/api/v1/whoami", get(tokens::whoami))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route(
            "/api/v1/nodes/{name}/credential",
            post(tokens::node_credential),
        )
        .route(
            "/api/v1/nodes/{name}/load",
            axum::routing::put(load::report),
        )
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
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        // JSON bodies are small; only blob uploads (above) may be large.
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            declared_length,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::handler))
        .merge(api)
        .with_state(state)
        .merge(raft)
}
