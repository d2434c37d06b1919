//! Object semantics on top of the key-value store: the one write path for HTTP
//! clients, the scheduler and the controllers alike.
//!
//! The registry owns the key layout, metadata bookkeeping (uid, generation,
//! resource_version = the store revision of the write), validation and admission,
//! and optimistic concurrency (every write is a compare-and-swap on the revision it
//! read). It knows nothing about HTTP or authentication.

mod admission;
mod batch;
mod blobs;
mod error;
mod informer;
#[cfg(test)]
mod informer_tests;

/// A registry on a real single-member store in `dir`, for tests of the loops.
#[cfg(test)]
pub(crate) async fn single_member(dir: &std::path::Path) -> anyhow::Result<Registry> {
    use crate::store::{Store, StoreConfig};
    let store = Store::open(StoreConfig::new(1, dir.join("m1"), "127.0.0.1:9", "s")).await?;
    store.initialize_single().await?;
    Ok(Registry::new(store))
}
mod watch;

pub use admission::blob_claim_key;
pub use error::{read_error, RegistryError, Result};
pub use watch::{label_selector, node_selector, Change, Changes};

use crate::store::{Check, KeyValue, Op, Revision, Store, Txn};
use admission::Pending;
use error::{concurrent, stale};
use rand::Rng;
use reef_api::validate::{self, FieldError};
use reef_api::*;
use serde_json::Value;
use std::sync::Arc;

/// How a spec write relates to what is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Replace whatever is there (retrying internally on a concurrent write).
    None,
    /// Fail with 409 if the object exists.
    CreateOnly,
    /// Fail with 409 unless the stored object is at this revision.
    Revision(Revision),
}

/// One object write inside a [`Registry::write_batch`].
#[derive(Clone, Debug)]
pub enum BatchWrite {
    /// Replace the spec (and metadata) of an object read at `metadata.resource_version`.
    Spec(RawObject),
    /// Replace the status of an object read at `metadata.resource_version`.
    Status(RawObject),
    Delete(RawObject),
    /// Create a new object (fails the batch if the name is taken).
    Create(RawObject),
    /// Write nothing, but fail the batch unless this object is still at the
    /// revision it was read at (e.g. the owner of pods being created).
    Require(RawObject),
}

/// Namespace `default` always exists; others exist as Tenants.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How long a member waits to apply a revision the leader has already
/// committed before it gives up on a write.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Label that ties a deployment's pods to the template they were made from.
pub const TEMPLATE_HASH_LABEL: &str = "reef.dev/template-hash";

pub fn key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("/registry/{}/{ns}/{name}", kind.plural()),
        _ => format!("/registry/{}/{name}", kind.plural()),
    }
}

/// Key prefix of a collection; `namespace = None` covers every namespace.
pub fn prefix(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("/registry/{}/{ns}/", kind.plural()),
        _ => format!("/registry/{}/", kind.plural()),
    }
}

/// Decodes a stored value, stamping the revision that wrote it.
pub fn decode(kv: &KeyValue) -> Result<RawObject> {
    let mut obj: RawObject = serde_json::from_slice(&kv.value)?;
    obj.metadata.resource_version = kv.mod_revision;
    Ok(obj)
}

fn encode(obj: &RawObject) -> Result<Vec<u8>> {
    let mut stored = obj.clone();
    stored.metadata.resource_version = 0;
    Ok(serde_json::to_vec(&stored)?)
}

pub fn new_uid() -> String {
    let bytes: [u8; 16] = rand::thread_rng().gen();
    hex::encode(bytes)
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<Store>,
    informers: Arc<informer::Informers>,
    /// OCI registries (`host[:port]`) whose components specs may name; the
    /// nodes fetch from them, so a tenant must not point them anywhere else.
    oci_registries: Arc<Vec<String>>,
}

impl Registry {
    pub fn new(store: Arc<Store>) -> Registry {
        Registry {
            store,
            informers: Arc::default(),
            oci_registries: Arc::default(),
        }
    }

