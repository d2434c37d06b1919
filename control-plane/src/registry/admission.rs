//! Admission: what a set of changes must satisfy beyond each object's own
//! validity, and the extra conditions and writes that make those rules hold
//! in the same transaction as the changes.
//!
//! - A namespaced object needs its namespace (`default`, or a Tenant's).
//! - In a tenant's namespace every spec write checks the Tenant's revision, so
//!   a tenant deleted meanwhile takes nothing with it half-made; deployment and
//!   service writes also rewrite the Tenant's `status.used`, which serialises
//!   quota decisions of one namespace (as Kubernetes' ResourceQuota status does).
//! - A deployment or pod in a tenant's namespace may only run components
//!   uploaded to that namespace ([`blob_claim_key`]).
//! - A Service host belongs to one namespace: a claim key per host.
//! - A Tenant is deleted only once its namespace holds no workloads; its
//!   events, claims and tokens go with it.

use super::error::{at_item, Result};
use super::{decode, key, prefix, Registry, RegistryError, DEFAULT_NAMESPACE};
use crate::quota;
use crate::store::{Check, KeyValue, Op};
use reef_api::validate::{self, FieldError};
use reef_api::{DeploymentSpec, Kind, RawObject, ServiceSpec, TenantSpec, TenantStatus};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One change of a write: `next` is what will be stored (none for a
/// deletion), `current` what is stored now (none for a creation).
pub(super) struct Pending<'a> {
    pub next: Option<&'a RawObject>,
    pub current: Option<&'a RawObject>,
}

impl<'a> Pending<'a> {
    /// A write of `next` over what is stored (`current`).
    pub fn write((next, current): &'a (RawObject, Option<RawObject>)) -> Pending<'a> {
        Pending {
            next: Some(next),
            current: current.as_ref(),
        }
    }
}

/// Conditions and writes a change brings into its transaction.
#[derive(Default)]
pub(super) struct Effects {
    pub checks: Vec<Check>,
    pub ops: Vec<Op>,
}

/// Who may run which components: `/claims/blobs/NAMESPACE/DIGEST` exists once
/// the bytes were uploaded into that namespace.
pub fn blob_claim_key(namespace: &str, digest: &str) -> String {
    format!("/claims/blobs/{namespace}/{digest}")
}

/// Which namespace a Service host belongs to.
fn host_claim_key(host: &str) -> String {
    format!("/claims/hosts/{}", host.to_ascii_lowercase())
}

fn tenant_key(namespace: &str) -> String {
    key(Kind::Tenant, None, namespace)
}

/// Tenants read during one review (a Tenant is a namespace and its quota).
struct Tenants<'r> {
    registry: &'r Registry,
    seen: HashMap<String, Option<KeyValue>>,
}

impl Tenants<'_> {
    /// The stored Tenant named like the namespace (`None` for `default` or none).
    fn get(&mut self, namespace: &str) -> Result<Option<&KeyValue>> {
        if !self.seen.contains_key(namespace) {
            let found = match namespace {
                DEFAULT_NAMESPACE => None,
                _ => self.registry.store.get(&tenant_key(namespace))?,
            };
            self.seen.insert(namespace.to_string(), found);
        }
        Ok(self.seen.get(namespace).and_then(Option::as_ref))
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(FieldError::new(path, message))
}

