//! Validation shared by the API server (authoritative) and the CLI (a courtesy).
//!
//! Each rule is a small function returning a human sentence, so the manifest parser
//! can attach it to a line and column and the API server to a field path.

use crate::resource::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// An invalid field, named by its path in the object (`spec.template.cpu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A DNS label as Kubernetes defines it: what names, namespaces and label-ish ids use.
pub fn dns_label(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "{name:?} is not a valid name: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")"
        ));
    }
    Ok(())
}

/// A DNS subdomain: dot-separated labels, as node names and hosts use.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 || name.split('.').any(|part| dns_label(part).is_err()) {
        return Err(format!(
            "{name:?} is not a valid DNS name: use dot-separated lower-case labels (e.g. \"hello.local\")"
        ));
    }
    Ok(())
}

/// "sha256:" followed by 64 lower-case hex digits.
pub fn digest(value: &str) -> Result<(), String> {
    let hex = value.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64
        || !hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!(
            "{value:?} is not a component digest: expected \"sha256:\" and 64 lower-case hex digits"
        ));
    }
    Ok(())
}

/// An outbound allow-list entry: `host[:port]` or `*.suffix[:port]`.
pub fn outbound_pattern(pattern: &str) -> Result<(), String> {
    let (host, port) = match pattern.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (pattern, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "{pattern:?} has an invalid port: expected 1-65535, as in \"api.example.com:8443\""
            ));
        }
    }
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok {
        return Err(format!(
            "{pattern:?} is not an outbound host: write \"host\", \"host:port\" or \"*.domain\""
        ));
    }
    Ok(())
}

/// A Service path prefix.
pub fn path_prefix(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '?') {
        return Err(format!(
            "{path:?} is not a path prefix: it must start with '/' and hold no spaces or query"
        ));
    }
    Ok(())
}

pub fn env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "{name:?} is not an environment variable name: use letters, digits and '_', not starting with a digit"
        ));
    }
    Ok(())
}

/// Deserialises `value` as `T`, reporting the failing field below `prefix`.
pub fn parse_at<T: DeserializeOwned>(prefix: &str, value: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        FieldError::new(path, e.into_inner().to_string())
    })
}

fn check(path: impl Into<String>, rule: Result<(), String>) -> Result<(), FieldError> {
    rule.map_err(|message| FieldError::new(path, message))
}

/// Validates an object as a client sent it (metadata and spec). Status is validated
/// separately by [`validate_status`] because only agents and controllers write it.
pub fn validate_object(obj: &RawObject) -> Result<(), FieldError> {
    let kind = obj.kind;
    match kind {
        Kind::Node | Kind::Event => check("metadata.name", dns_subdomain(&obj.metadata.name))?,
        Kind::Blob => check("metadata.name", digest(&obj.metadata.name))?,
        _ => check("metadata.name", dns_label(&obj.metadata.name))?,
    }
    match (&obj.metadata.namespace, kind.namespaced()) {
        (Some(ns), true) => check("metadata.namespace", dns_label(ns))?,
        (None, true) => {
            return Err(FieldError::new(
                "metadata.namespace",
                format!("a {kind} needs a namespace"),
            ))
        }
        (Some(_), false) => {
            return Err(FieldError::new(
                "metadata.namespace",
                format!("a {kind} is cluster-scoped and takes no namespace"),
            ))
        }
        (None, false) => {}
    }
    match kind {
        Kind::Deployment => {
            let spec: DeploymentSpec = parse_at("spec", &obj.spec)?;
            pod_spec("spec.template", &spec.template)?;
            if spec.template.node.is_some() {
                return Err(FieldError::new(
                    "spec.template.node",
                    "a template cannot pin a node; use node_selector",
                ));
            }
            if spec.strategy.max_surge == 0 && spec.strategy.max_unavailable == 0 {
                return Err(FieldError::new(
                    "spec.strategy",
                    "max_surge and max_unavailable cannot both be 0: a rollout could never make progress",
                ));
            }
            if let Some(auto) = &spec.autoscale {
                if auto.max == 0 || auto.min > auto.max {
                    return Err(FieldError::new(
                        "spec.autoscale",
                        "autoscale needs 0 <= min <= max and max >= 1",
                    ));
                }
            }
        }
        Kind::Pod => {
            let spec: PodSpec = parse_at("spec", &obj.spec)?;
            pod_spec("spec", &spec)?;
        }
        Kind::Service => {
            let spec: ServiceSpec = parse_at("spec", &obj.spec)?;
            if spec.selector.is_empty() {
                return Err(FieldError::new(
                    "spec.selector",
                    "a service needs a selector naming its pods' labels, e.g. { app = \"hello\" }",
                ));
            }
            if let Some(host) = &spec.host {
                check("spec.host", dns_subdomain(host))?;
            }
            check("spec.path", path_prefix(&spec.path))?;
        }
        Kind::Node => {
            parse_at::<NodeSpec>("spec", &obj.spec)?;
        }
        Kind::Blob => {
            parse_at::<BlobSpec>("spec", &obj.spec)?;
        }
        Kind::Tenant => {
            parse_at::<TenantSpec>("spec", &obj.spec)?;
        }
        Kind::Event => {
            parse_at::<EventSpec>("spec", &obj.spec)?;
        }
    }
    Ok(())
}

