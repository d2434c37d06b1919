//! Validation shared by the API server (authoritative) and the CLI (a courtesy).
//!
//! Each rule is a small function returning a human sentence, so the manifest parser
//! can attach it to a line and column and the API server to a field path.

use crate::limits::*;
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
    labels("metadata.labels", &obj.metadata.labels)?;
    match kind {
        Kind::Deployment => deployment(obj)?,
        Kind::Pod => {
            let spec: PodSpec = parse_at("spec", &obj.spec)?;
            pod_spec("spec", &spec)?;
        }
        Kind::Service => service(obj)?,
        Kind::Node => node(&parse_at("spec", &obj.spec)?)?,
        Kind::Blob => {
            parse_at::<BlobSpec>("spec", &obj.spec)?;
        }
        Kind::Tenant => tenant(obj)?,
        Kind::Event => event(obj)?,
    }
    Ok(())
}

fn deployment(obj: &RawObject) -> Result<(), FieldError> {
    let name = &obj.metadata.name;
    if name.len() > MAX_DEPLOYMENT_NAME {
        return Err(FieldError::new(
            "metadata.name",
            format!(
                "{name:?} is {} characters; a deployment name may have at most {MAX_DEPLOYMENT_NAME}, \
                 so that its pods' names (NAME-<hash>-<suffix>) stay within 63",
                name.len()
            ),
        ));
    }
    // Its pods carry its labels and one more (the template hash).
    if obj.metadata.labels.len() >= MAX_LABELS {
        return Err(FieldError::new(
            "metadata.labels",
            format!(
                "{} labels; a deployment may have at most {} (its pods add one)",
                obj.metadata.labels.len(),
                MAX_LABELS - 1
            ),
        ));
    }
    let spec: DeploymentSpec = parse_at("spec", &obj.spec)?;
    pod_spec("spec.template", &spec.template)?;
    if spec.template.node.is_some() {
        return Err(FieldError::new(
            "spec.template.node",
            "a template cannot pin a node; use node_selector",
        ));
    }
    at_most(
        "spec.replicas",
        u64::from(spec.replicas),
        u64::from(MAX_REPLICAS),
    )?;
    at_most(
        "spec.strategy.max_surge",
        u64::from(spec.strategy.max_surge),
        u64::from(MAX_REPLICAS),
    )?;
    at_most(
        "spec.strategy.max_unavailable",
        u64::from(spec.strategy.max_unavailable),
        u64::from(MAX_REPLICAS),
    )?;
    duration_at_most(
        "spec.strategy.progress_deadline",
        spec.strategy.progress_deadline,
        MAX_LONG_DURATION,
    )?;
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
        at_most(
            "spec.autoscale.max",
            u64::from(auto.max),
            u64::from(MAX_REPLICAS),
        )?;
        if auto.concurrency == 0 {
            return Err(FieldError::new(
                "spec.autoscale.concurrency",
                "concurrency must be at least 1",
            ));
        }
        at_most(
            "spec.autoscale.concurrency",
            u64::from(auto.concurrency),
            u64::from(MAX_CONCURRENCY),
        )?;
        duration_at_most("spec.autoscale.idle", auto.idle, MAX_LONG_DURATION)?;
    }
    Ok(())
}

fn service(obj: &RawObject) -> Result<(), FieldError> {
    let spec: ServiceSpec = parse_at("spec", &obj.spec)?;
    if spec.selector.is_empty() {
        return Err(FieldError::new(
            "spec.selector",
            "a service needs a selector naming its pods' labels, e.g. { app = \"hello\" }",
        ));
    }
    labels("spec.selector", &spec.selector)?;
    match &spec.host {
        Some(host) => check("spec.host", dns_subdomain(host))?,
        // A host-less service catches every host: only the cluster's own namespace
        // may do that, or one tenant could take another's traffic.
        None if obj.metadata.namespace.as_deref() != Some("default") => {
            return Err(FieldError::new(
                "spec.host",
                "a service outside the default namespace needs a host (e.g. host = \"app.example.com\")",
            ))
        }
        None => {}
    }
    check("spec.path", path_prefix(&spec.path))?;
    if spec.path.len() > 1024 {
        return Err(FieldError::new(
            "spec.path",
            "a path prefix may have at most 1024 characters",
        ));
    }
    Ok(())
}