fn host_of(obj: &RawObject) -> Option<String> {
    obj.spec
        .get("host")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

impl Registry {
    /// Reviews the changes of one transaction, each with its index in the
    /// request; `itemized` names failing objects by it (`items[i].…`), as an
    /// apply reports them.
    pub(super) fn review(
        &self,
        indexed: &[(usize, Pending<'_>)],
        itemized: bool,
    ) -> Result<Effects> {
        let mut effects = Effects::default();
        let mut tenants = Tenants {
            registry: self,
            seen: HashMap::new(),
        };
        for (i, change) in indexed {
            if let Some(next) = change.next {
                self.admit_one(next, change.current, &mut tenants, &mut effects)
                    .map_err(|e| if itemized { at_item(*i, e) } else { e })?;
            }
        }
        let pending: Vec<&Pending<'_>> = indexed.iter().map(|(_, p)| p).collect();
        let pending = pending.as_slice();
        self.review_hosts(pending, &mut effects)?;
        self.review_quota(pending, &mut tenants, &mut effects)?;
        for change in pending {
            if let (None, Some(current)) = (change.next, change.current) {
                if current.kind == Kind::Tenant {
                    self.review_tenant_deletion(&current.metadata.name, &mut effects)?;
                }
            }
        }
        Ok(effects)
    }

    /// A component in an OCI registry: pinned to a digest, in a registry the
    /// operator allowed (`--oci-registry`), since the nodes will fetch it.
    fn admit_oci_component(&self, value: &str, path: &str) -> Result<()> {
        let field = format!("spec{}", path.replace('/', "."));
        let reference: reef_api::component_ref::ComponentRef =
            value
                .parse()
                .map_err(|e: reef_api::component_ref::BadReference| {
                    invalid(field.clone(), e.to_string())
                })?;
        if reference.digest.is_none() {
            return Err(invalid(
                field,
                format!(
                    "{value} names a tag; a spec pins a digest (oci://HOST/REPO@sha256:HEX), which `reef apply` resolves"
                ),
            ));
        }
        if !self
            .oci_registries
            .iter()
            .any(|allowed| reference.registry_matches(allowed))
        {
            return Err(invalid(
                field,
                format!(
                    "registry {} is not one this cluster pulls from (the operator allows registries with --oci-registry)",
                    reference.registry
                ),
            ));
        }
        Ok(())
    }

    fn admit_one(
        &self,
        obj: &RawObject,
        current: Option<&RawObject>,
        tenants: &mut Tenants<'_>,
        effects: &mut Effects,
    ) -> Result<()> {
        validate::validate_object(obj).map_err(RegistryError::Invalid)?;
        let Some(namespace) = obj
            .metadata
            .namespace
            .as_deref()
            .filter(|_| obj.kind.namespaced())
        else {
            return Ok(());
        };
        let tenant = tenants.get(namespace)?;
        if namespace != DEFAULT_NAMESPACE {
            let Some(tenant) = tenant else {
                return Err(RegistryError::NotFound {
                    kind: Kind::Tenant,
                    name: namespace.to_string(),
                });
            };
            // A creation must not land in a tenant being deleted (which first
            // checks that its namespace is empty).
            if current.is_none() {
                effects.checks.push(Check::ModRevision {
                    key: tenant.key.clone(),
                    revision: tenant.mod_revision,
                });
            }
        }
        let component = |spec: &Value, path: &'static str| -> Option<(String, &'static str)> {
            spec.pointer(path)
                .and_then(Value::as_str)
                .map(|c| (c.to_string(), path))
        };
        let used = match obj.kind {
            Kind::Deployment => component(&obj.spec, "/template/component"),
            Kind::Pod => component(&obj.spec, "/component"),
            _ => None,
        };
        if let Some((digest, path)) = used {
            let unchanged = current.is_some_and(|c| {
                component(&c.spec, path).is_some_and(|(before, _)| before == digest)
            });
            if digest.starts_with(reef_api::component_ref::SCHEME) {
                if !unchanged {
                    self.admit_oci_component(&digest, path)?;
                }
            } else if namespace != DEFAULT_NAMESPACE && !unchanged {
                let claim = blob_claim_key(namespace, &digest);
                if self.store.get(&claim)?.is_none() {
                    let field = format!("spec{}", path.replace('/', "."));
                    return Err(invalid(
                        field,
                        format!(
                            "component {digest} was not uploaded to namespace {namespace:?}: \
                             `reef apply` uploads the file the manifest names"
                        ),
                    ));
                }
            }
        }
        if obj.kind == Kind::Pod {
            if let Some(node) = obj.spec.get("node").and_then(Value::as_str) {
                let was = current
                    .and_then(|c| c.spec.get("node"))
                    .and_then(Value::as_str);
                if was != Some(node) && self.store.get(&key(Kind::Node, None, node))?.is_none() {
                    return Err(invalid(
                        "spec.node",
                        format!("node {node:?} does not exist"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Claims the hosts the changes start using and releases those no service
    /// of the namespace uses any more.
    fn review_hosts(&self, pending: &[&Pending<'_>], effects: &mut Effects) -> Result<()> {
        // Per (namespace, host): whether the changes leave it in use.
        let mut touched: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut changed_names: BTreeSet<(String, String)> = BTreeSet::new();
        for change in pending {
            let Some(obj) = change.next.or(change.current) else {
                continue;
            };
            if obj.kind != Kind::Service {
                continue;
            }
            let namespace = obj.namespace().to_string();
            changed_names.insert((namespace.clone(), obj.metadata.name.clone()));
            if let Some(host) = change.current.and_then(host_of) {
                touched.entry((namespace.clone(), host)).or_insert(false);
            }
            if let Some(host) = change.next.and_then(host_of) {
                touched.insert((namespace, host), true);
            }
        }
        for ((namespace, host), used) in touched {
            let claim_key = host_claim_key(&host);
            let claim = self.store.get(&claim_key)?;
            let owner = claim
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            let check = match &claim {
                Some(kv) => Check::ModRevision {
                    key: claim_key.clone(),
                    revision: kv.mod_revision,
                },
                None => Check::Absent {
                    key: claim_key.clone(),
                },
            };
            if used {
                if owner.as_deref().is_some_and(|o| o != namespace) {
                    // Says nothing of who holds it: that is another tenant's business.
                    return Err(RegistryError::Conflict(format!(
                        "host {host:?} is taken: it belongs to another namespace"
                    )));
                }
                effects.checks.push(check);
                effects.ops.push(Op::Put {
                    key: claim_key,
                    value: namespace.into_bytes(),
                });
                continue;
            }
            if owner.as_deref() != Some(namespace.as_str()) {
                continue;
            }
            let (services, _) = self.store.range(&prefix(Kind::Service, Some(&namespace)))?;
            let still_used = services.iter().filter_map(|kv| decode(kv).ok()).any(|s| {
                !changed_names.contains(&(namespace.clone(), s.metadata.name.clone()))
                    && host_of(&s).as_deref() == Some(host.as_str())
            });
            if !still_used {
                effects.checks.push(check);
                effects.ops.push(Op::Delete { key: claim_key });
            }
        }
        Ok(())
    }

    /// Refuses deployment and service writes that take a tenant past its
    /// quota, and records what the namespace uses in the Tenant's status.
    fn review_quota(
        &self,
        pending: &[&Pending<'_>],
        tenants: &mut Tenants<'_>,
        effects: &mut Effects,
    ) -> Result<()> {
        let namespaces: BTreeSet<String> = pending
            .iter()
            .filter_map(|c| c.next.or(c.current))
            .filter(|o| matches!(o.kind, Kind::Deployment | Kind::Service))
            .map(|o| o.namespace().to_string())
            .collect();
        for namespace in namespaces {
            let Some(stored) = tenants.get(&namespace)?.cloned() else {
                continue;
            };
            let mut tenant = decode(&stored)?;
            let limits: TenantSpec = serde_json::from_value(tenant.spec.clone())?;
            let mut deployments =
                self.specs_by_name::<DeploymentSpec>(Kind::Deployment, &namespace)?;
            let mut services = self.specs_by_name::<ServiceSpec>(Kind::Service, &namespace)?;
            let before = quota::declared(deployments.values(), services.len());
            let mut grows = false;
            for change in pending {
                let Some(obj) = change.next.or(change.current) else {
                    continue;
                };
                if obj.namespace() != namespace {
                    continue;
                }
                let name = obj.metadata.name.clone();
                match (obj.kind, change.next) {
                    (Kind::Deployment, Some(next)) => {
                        deployments.insert(name, serde_json::from_value(next.spec.clone())?);
                        grows = true;
                    }
                    (Kind::Deployment, None) => {
                        deployments.remove(&name);
                    }
                    (Kind::Service, Some(next)) => {
                        services.insert(name, serde_json::from_value(next.spec.clone())?);
                        grows = true;
                    }
                    (Kind::Service, None) => {
                        services.remove(&name);
                    }
                    _ => {}
                }
            }
            let after = quota::declared(deployments.values(), services.len());
            let over = quota::exceeded(&limits, &before, &after);
            if grows && !over.is_empty() {
                return Err(RegistryError::QuotaExceeded(format!(
                    "exceeded quota of tenant {namespace:?}: {}",
                    over.join("; ")
                )));
            }
            tenant.status = serde_json::to_value(TenantStatus { used: after })?;
            effects.checks.push(Check::ModRevision {
                key: stored.key.clone(),
                revision: stored.mod_revision,
            });
            effects.ops.push(Op::Put {
                key: stored.key,
                value: super::encode(&tenant)?,
            });
        }
        Ok(())
    }

    fn specs_by_name<S: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: &str,
    ) -> Result<BTreeMap<String, S>> {
        let (kvs, _) = self.store.range(&prefix(kind, Some(namespace)))?;
        let mut out = BTreeMap::new();
        for kv in &kvs {
            let obj = decode(kv)?;
            // An undecodable stored spec counts as nothing rather than blocking the namespace.
            if let Ok(spec) = serde_json::from_value(obj.spec) {
                out.insert(obj.metadata.name, spec);
            }
        }
        Ok(out)
    }

    /// A tenant goes only once its namespace holds no deployments, services or
    /// pods; its events, claims and tokens go in the same transaction.
    fn review_tenant_deletion(&self, tenant: &str, effects: &mut Effects) -> Result<()> {
        let mut held = Vec::new();
        for kind in [Kind::Deployment, Kind::Service, Kind::Pod] {
            let (items, _) = self.store.range(&prefix(kind, Some(tenant)))?;
            if !items.is_empty() {
                held.push(format!("{} {}", items.len(), kind.plural()));
            }
        }
        if !held.is_empty() {
            return Err(RegistryError::Conflict(format!(
                "tenant {tenant:?} still holds {}: delete them first",
                held.join(", ")
            )));
        }
        let mut doomed: Vec<String> = Vec::new();
        for range in [
            prefix(Kind::Event, Some(tenant)),
            format!("/claims/blobs/{tenant}/"),
        ] {
            let (kvs, _) = self.store.range(&range)?;
            doomed.extend(kvs.into_iter().map(|kv| kv.key));
        }
        let (claims, _) = self.store.range("/claims/hosts/")?;
        doomed.extend(
            claims
                .into_iter()
                .filter(|kv| kv.value == tenant.as_bytes())
                .map(|kv| kv.key),
        );
        doomed.extend(crate::credentials::tenant_token_keys(&self.store, tenant)?);
        effects
            .ops
            .extend(doomed.into_iter().map(|key| Op::Delete { key }));
        Ok(())
    }
}
