//! Handlers for objects: list, get, put, the status subresource, delete and apply.

use super::authz::{self, Decision, Verb};
use super::error::{ApiFailure, ApiResult};
use super::filter::Filter;
use super::{watch, ApiState, Caller};
use crate::credentials::Identity;
use crate::registry::Precondition;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use reef_api::validate::parse_at;
use reef_api::{ApplyResult, Kind, List, RawObject};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The collection a request addresses.
pub struct Target {
    pub kind: Kind,
    pub namespace: Option<String>,
}

pub fn target(kind: &str, namespace: Option<String>, single: bool) -> ApiResult<Target> {
    let kind = Kind::parse(kind).ok_or_else(|| {
        ApiFailure(crate::registry::RegistryError::UnknownKind(
            kind.to_string(),
        ))
    })?;
    match (&namespace, kind.namespaced()) {
        (Some(_), false) => Err(ApiFailure::bad_request(format!(
            "{} are cluster-scoped: use /api/v1/{}",
            kind.plural(),
            kind.plural()
        ))),
        (None, true) if single => Err(ApiFailure::bad_request(format!(
            "{} are namespaced: use /api/v1/namespaces/NAMESPACE/{}/NAME",
            kind.plural(),
            kind.plural()
        ))),
        _ => Ok(Target { kind, namespace }),
    }
}

/// A tenant's objects live in its namespace: one sent without a namespace goes
/// there (others get the validator's "needs a namespace").
fn default_namespace(caller: &super::Caller, obj: &mut RawObject) {
    if let Identity::Tenant { tenant, .. } = &caller.identity {
        if obj.kind.namespaced() && obj.metadata.namespace.is_none() {
            obj.metadata.namespace = Some(tenant.clone());
        }
    }
}

/// GET a collection: a list, or with `watch=1` a stream of changes.
pub async fn list(
    state: Arc<ApiState>,
    caller: Caller,
    target: Target,
    query: HashMap<String, String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let filter = Filter::from_query(&query)?;
    if query.get("watch").is_some_and(|w| w == "1" || w == "true") {
        return watch::stream(state, &caller, target, filter, &query, &headers);
    }
    linearizable(&state).await?;
    let (items, resource_version) = state
        .registry
        .list(target.kind, target.namespace.as_deref())?;
    let items = items.into_iter().filter(|o| filter.matches(o)).collect();
    Ok(Json(List {
        items,
        resource_version,
    })
    .into_response())
}

pub async fn get(state: Arc<ApiState>, target: Target, name: String) -> ApiResult<Response> {
    linearizable(&state).await?;
    let obj = state
        .registry
        .get(target.kind, target.namespace.as_deref(), &name)?;
    Ok(Json(obj).into_response())
}

/// Reads on any member see every write acknowledged before they began: the member
/// confirms the leader's commit index with a quorum and waits to have applied it.
pub(super) async fn linearizable(state: &ApiState) -> ApiResult<()> {
    state
        .registry
        .store()
        .read_barrier()
        .await
        .map_err(|e| ApiFailure(crate::registry::read_error(e)))
}

/// Reads a JSON body, naming the failing field on error.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiFailure::bad_request(format!("the body is not valid JSON: {e}")))?;
    parse_at("", &value)
        .map_err(|e| ApiFailure::invalid(e.path.trim_start_matches('.').to_string(), e.message))
}

pub async fn put(
    state: Arc<ApiState>,
    target: Target,
    name: String,
    body: Bytes,
) -> ApiResult<Response> {
    if target.kind == Kind::Blob {
        return Err(ApiFailure::bad_request(
            "blobs are uploaded as bytes with PUT /api/v1/blobs/sha256:HEX",
        ));
    }
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiFailure::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(ApiFailure::bad_request("the body must be a JSON object"));
    };
    fields
        .entry("kind")
        .or_insert_with(|| Value::String(target.kind.to_string()));
    let precondition = match value
        .pointer("/metadata/resource_version")
        .and_then(Value::as_u64)
    {
        None => Precondition::None,
        Some(0) => Precondition::CreateOnly,
        Some(rv) => Precondition::Revision(rv),
    };
    let mut obj: RawObject = parse_at("", &value)
        .map_err(|e| ApiFailure::invalid(e.path.trim_start_matches('.').to_string(), e.message))?;
    if obj.kind != target.kind {
        return Err(ApiFailure::invalid(
            "kind",
            format!(
                "the body is a {} but the URL names {}",
                obj.kind,
                target.kind.plural()
            ),
        ));
    }
    if obj.metadata.name != name {
        return Err(ApiFailure::invalid(
            "metadata.name",
            format!(
                "the body names {:?} but the URL names {name:?}",
                obj.metadata.name
            ),
        ));
    }
    match (&obj.metadata.namespace, &target.namespace) {
        (None, Some(ns)) => obj.metadata.namespace = Some(ns.clone()),
        (Some(a), Some(b)) if a != b => {
            return Err(ApiFailure::invalid(
                "metadata.namespace",
                format!("the body's namespace {a:?} differs from the URL's {b:?}"),
            ))
        }
        _ => {}
    }
    let stored = state.registry.put(&obj, precondition).await?;
    Ok(Json(stored).into_response())
}