/// Validates a status body for the kind.
pub fn validate_status(kind: Kind, status: &Value) -> Result<(), FieldError> {
    match kind {
        Kind::Pod => parse_at::<PodStatus>("status", status).map(drop),
        Kind::Node => parse_at::<NodeStatus>("status", status).map(drop),
        Kind::Service => parse_at::<ServiceStatus>("status", status).map(drop),
        Kind::Deployment => parse_at::<DeploymentStatus>("status", status).map(drop),
        _ => Ok(()),
    }
}

fn pod_spec(path: &str, spec: &PodSpec) -> Result<(), FieldError> {
    check(format!("{path}.component"), digest(&spec.component))?;
    for name in spec.env.keys() {
        check(format!("{path}.env.{name}"), env_name(name))?;
    }
    for (i, pattern) in spec.outbound.iter().enumerate() {
        check(format!("{path}.outbound[{i}]"), outbound_pattern(pattern))?;
    }
    if let Some(ready) = &spec.ready_path {
        check(format!("{path}.ready_path"), path_prefix(ready))?;
    }
    if spec.memory.bytes() == 0 {
        return Err(FieldError::new(
            format!("{path}.memory"),
            "memory must be greater than 0",
        ));
    }
    if spec.memory.bytes() > (4u64 << 30) {
        return Err(FieldError::new(
            format!("{path}.memory"),
            "memory is capped at 4Gi per pod (a wasm32 instance cannot address more)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(value: Value) -> RawObject {
        serde_json::from_value(value).expect("raw object")
    }

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn names_follow_dns_rules() {
        assert!(dns_label("hello-1").is_ok());
        assert!(dns_label("Hello").is_err());
        assert!(dns_label("-x").is_err());
        assert!(dns_label("").is_err());
        assert!(dns_subdomain("hello.local").is_ok());
        assert!(dns_subdomain("hello..local").is_err());
    }

    #[test]
    fn bad_quantity_names_its_field_path() {
        let obj = raw(json!({
            "kind": "Deployment",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"template": {"component": DIGEST, "cpu": "12 parsecs"}}
        }));
        let err = validate_object(&obj).expect_err("bad cpu");
        assert_eq!(err.path, "spec.template.cpu");
        assert!(err.message.contains("12 parsecs"), "{}", err.message);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let obj = raw(json!({
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"selector": {"app": "x"}, "hots": "a.local"}
        }));
        let err = validate_object(&obj).expect_err("unknown field");
        assert_eq!(err.path, "spec.hots");
    }

    #[test]
    fn namespace_rules_follow_scope() {
        let pod = raw(json!({
            "kind": "Pod", "metadata": {"name": "p"}, "spec": {"component": DIGEST}
        }));
        assert_eq!(
            validate_object(&pod).expect_err("ns").path,
            "metadata.namespace"
        );
        let node = raw(json!({
            "kind": "Node", "metadata": {"name": "n1", "namespace": "x"},
            "spec": {"capacity": {"cpu": "1", "memory": "1Gi", "pods": 10},
                     "allocatable": {"cpu": "1", "memory": "1Gi", "pods": 10}}
        }));
        assert_eq!(
            validate_object(&node).expect_err("ns").path,
            "metadata.namespace"
        );
    }

    #[test]
    fn outbound_patterns() {
        assert!(outbound_pattern("api.example.com").is_ok());
        assert!(outbound_pattern("*.internal:8443").is_ok());
        assert!(outbound_pattern("127.0.0.1:9000").is_ok());
        assert!(outbound_pattern("http://x").is_err());
        assert!(outbound_pattern("x:0").is_err());
    }
}