    /// Allows specs to name components in these OCI registries (none by default).
    pub fn allow_oci_registries(mut self, registries: Vec<String>) -> Registry {
        self.oci_registries = Arc::new(registries);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<RawObject> {
        match self.store.get(&key(kind, namespace, name))? {
            Some(kv) => decode(&kv),
            None => Err(RegistryError::NotFound {
                kind,
                name: name.to_string(),
            }),
        }
    }

    pub fn try_get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<RawObject>> {
        match self.get(kind, namespace, name) {
            Ok(obj) => Ok(Some(obj)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of a kind (in one namespace or all), and the revision they reflect.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<(Vec<RawObject>, Revision)> {
        let (kvs, revision) = self.store.range(&prefix(kind, namespace))?;
        let items = kvs.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok((items, revision))
    }

    /// Typed list; objects that do not match the schema are skipped with a log line,
    /// so one bad object cannot stop the scheduler or a controller.
    pub fn list_typed<S, T>(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Object<S, T>>>
    where
        S: serde::de::DeserializeOwned,
        T: serde::de::DeserializeOwned + Default,
    {
        let (items, _) = self.list(kind, namespace)?;
        Ok(items
            .into_iter()
            .filter_map(|raw| match raw.typed() {
                Ok(obj) => Some(obj),
                Err(e) => {
                    tracing::warn!(kind = %kind, name = %raw.metadata.name, "skipping undecodable object: {e}");
                    None
                }
            })
            .collect())
    }

    /// What [`list_typed`](Self::list_typed) gives for the whole kind, from
    /// objects kept decoded in memory (`informer`) rather than a scan: every
    /// write applied on this member before the call is in. For loops that
    /// read whole kinds on every pass.
    pub fn list_cached<S, T>(&self, kind: Kind) -> Result<Vec<Arc<Object<S, T>>>>
    where
        S: serde::de::DeserializeOwned + Send + Sync + 'static,
        T: serde::de::DeserializeOwned + Default + Send + Sync + 'static,
    {
        self.informers.list(&self.store, kind, None)
    }

    /// [`list_cached`](Self::list_cached) of one namespace.
    pub fn list_cached_in<S, T>(
        &self,
        kind: Kind,
        namespace: &str,
    ) -> Result<Vec<Arc<Object<S, T>>>>
    where
        S: serde::de::DeserializeOwned + Send + Sync + 'static,
        T: serde::de::DeserializeOwned + Default + Send + Sync + 'static,
    {
        self.informers.list(&self.store, kind, Some(namespace))
    }

    /// One object from the same cache as [`list_cached`](Self::list_cached).
    pub fn get_cached<S, T>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Object<S, T>>>>
    where
        S: serde::de::DeserializeOwned + Send + Sync + 'static,
        T: serde::de::DeserializeOwned + Default + Send + Sync + 'static,
    {
        self.informers.get(&self.store, kind, namespace, name)
    }

    pub fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        Ok(
            namespace == DEFAULT_NAMESPACE
                || self.try_get(Kind::Tenant, None, namespace)?.is_some(),
        )
    }

    /// Merges a client's object onto the stored one: the client owns labels, owner and
    /// spec; the server owns uid, creation time, generation and status.
    fn merge(incoming: &RawObject, current: Option<&RawObject>) -> RawObject {
        let mut next = incoming.clone();
        match current {
            Some(current) => {
                next.metadata.uid = current.metadata.uid.clone();
                next.metadata.created_at = current.metadata.created_at.clone();
                next.metadata.generation = if current.spec == incoming.spec {
                    current.metadata.generation
                } else {
                    current.metadata.generation + 1
                };
                if next.metadata.owner.is_none() {
                    next.metadata.owner = current.metadata.owner.clone();
                }
                next.status = current.status.clone();
            }
            None => {
                next.metadata.uid = new_uid();
                next.metadata.created_at = Some(now_rfc3339());
                next.metadata.generation = 1;
                next.status = initial_status(next.kind);
            }
        }
        next
    }

    /// Normalises the spec through its typed form, so stored objects carry defaults.
    fn normalise(obj: &mut RawObject) -> Result<()> {
        fn round<S: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value> {
            let typed: S = validate::parse_at("spec", v).map_err(RegistryError::Invalid)?;
            Ok(serde_json::to_value(typed)?)
        }
        obj.spec = match obj.kind {
            Kind::Deployment => round::<DeploymentSpec>(&obj.spec)?,
            Kind::Pod => round::<PodSpec>(&obj.spec)?,
            Kind::Service => round::<ServiceSpec>(&obj.spec)?,
            Kind::Node => round::<NodeSpec>(&obj.spec)?,
            Kind::Tenant => round::<TenantSpec>(&obj.spec)?,
            Kind::Blob => round::<BlobSpec>(&obj.spec)?,
            Kind::Event => round::<EventSpec>(&obj.spec)?,
        };
        Ok(())
    }

    /// Prepares a spec write: admission, then the next stored form and the check
    /// that the store must pass for it to apply.
    fn prepare_spec(
        &self,
        incoming: &RawObject,
        precondition: Precondition,
    ) -> Result<(RawObject, Check, Option<RawObject>)> {
        let mut incoming = incoming.clone();
        Self::normalise(&mut incoming)?;
        let ns = incoming.metadata.namespace.as_deref();
        let k = key(incoming.kind, ns, &incoming.metadata.name);
        let current = self.try_get(incoming.kind, ns, &incoming.metadata.name)?;
        match (precondition, &current) {
            (Precondition::CreateOnly, Some(_)) => {
                return Err(RegistryError::Conflict(format!(
                    "{} {:?} already exists",
                    incoming.kind, incoming.metadata.name
                )))
            }
            (Precondition::Revision(rv), Some(c)) if c.metadata.resource_version != rv => {
                return Err(stale(
                    incoming.kind,
                    &incoming.metadata.name,
                    rv,
                    c.metadata.resource_version,
                ))
            }
            (Precondition::Revision(_), None) => {
                return Err(RegistryError::NotFound {
                    kind: incoming.kind,
                    name: incoming.metadata.name.clone(),
                })
            }
            _ => {}
        }
        if let Some(current) = &current {
            check_pod_update(current, &incoming)?;
        }
        let next = Self::merge(&incoming, current.as_ref());
        let check = match &current {
            Some(c) => Check::ModRevision {
                key: k,
                revision: c.metadata.resource_version,
            },
            None => Check::Absent { key: k },
        };
        Ok((next, check, current))
    }

    /// Creates or replaces an object's metadata and spec.
    pub async fn put(&self, incoming: &RawObject, precondition: Precondition) -> Result<RawObject> {
        let mut fresh = self.store.is_leader();
        loop {
            let prepared =
                self.prepare_spec(incoming, precondition)
                    .and_then(|(next, check, current)| {
                        let pending = Pending {
                            next: Some(&next),
                            current: current.as_ref(),
                        };
                        let effects = self.review(&[(0, pending)], false)?;
                        Ok((next, check, effects))
                    });
            let Some((next, check, effects)) = self.judged(&mut fresh, prepared).await? else {
                continue;
            };
            match self.write_checked(check, next, effects).await? {
                Ok(stored) => return Ok(stored),
                Err(at) => {
                    if self.raced(&mut fresh, at).await? && precondition != Precondition::None {
                        return Err(concurrent(incoming.kind, &incoming.metadata.name));
                    }
                }
            }
        }
    }

    /// Writes are judged on this member's state without asking the leader
    /// first. A follower may lag, so a refusal judged on its state (a stale
    /// `resource_version`, "already exists", a quota) stands only once it has
    /// caught up to the leader (read barrier); until then the caller tries
    /// again (`None`). The leader has applied every write it acknowledged and
    /// compare-and-swap covers the rest, so most writes cost no extra round trip.
    async fn judged<T>(&self, fresh: &mut bool, judged: Result<T>) -> Result<Option<T>> {
        match judged {
            Ok(value) => Ok(Some(value)),
            Err(e) if *fresh => Err(e),
            Err(_) => {
                self.store.read_barrier().await.map_err(read_error)?;
                *fresh = true;
                Ok(None)
            }
        }
    }

    /// After a compare-and-swap failed at the leader's revision `at`: waits
    /// until this member has applied `at` (no round trip: it is on its way).
    /// True if the state the write was judged on was already fresh, so the
    /// conflict is a real concurrent write.
    async fn raced(&self, fresh: &mut bool, at: Revision) -> Result<bool> {
        let was_fresh = *fresh;
        self.store
            .wait_for_revision(at, CATCH_UP)
            .await
            .map_err(read_error)?;
        *fresh = true;
        Ok(was_fresh)
    }

    /// A follower may lag the leader; before it reads the state a batch is
    /// based on, it catches up to the leader's commit index.
    async fn catch_up(&self) -> Result<()> {
        if !self.store.is_leader() {
            self.store.read_barrier().await.map_err(read_error)?;
        }
        Ok(())
    }

    /// Writes one object if `check` holds; if it did not (a concurrent
    /// write), the leader's revision at which it failed.
    async fn write_checked(
        &self,
        check: Check,
        mut next: RawObject,
        effects: admission::Effects,
    ) -> Result<std::result::Result<RawObject, Revision>> {
        let k = key(
            next.kind,
            next.metadata.namespace.as_deref(),
            &next.metadata.name,
        );
        let mut txn = Txn {
            checks: vec![check],
            ops: vec![Op::Put {
                key: k,
                value: encode(&next)?,
            }],
        };
        txn.checks.extend(effects.checks);
        txn.ops.extend(effects.ops);
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Ok(Err(outcome.revision));
        }
        next.metadata.resource_version = outcome.revision;
        Ok(Ok(next))
    }

    /// Replaces the status of an object; `revision` makes it compare-and-swap.
    pub async fn put_status(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        status: Value,
        revision: Option<Revision>,
    ) -> Result<RawObject> {
        validate::validate_status(kind, &status).map_err(RegistryError::Invalid)?;
        let mut fresh = self.store.is_leader();
        loop {
            let current = self
                .get(kind, namespace, name)
                .and_then(|current| match revision {
                    Some(rv) if rv != current.metadata.resource_version => {
                        Err(stale(kind, name, rv, current.metadata.resource_version))
                    }
                    _ => Ok(current),
                });
            let Some(current) = self.judged(&mut fresh, current).await? else {
                continue;
            };
            let check = Check::ModRevision {
                key: key(kind, namespace, name),
                revision: current.metadata.resource_version,
            };
            let mut next = current;
            next.status = status.clone();
            match self
                .write_checked(check, next, admission::Effects::default())
                .await?
            {
                Ok(stored) => return Ok(stored),
                Err(at) => {
                    if self.raced(&mut fresh, at).await? && revision.is_some() {
                        return Err(concurrent(kind, name));
                    }
                }
            }
        }
    }

    /// Deletes an object; `revision` makes it compare-and-swap. Returns what was deleted.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        revision: Option<Revision>,
    ) -> Result<RawObject> {
        self.catch_up().await?;
        loop {
            let current = self.get(kind, namespace, name)?;
            let rv = current.metadata.resource_version;
            if let Some(expected) = revision {
                if expected != rv {
                    return Err(stale(kind, name, expected, rv));
                }
            }
            let effects = self.review(
                &[(
                    0,
                    Pending {
                        next: None,
                        current: Some(&current),
                    },
                )],
                false,
            )?;
            let k = key(kind, namespace, name);
            let mut txn = Txn {
                checks: vec![Check::ModRevision {
                    key: k.clone(),
                    revision: rv,
                }],
                ops: vec![Op::Delete { key: k }],
            };
            if kind == Kind::Blob {
                txn.ops.push(Op::DeleteBlob {
                    digest: name.to_string(),
                });
                let (claims, _) = self.store.range("/claims/blobs/")?;
                let suffix = format!("/{name}");
                txn.ops.extend(
                    claims
                        .into_iter()
                        .filter(|kv| kv.key.ends_with(&suffix))
                        .map(|kv| Op::Delete { key: kv.key }),
                );
            }
            txn.checks.extend(effects.checks);
            txn.ops.extend(effects.ops);
            if self.store.txn(txn).await?.succeeded {
                return Ok(current);
            }
            if revision.is_some() {
                return Err(concurrent(kind, name));
            }
        }
    }
}

/// A pod's spec is fixed once created, except that an unbound pod may be bound:
/// a node that watches its own pods must never see one move away silently.
fn check_pod_update(current: &RawObject, incoming: &RawObject) -> Result<()> {
    if current.kind != Kind::Pod {
        return Ok(());
    }
    let without_node = |spec: &Value| {
        let mut spec = spec.clone();
        if let Some(fields) = spec.as_object_mut() {
            fields.remove("node");
        }
        spec
    };
    if without_node(&current.spec) != without_node(&incoming.spec) {
        return Err(RegistryError::Invalid(FieldError::new(
            "spec",
            "a pod's spec cannot change; change its deployment's template instead",
        )));
    }
    let (was, now) = (current.spec.get("node"), incoming.spec.get("node"));
    if was.is_some_and(|n| !n.is_null()) && was != now {
        return Err(RegistryError::Invalid(FieldError::new(
            "spec.node",
            "a bound pod cannot move to another node; delete it and let its deployment replace it",
        )));
    }
    Ok(())
}

/// A new object's status: a pod is `Pending` from its creation (a client
/// sees its phase before any node reports one); other kinds start with none.
fn initial_status(kind: Kind) -> Value {
    match kind {
        Kind::Pod => serde_json::to_value(reef_api::PodStatus::default()).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}