/// `?resource_version=N` for compare-and-swap; a malformed one is an error, never
/// silently unconditional.
fn revision_param(query: &HashMap<String, String>) -> ApiResult<Option<u64>> {
    match query.get("resource_version") {
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ApiFailure::bad_request(format!("resource_version {rv:?} is not a number"))
        }),
        None => Ok(None),
    }
}

pub async fn put_status(
    state: Arc<ApiState>,
    target: Target,
    name: String,
    query: HashMap<String, String>,
    body: Bytes,
) -> ApiResult<Response> {
    let status: Value = parse_body(&body)?;
    let revision = revision_param(&query)?;
    let stored = state
        .registry
        .put_status(
            target.kind,
            target.namespace.as_deref(),
            &name,
            status,
            revision,
        )
        .await?;
    Ok(Json(stored).into_response())
}

pub async fn delete(
    state: Arc<ApiState>,
    target: Target,
    name: String,
    query: HashMap<String, String>,
) -> ApiResult<Response> {
    let revision = revision_param(&query)?;
    let deleted = state
        .registry
        .delete(target.kind, target.namespace.as_deref(), &name, revision)
        .await?;
    Ok(Json(deleted).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/apply",
    request_body = Vec<RawObject>,
    responses((status = 200, description = "what was done to each object, all in one transaction", body = ApplyResult), super::openapi::Failures)
)]
pub async fn apply(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let objects: Vec<RawObject> = parse_body(&body).map_err(|ApiFailure(e)| {
        // Name the item in the path: serde reports "[1].spec…" for a list body.
        match e {
            crate::registry::RegistryError::Invalid(f) => ApiFailure::invalid(
                format!("items{}", f.path.trim_start_matches('.')),
                f.message,
            ),
            other => ApiFailure(other),
        }
    })?;
    let mut objects = objects;
    for (i, obj) in objects.iter_mut().enumerate() {
        if obj.kind == Kind::Blob {
            return Err(ApiFailure::bad_request(
                "blobs are uploaded with PUT /api/v1/blobs/sha256:HEX, not applied",
            ));
        }
        default_namespace(&caller, obj);
        // The same table as every route, asked once per object of the file.
        let asked = authz::Request::Objects {
            verb: Verb::Put,
            kind: obj.kind,
            namespace: obj.metadata.namespace.clone(),
            name: Some(obj.metadata.name.clone()),
            node: None,
        };
        if authz::decide(&caller.identity, &asked) != Decision::Allow {
            return Err(ApiFailure::forbidden(format!(
                "{} may not do this: items[{i}]: {}",
                caller.identity,
                super::error::describe(&asked)
            )));
        }
    }
    let result = state.registry.apply(&objects).await?;
    Ok(Json(result).into_response())
}

// Thin extractor adapters: namespaced and cluster-scoped URLs share the handlers above.

type Q = Query<HashMap<String, String>>;
type S = State<Arc<ApiState>>;
type C = Extension<Caller>;

