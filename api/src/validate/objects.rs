//! The rules of each kind's objects as a whole: what `validate_object` and
//! `validate_status` check beyond the single-field rules of the parent
//! module, the limits of [`crate::limits`] among them.

use super::*;

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
        duration_at_most("spec.autoscale.window", auto.window, MAX_SCALE_WINDOW)?;
        if auto.idle.0 < std::time::Duration::from_secs(1) {
            return Err(FieldError::new(
                "spec.autoscale.idle",
                "idle must be at least 1s: shorter flaps between zero and one pod",
            ));
        }
        if auto.window.0 < std::time::Duration::from_secs(1) {
            return Err(FieldError::new(
                "spec.autoscale.window",
                "the stable window must be at least 1s",
            ));
        }
        if auto.panic_window.0.is_zero() || auto.panic_window.0 > auto.window.0 {
            return Err(FieldError::new(
                "spec.autoscale.panic_window",
                format!(
                    "the panic window must be more than 0 and at most the stable window ({})",
                    auto.window
                ),
            ));
        }
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
    check(format!("{path}.component"), component(&spec.component))?;
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
