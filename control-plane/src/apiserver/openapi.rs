//! `GET /openapi.json`: the API described from the handlers' own annotations
//! (`#[utoipa::path]` beside each handler) and the API types' schemas.

use reef_api::identity::{Identity, IssuedToken, TenantRole, TokenInfo, TokenRequest};
use reef_api::{ApiError, AppliedObject, ApplyResult, Kind, List, Metadata, OwnerRef, RawObject};
use utoipa::OpenApi;

/// What every route under `/api/v1` may answer besides success: a JSON
/// [`ApiError`] with the status.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "only its schema is used")]
pub enum Failures {
    #[response(status = 400, description = "the request is malformed")]
    BadRequest(ApiError),
    #[response(
        status = 401,
        description = "missing, unknown, revoked or expired token"
    )]
    Unauthorized(ApiError),
    #[response(
        status = 403,
        description = "the token may not do this, or a quota would be exceeded"
    )]
    Forbidden(ApiError),
    #[response(status = 404, description = "no such object or route")]
    NotFound(ApiError),
    #[response(status = 405, description = "the path does not take this method")]
    MethodNotAllowed(ApiError),
    #[response(
        status = 409,
        description = "a conflicting write, or a name or host taken"
    )]
    Conflict(ApiError),
    #[response(
        status = 410,
        description = "the watch history no longer reaches `since`"
    )]
    Gone(ApiError),
    #[response(status = 413, description = "the body is over the route's limit")]
    TooLarge(ApiError),
    #[response(status = 415, description = "the body is not JSON")]
    UnsupportedMedia(String),
    #[response(status = 422, description = "an invalid field, named by its path")]
    Invalid(ApiError),
    #[response(status = 429, description = "too many watches open for this token")]
    TooMany(ApiError),
    #[response(
        status = 502,
        description = "the pod's node could not be reached (logs)"
    )]
    BadGateway(ApiError),
    #[response(status = 503, description = "this member has no quorum; try another")]
    Unavailable(ApiError),
    #[response(
        status = 504,
        description = "a write's outcome is unknown; do not resend blindly"
    )]
    Timeout(ApiError),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "reef",
        description = "The reef control plane's HTTP API (DESIGN §6). Every route under /api/v1 takes `Authorization: Bearer TOKEN`."
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::objects::list_ns,
        super::objects::get_ns,
        super::objects::put_ns,
        super::objects::delete_ns,
        super::objects::status_ns,
        super::objects::list_cluster,
        super::objects::get_cluster,
        super::objects::put_cluster,
        super::objects::delete_cluster,
        super::objects::status_cluster,
        super::objects::apply,
        super::blobs::get_handler,
        super::blobs::head_handler,
        super::blobs::put_handler,
        super::objects::delete_blob,
        super::logs::pod_log,
        super::logs::node_access,
        super::tokens::whoami,
        super::tokens::list,
        super::tokens::create,
        super::tokens::revoke,
        super::tokens::node_credential,
        super::load::report,
        super::cluster::members,
        super::cluster::add_member,
        super::cluster::remove_member,
        super::cluster::join_info,
        super::cluster::backup,
    ),
    components(schemas(
        Kind, Metadata, OwnerRef, RawObject, List<RawObject>, ApiError, ApplyResult,
        AppliedObject, Identity, TenantRole, TokenInfo, TokenRequest, IssuedToken,
        reef_api::LoadReport, reef_api::DeploymentLoad, reef_api::client::Member, reef_api::client::NodeAccess, KindPlural, NewMember,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, made once.
pub fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

pub async fn handler() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

/// A kind as URLs name it (singular and short names are accepted too).
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "only its schema is used")]
pub enum KindPlural {
    Tenants,
    Nodes,
    Deployments,
    Pods,
    Services,
    Events,
    Blobs,
}

/// A member to add: `POST /api/v1/members`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "only its schema is used")]
pub struct NewMember {
    pub id: u64,
    /// `host:port`, or `https://host:port` for a member serving HTTPS.
    pub address: String,
}