#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/{kind}",
    params(
        ("ns" = String, Path, description = "namespace"),
        ("kind" = super::openapi::KindPlural, Path),
        ("labels" = Option<String>, Query, description = "label selector: k=v,k2=v2"),
        ("node" = Option<String>, Query, description = "pods bound to this node"),
        ("watch" = Option<String>, Query, description = "1: stream changes as newline-delimited JSON (or server-sent events) instead of a list"),
        ("since" = Option<u64>, Query, description = "watch: changes after this revision")
    ),
    responses((status = 200, description = "the objects and the revision they reflect, or a watch stream", body = List<RawObject>), super::openapi::Failures)
)]
pub async fn list_ns(
    State(s): S,
    Extension(c): C,
    Path((ns, kind)): Path<(String, String)>,
    Query(q): Q,
    h: HeaderMap,
) -> ApiResult<Response> {
    list(s, c, target(&kind, Some(ns), false)?, q, h).await
}
#[utoipa::path(
    get,
    path = "/api/v1/{kind}",
    params(
        ("kind" = super::openapi::KindPlural, Path),
        ("labels" = Option<String>, Query, description = "label selector: k=v,k2=v2"),
        ("node" = Option<String>, Query, description = "pods bound to this node"),
        ("watch" = Option<String>, Query, description = "1: stream changes as newline-delimited JSON (or server-sent events) instead of a list"),
        ("since" = Option<u64>, Query, description = "watch: changes after this revision")
    ),
    responses((status = 200, description = "the objects and the revision they reflect, or a watch stream", body = List<RawObject>), super::openapi::Failures)
)]
pub async fn list_cluster(
    State(s): S,
    Extension(c): C,
    Path(kind): Path<String>,
    Query(q): Q,
    h: HeaderMap,
) -> ApiResult<Response> {
    list(s, c, target(&kind, None, false)?, q, h).await
}
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/{kind}/{name}",
    params(
        ("ns" = String, Path, description = "namespace"),
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path)
    ),
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn get_ns(
    State(s): S,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    get(s, target(&kind, Some(ns), true)?, name).await
}
#[utoipa::path(
    get,
    path = "/api/v1/{kind}/{name}",
    params(
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path)
    ),
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn get_cluster(
    State(s): S,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    get(s, target(&kind, None, true)?, name).await
}
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{ns}/{kind}/{name}",
    params(
        ("ns" = String, Path, description = "namespace"),
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path)
    ),
    request_body = RawObject,
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn put_ns(
    State(s): S,
    Path((ns, kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    put(s, target(&kind, Some(ns), true)?, name, body).await
}
#[utoipa::path(
    put,
    path = "/api/v1/{kind}/{name}",
    params(
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path)
    ),
    request_body = RawObject,
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn put_cluster(
    State(s): S,
    Path((kind, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    put(s, target(&kind, None, true)?, name, body).await
}
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{ns}/{kind}/{name}/status",
    params(
        ("ns" = String, Path, description = "namespace"),
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path),
        ("resource_version" = Option<u64>, Query, description = "compare-and-swap on this revision")
    ),
    request_body = serde_json::Value,
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn status_ns(
    State(s): S,
    Path((ns, kind, name)): Path<(String, String, String)>,
    Query(q): Q,
    body: Bytes,
) -> ApiResult<Response> {
    put_status(s, target(&kind, Some(ns), true)?, name, q, body).await
}
#[utoipa::path(
    put,
    path = "/api/v1/{kind}/{name}/status",
    params(
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path),
        ("resource_version" = Option<u64>, Query, description = "compare-and-swap on this revision")
    ),
    request_body = serde_json::Value,
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn status_cluster(
    State(s): S,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Q,
    body: Bytes,
) -> ApiResult<Response> {
    put_status(s, target(&kind, None, true)?, name, q, body).await
}
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{ns}/{kind}/{name}",
    params(
        ("ns" = String, Path, description = "namespace"),
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path),
        ("resource_version" = Option<u64>, Query, description = "compare-and-swap on this revision")
    ),
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn delete_ns(
    State(s): S,
    Path((ns, kind, name)): Path<(String, String, String)>,
    Query(q): Q,
) -> ApiResult<Response> {
    delete(s, target(&kind, Some(ns), true)?, name, q).await
}
#[utoipa::path(
    delete,
    path = "/api/v1/blobs/{digest}",
    params(
        ("digest" = String, Path, description = "sha256:HEX"),
        ("resource_version" = Option<u64>, Query, description = "compare-and-swap on this revision")
    ),
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn delete_blob(
    State(s): S,
    Path(digest): Path<String>,
    Query(q): Q,
) -> ApiResult<Response> {
    let target = Target {
        kind: Kind::Blob,
        namespace: None,
    };
    delete(s, target, digest, q).await
}
#[utoipa::path(
    delete,
    path = "/api/v1/{kind}/{name}",
    params(
        ("kind" = super::openapi::KindPlural, Path),
        ("name" = String, Path),
        ("resource_version" = Option<u64>, Query, description = "compare-and-swap on this revision")
    ),
    responses((status = 200, description = "ok", body = RawObject), super::openapi::Failures)
)]
pub async fn delete_cluster(
    State(s): S,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Q,
) -> ApiResult<Response> {
    delete(s, target(&kind, None, true)?, name, q).await
}
