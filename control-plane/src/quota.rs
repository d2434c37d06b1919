//! Tenant quota arithmetic, pure: what a namespace's objects ask for, and
//! whether a change keeps it within its tenant's limits. Admission counts what
//! deployments declare (replicas × pod size); the deployment controller counts
//! the pods that exist (so surges and replacements respect the quota too).

use reef_api::quantity::{Cpu, Memory};
use reef_api::{DeploymentSpec, PodSpec, TenantSpec, Usage};

/// The pods a deployment asks for: `autoscale.max` when it autoscales.
pub fn declared_pods(spec: &DeploymentSpec) -> u64 {
    u64::from(spec.autoscale.as_ref().map_or(spec.replicas, |a| a.max))
}

/// Adds `count` pods of `pod`'s size to `usage` (saturating: limits are far below).
pub fn add_pods(usage: &mut Usage, pod: &PodSpec, count: u64) {
    usage.pods = usage.pods.saturating_add(count);
    usage.cpu = Cpu(usage.cpu.0.saturating_add(pod.cpu.0.saturating_mul(count)));
    usage.memory = Memory(
        usage
            .memory
            .0
            .saturating_add(pod.memory.0.saturating_mul(count)),
    );
}

/// What a namespace's deployments and services declare.
pub fn declared<'a>(
    deployments: impl IntoIterator<Item = &'a DeploymentSpec>,
    services: usize,
) -> Usage {
    let mut usage = Usage {
        services: services as u64,
        ..Usage::default()
    };
    for spec in deployments {
        usage.deployments += 1;
        add_pods(&mut usage, &spec.template, declared_pods(spec));
    }
    usage
}

/// The resources of `after` over `limits` that grew from `before`: a change
/// that leaves a figure as it was (or lowers it) passes even over a lowered
/// quota, so a tenant can always scale down.
pub fn exceeded(limits: &TenantSpec, before: &Usage, after: &Usage) -> Vec<String> {
    let mut over = Vec::new();
    let mut check =
        |name: &str, limit: Option<u64>, before: u64, after: u64, show: &dyn Fn(u64) -> String| {
            if let Some(limit) = limit {
                if after > limit && after > before {
                    over.push(format!(
                        "{name}: {} requested, {} in use, limit {}",
                        show(after - before),
                        show(before),
                        show(limit)
                    ));
                }
            }
        };
    let plain = |v: u64| v.to_string();
    check(
        "cpu",
        limits.cpu.map(|c| c.0),
        before.cpu.0,
        after.cpu.0,
        &|v| Cpu(v).to_string(),
    );
    check(
        "memory",
        limits.memory.map(|m| m.0),
        before.memory.0,
        after.memory.0,
        &|v| Memory(v).to_string(),
    );
    check(
        "pods",
        limits.pods.map(u64::from),
        before.pods,
        after.pods,
        &plain,
    );
    check(
        "deployments",
        limits.deployments.map(u64::from),
        before.deployments,
        after.deployments,
        &plain,
    );
    check(
        "services",
        limits.services.map(u64::from),
        before.services,
        after.services,
        &plain,
    );
    over
}

/// How many of `wanted` new pods of `pod`'s size fit beside `live` pods, and
/// if not all, which limit holds them back.
pub fn pods_that_fit(
    limits: &TenantSpec,
    live: &Usage,
    pod: &PodSpec,
    wanted: u32,
) -> (u32, Option<String>) {
    let mut used = *live;
    for made in 0..wanted {
        let mut next = used;
        add_pods(&mut next, pod, 1);
        let over = exceeded(limits, &used, &next);
        if let Some(first) = over.into_iter().next() {
            return (made, Some(first));
        }
        used = next;
    }
    (wanted, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: u32, cpu: &str, memory: &str) -> DeploymentSpec {
        serde_json::from_value(json!({
            "replicas": replicas,
            "template": {"component": "sha256:00", "cpu": cpu, "memory": memory}
        }))
        .expect("spec")
    }

    fn limits(value: serde_json::Value) -> TenantSpec {
        serde_json::from_value(value).expect("limits")
    }

    #[test]
    fn declared_usage_sums_replicas_times_size() {
        let a = deployment(2, "250m", "64Mi");
        let b = deployment(3, "1", "1Gi");
        let usage = declared([&a, &b], 4);
        assert_eq!(usage.pods, 5);
        assert_eq!(usage.cpu, Cpu(3500));
        assert_eq!(usage.memory, Memory((128 << 20) + (3 << 30)));
        assert_eq!(usage.deployments, 2);
        assert_eq!(usage.services, 4);
    }

    #[test]
    fn growth_past_a_limit_is_named_shrinking_is_not() {
        let quota = limits(json!({"pods": 2, "cpu": "1"}));
        let before = declared([&deployment(1, "100m", "64Mi")], 0);
        let after = declared([&deployment(3, "100m", "64Mi")], 0);
        let over = exceeded(&quota, &before, &after);
        assert_eq!(over, ["pods: 2 requested, 1 in use, limit 2"]);
        // Already over (quota lowered) and shrinking: allowed.
        let big = declared([&deployment(5, "100m", "64Mi")], 0);
        assert!(exceeded(&quota, &big, &after).is_empty());
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        let mut usage = Usage::default();
        let pod: PodSpec = serde_json::from_value(
            json!({"component": "sha256:00", "cpu": "256", "memory": "4Gi"}),
        )
        .expect("pod");
        add_pods(&mut usage, &pod, u64::MAX);
        assert_eq!(usage.pods, u64::MAX);
        assert_eq!(usage.cpu.0, u64::MAX);
    }

    #[test]
    fn pods_fit_until_the_first_limit() {
        let quota = limits(json!({"memory": "200Mi"}));
        let pod = deployment(1, "100m", "64Mi").template;
        let live = declared([&deployment(1, "100m", "64Mi")], 0);
        let (fit, why) = pods_that_fit(&quota, &live, &pod, 5);
        assert_eq!(fit, 2);
        assert!(why.expect("held back").starts_with("memory:"));
        assert_eq!(
            pods_that_fit(&TenantSpec::default(), &live, &pod, 5),
            (5, None)
        );
    }
}
