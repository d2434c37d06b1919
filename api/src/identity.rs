//! Who a bearer token speaks for, and what the token API exchanges: shared by
//! the control plane (which decides), the CLI and the node agent.

use crate::quantity::Timeout;
use serde::{Deserialize, Serialize};

/// A tenant token's role, weakest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantRole {
    /// Reads the tenant's namespace.
    View,
    /// Also writes its deployments and services, deletes pods, uploads components.
    Edit,
    /// Also mints and revokes the tenant's tokens.
    Admin,
}

impl std::str::FromStr for TenantRole {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "view" => Ok(TenantRole::View),
            "edit" => Ok(TenantRole::Edit),
            "admin" => Ok(TenantRole::Admin),
            other => Err(format!("unknown role {other:?}: use admin, edit or view")),
        }
    }
}

impl std::fmt::Display for TenantRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TenantRole::View => "view",
            TenantRole::Edit => "edit",
            TenantRole::Admin => "admin",
        })
    }
}

/// Who a token speaks for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Identity {
    /// The cluster admin: everything.
    Admin,
    /// A tenant's user: its namespace only, as far as the role goes.
    Tenant { tenant: String, role: TenantRole },
    /// One node's agent: what a kubelet needs for that node, nothing more.
    Node { node: String },
    /// A control-plane member joining the cluster (the member token).
    Member,
    /// A node registering (the join token): may only exchange itself for a
    /// node credential.
    Join,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Admin => f.write_str("cluster admin"),
            Identity::Tenant { tenant, role } => write!(f, "tenant {tenant} ({role})"),
            Identity::Node { node } => write!(f, "node {node}"),
            Identity::Member => f.write_str("member token"),
            Identity::Join => f.write_str("join token"),
        }
    }
}

/// What `reef token list` shows: never the secret.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub identity: Identity,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// `POST /api/v1/tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub tenant: String,
    pub role: TenantRole,
    /// How long the token works; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "24h"))]
    pub ttl: Option<Timeout>,
}

/// A token just minted: the secret is shown this once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}
