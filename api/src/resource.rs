//! The resource model of DESIGN §3: every object is `{kind, metadata, spec, status}`.
//!
//! Specs reject unknown fields so a typo in an API call is a 422 with the field path,
//! not a silently ignored setting.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// The kinds of object the API serves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Tenant,
    Node,
    Deployment,
    Pod,
    Service,
    Event,
    Blob,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Tenant,
        Kind::Node,
        Kind::Deployment,
        Kind::Pod,
        Kind::Service,
        Kind::Event,
        Kind::Blob,
    ];

    /// The lower-case plural used in URLs and store keys.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Tenant => "tenants",
            Kind::Node => "nodes",
            Kind::Deployment => "deployments",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Event => "events",
            Kind::Blob => "blobs",
        }
    }

    pub fn singular(self) -> &'static str {
        let plural = self.plural();
        &plural[..plural.len() - 1]
    }

    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::Pod | Kind::Service | Kind::Event
        )
    }

    /// Accepts what a kubectl user would type: singular, plural, short names, any case.
    pub fn parse(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let short = match lower.as_str() {
            "deploy" => Some(Kind::Deployment),
            "svc" => Some(Kind::Service),
            "po" => Some(Kind::Pod),
            "no" => Some(Kind::Node),
            "ev" => Some(Kind::Event),
            _ => None,
        };
        short.or_else(|| {
            Kind::ALL
                .into_iter()
                .find(|k| lower == k.plural() || lower == k.singular())
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Names the object that owns this one; deleting the owner deletes its dependents.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRef {
    pub kind: Kind,
    pub name: String,
    pub uid: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The Raft log index of the write that produced this version.
    #[serde(default)]
    pub resource_version: u64,
    /// Bumped when the spec changes; status writes leave it alone.
    #[serde(default)]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
}

/// An object with a typed spec and status. `Object<Value, Value>` is the untyped form
/// the API server stores and streams.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object<S, T = Value> {
    pub kind: Kind,
    pub metadata: Metadata,
    /// The kind's spec (see docs/manifest.md); validated per kind.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: S,
    /// Written by the control plane and agents; null until then.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub status: T,
}

pub type RawObject = Object<Value, Value>;

impl<S, T> Object<S, T> {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }
}

impl RawObject {
    /// Reads a typed view; fails if the stored JSON does not match the kind's schema.
    pub fn typed<S: DeserializeOwned, T: DeserializeOwned + Default>(
        &self,
    ) -> Result<Object<S, T>, serde_json::Error> {
        self.clone().into_typed()
    }

    /// [`typed`](Self::typed), moving the JSON instead of copying it.
    pub fn into_typed<S: DeserializeOwned, T: DeserializeOwned + Default>(
        self,
    ) -> Result<Object<S, T>, serde_json::Error> {
        let status = if self.status.is_null() {
            T::default()
        } else {
            serde_json::from_value(self.status)?
        };
        Ok(Object {
            kind: self.kind,
            metadata: self.metadata,
            spec: serde_json::from_value(self.spec)?,
            status,
        })
    }
}

impl<S: Serialize, T: Serialize> Object<S, T> {
    pub fn to_raw(&self) -> Result<RawObject, serde_json::Error> {
        Ok(Object {
            kind: self.kind,
            metadata: self.metadata.clone(),
            spec: serde_json::to_value(&self.spec)?,
            status: serde_json::to_value(&self.status)?,
        })
    }
}

pub use crate::kinds::*;

/// A list answer: the items and the revision to start a watch from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct List<T = RawObject> {
    pub items: Vec<T>,
    pub resource_version: u64,
}

/// One line of a watch stream.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    pub object: Value,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

/// The JSON body of every API error.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// For 422: the path of the offending field, e.g. `spec.template.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {}", field, self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_like_kubectl() {
        assert_eq!(Kind::parse("pods"), Some(Kind::Pod));
        assert_eq!(Kind::parse("Pod"), Some(Kind::Pod));
        assert_eq!(Kind::parse("deploy"), Some(Kind::Deployment));
        assert_eq!(Kind::parse("svc"), Some(Kind::Service));
        assert_eq!(Kind::parse("nodes"), Some(Kind::Node));
        assert_eq!(Kind::parse("gadgets"), None);
        assert_eq!(Kind::Deployment.singular(), "deployment");
    }

    #[test]
    fn pod_spec_fills_defaults() {
        let spec: PodSpec =
            serde_json::from_str(r#"{"component": "sha256:00"}"#).expect("minimal spec");
        assert_eq!(spec.cpu, DEFAULT_CPU);
        assert_eq!(spec.memory, DEFAULT_MEMORY);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.world, World::Http);
        let json = serde_json::to_value(&spec).expect("serialises");
        assert_eq!(json["memory"], "64Mi");
        assert_eq!(json["restart"], "always");
    }
}

/// What `POST /api/v1/apply` did to each object.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResult {
    pub items: Vec<AppliedObject>,
    pub resource_version: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppliedObject {
    /// "created", "configured" or "unchanged".
    pub action: String,
    pub object: RawObject,
}