fn node(spec: &NodeSpec) -> Result<(), FieldError> {
    if !spec.address.is_empty() {
        check("spec.address", host_port(&spec.address))?;
    }
    if !spec.ingress.is_empty() {
        check("spec.ingress", host_port(&spec.ingress))?;
    }
    for (path, resources) in [
        ("spec.capacity", &spec.capacity),
        ("spec.allocatable", &spec.allocatable),
    ] {
        at_most(
            &format!("{path}.cpu"),
            resources.cpu.millis(),
            MAX_NODE_CPU.millis(),
        )?;
        at_most(
            &format!("{path}.memory"),
            resources.memory.bytes(),
            MAX_NODE_MEMORY.bytes(),
        )?;
        at_most(
            &format!("{path}.pods"),
            u64::from(resources.pods),
            u64::from(MAX_NODE_PODS),
        )?;
    }
    if spec.runtimes.len() > 8 {
        return Err(FieldError::new("spec.runtimes", "at most 8 runtimes"));
    }
    Ok(())
}

fn tenant(obj: &RawObject) -> Result<(), FieldError> {
    if obj.metadata.name == "default" {
        return Err(FieldError::new(
            "metadata.name",
            "\"default\" is the cluster admin's namespace and cannot be a tenant",
        ));
    }
    let spec: TenantSpec = parse_at("spec", &obj.spec)?;
    if let Some(cpu) = spec.cpu {
        at_most("spec.cpu", cpu.millis(), MAX_QUOTA_CPU.millis())?;
    }
    if let Some(memory) = spec.memory {
        at_most("spec.memory", memory.bytes(), MAX_QUOTA_MEMORY.bytes())?;
    }
    Ok(())
}

fn event(obj: &RawObject) -> Result<(), FieldError> {
    let spec: EventSpec = parse_at("spec", &obj.spec)?;
    text_at_most("spec.reason", &spec.reason, 128)?;
    text_at_most("spec.message", &spec.message, MAX_EVENT_TEXT)?;
    // The name says what the event is about, so it can be authorised by name.
    let expected = crate::events::event_name(&spec.involved, &spec.reason);
    if obj.metadata.name != expected {
        return Err(FieldError::new(
            "metadata.name",
            format!(
                "an event about {} {:?} with reason {:?} is named {expected:?}",
                spec.involved.kind, spec.involved.name, spec.reason
            ),
        ));
    }
    Ok(())
}

fn at_most(path: &str, value: u64, max: u64) -> Result<(), FieldError> {
    if value > max {
        return Err(FieldError::new(
            path,
            format!("{value} is over the limit of {max}"),
        ));
    }
    Ok(())
}

fn duration_at_most(
    path: &str,
    value: crate::quantity::Timeout,
    max: crate::quantity::Timeout,
) -> Result<(), FieldError> {
    if value > max {
        return Err(FieldError::new(
            path,
            format!("{value} is longer than the limit of {max}"),
        ));
    }
    Ok(())
}

fn text_at_most(path: &str, text: &str, max: usize) -> Result<(), FieldError> {
    if text.len() > max {
        return Err(FieldError::new(
            path,
            format!("{} bytes; at most {max} are allowed", text.len()),
        ));
    }
    Ok(())
}

