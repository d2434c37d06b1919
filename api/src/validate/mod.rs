//! Validation shared by the API server (authoritative) and the CLI (a courtesy).
//!
//! Each rule is a small function returning a human sentence, so the manifest parser
//! can attach it to a line and column and the API server to a field path.

use crate::limits::*;
use crate::resource::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

mod objects;

pub use objects::{validate_object, validate_status};

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

/// What a spec's `component` may be: a digest of uploaded bytes, or a
/// component in an OCI registry (the server takes it only pinned to a
/// digest: `reef apply` resolves a tag first).
pub fn component(value: &str) -> Result<(), String> {
    if !value.starts_with(crate::component_ref::SCHEME) {
        return digest(value);
    }
    value
        .parse::<crate::component_ref::ComponentRef>()
        .map(drop)
        .map_err(|e| e.to_string())
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

/// `host:port` as a node publishes its addresses: a DNS name or an IP literal
/// (IPv6 in brackets) and a port; no scheme, path or credentials.
pub fn host_port(value: &str) -> Result<(), String> {
    let bad = || {
        format!("{value:?} is not host:port: write a DNS name or an IP address and a port, as in \"10.0.0.2:7443\"")
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return ip
            .parse::<std::net::Ipv6Addr>()
            .map(drop)
            .map_err(|_| bad());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let name_ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if name_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// One part of a label (a value, or a key's name): as Kubernetes, up to 63 of
/// letters, digits, '-', '_' and '.', starting and ending alphanumeric.
fn label_part(part: &str) -> bool {
    part.len() <= MAX_LABEL_PART
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && part
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && part
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

/// A label map: at most [`MAX_LABELS`] entries, keys `[prefix/]name` and values
/// as Kubernetes writes them.
pub fn labels(path: &str, labels: &Labels) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            path,
            format!("{} labels; at most {MAX_LABELS} are allowed", labels.len()),
        ));
    }
    for (key, value) in labels {
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key.as_str()),
        };
        let key_ok = !name.is_empty()
            && label_part(name)
            && prefix.is_none_or(|p| !p.is_empty() && dns_subdomain(p).is_ok());
        if !key_ok {
            return Err(FieldError::new(
                format!("{path}.{key}"),
                format!("{key:?} is not a label key: write name or prefix/name, the name up to 63 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !label_part(value) {
            return Err(FieldError::new(
                format!("{path}.{key}"),
                format!("{value:?} is not a label value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ));
        }
    }
    Ok(())
}

/// Longest deployment name: its pods are named `NAME-<10 hex>-<5 chars>`, which
/// must still be a DNS label.
pub const MAX_DEPLOYMENT_NAME: usize = 63 - 17;

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

pub(crate) fn check(path: impl Into<String>, rule: Result<(), String>) -> Result<(), FieldError> {
    rule.map_err(|message| FieldError::new(path, message))
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