/// Validates a status body for the kind.
pub fn validate_status(kind: Kind, status: &Value) -> Result<(), FieldError> {
    match kind {
        Kind::Pod => {
            let status: PodStatus = parse_at("status", status)?;
            text_at_most(
                "status.last_error",
                status.last_error.as_deref().unwrap_or(""),
                MAX_STATUS_TEXT,
            )?;
            text_at_most("status.reason", status.reason.as_deref().unwrap_or(""), 128)
        }
        Kind::Node => {
            let status: NodeStatus = parse_at("status", status)?;
            if status.conditions.len() > 16 {
                return Err(FieldError::new(
                    "status.conditions",
                    "at most 16 conditions",
                ));
            }
            Ok(())
        }
        Kind::Service => {
            let status: ServiceStatus = parse_at("status", status)?;
            if status.endpoints.len() > MAX_ENDPOINTS {
                return Err(FieldError::new(
                    "status.endpoints",
                    format!("at most {MAX_ENDPOINTS} endpoints"),
                ));
            }
            Ok(())
        }
        Kind::Deployment => parse_at::<DeploymentStatus>("status", status).map(drop),
        Kind::Tenant => parse_at::<TenantStatus>("status", status).map(drop),
        _ => Ok(()),
    }
}

fn pod_spec(path: &str, spec: &PodSpec) -> Result<(), FieldError> {
    check(format!("{path}.component"), digest(&spec.component))?;
    if spec.env.len() > MAX_ENV {
        return Err(FieldError::new(
            format!("{path}.env"),
            format!(
                "{} variables; at most {MAX_ENV} are allowed",
                spec.env.len()
            ),
        ));
    }
    for (name, value) in &spec.env {
        check(format!("{path}.env.{name}"), env_name(name))?;
        text_at_most(&format!("{path}.env.{name}"), value, MAX_ENV_VALUE)?;
    }
    if spec.args.len() > MAX_ARGS {
        return Err(FieldError::new(
            format!("{path}.args"),
            format!(
                "{} arguments; at most {MAX_ARGS} are allowed",
                spec.args.len()
            ),
        ));
    }
    for (i, arg) in spec.args.iter().enumerate() {
        text_at_most(&format!("{path}.args[{i}]"), arg, MAX_ARG)?;
    }
    let strings: usize = spec
        .env
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + spec.args.iter().map(String::len).sum::<usize>();
    if strings > MAX_POD_STRINGS {
        return Err(FieldError::new(
            path,
            format!(
                "env and args hold {strings} bytes together; at most {MAX_POD_STRINGS} are allowed"
            ),
        ));
    }
    if spec.outbound.len() > MAX_OUTBOUND {
        return Err(FieldError::new(
            format!("{path}.outbound"),
            format!(
                "{} entries; at most {MAX_OUTBOUND} are allowed",
                spec.outbound.len()
            ),
        ));
    }
    for (i, pattern) in spec.outbound.iter().enumerate() {
        check(format!("{path}.outbound[{i}]"), outbound_pattern(pattern))?;
    }
    labels(&format!("{path}.node_selector"), &spec.node_selector)?;
    if let Some(ready) = &spec.ready_path {
        check(format!("{path}.ready_path"), path_prefix(ready))?;
        text_at_most(&format!("{path}.ready_path"), ready, 1024)?;
    }
    if spec.memory.bytes() == 0 {
        return Err(FieldError::new(
            format!("{path}.memory"),
            "memory must be greater than 0",
        ));
    }
    if spec.memory > MAX_POD_MEMORY {
        return Err(FieldError::new(
            format!("{path}.memory"),
            "memory is capped at 4Gi per pod (a wasm32 instance cannot address more)",
        ));
    }
    if spec.cpu > MAX_POD_CPU {
        return Err(FieldError::new(
            format!("{path}.cpu"),
            format!("{} is over the limit of {MAX_POD_CPU} per pod", spec.cpu),
        ));
    }
    duration_at_most(&format!("{path}.timeout"), spec.timeout, MAX_TIMEOUT)?;
    if let Some(node) = &spec.node {
        check(format!("{path}.node"), dns_subdomain(node))?;
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
