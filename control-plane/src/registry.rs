//! Object semantics on top of the key-value store: the one write path for HTTP
//! clients, the scheduler and the controllers alike.
//!
//! The registry owns the key layout, metadata bookkeeping (uid, generation,
//! resource_version = the store revision of the write), validation and admission,
//! and optimistic concurrency (every write is a compare-and-swap on the revision it
//! read). It knows nothing about HTTP or authentication.

use crate::store::{Check, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn};
use rand::Rng;
use reef_api::validate::{self, FieldError};
use reef_api::*;
use serde_json::Value;
use std::sync::Arc;

/// Why an object operation failed, mapped 1:1 onto an HTTP status by the API server.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: Kind, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error(
        "no kind {0:?}: known kinds are tenants, nodes, deployments, pods, services, events, blobs"
    )]
    UnknownKind(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the store's history no longer reaches revision {since}; relist and watch from the list's resource_version")]
    Gone { since: Revision },
    #[error("{0}")]
    Unavailable(String),
    #[error("the write's outcome is unknown (it may still commit): {0}")]
    Unknown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    pub fn code(&self) -> u16 {
        match self {
            RegistryError::Invalid(_) => 422,
            RegistryError::NotFound { .. } | RegistryError::UnknownKind(_) => 404,
            RegistryError::Conflict(_) => 409,
            RegistryError::BadRequest(_) => 400,
            RegistryError::Forbidden(_) => 403,
            RegistryError::Gone { .. } => 410,
            RegistryError::Unavailable(_) => 503,
            RegistryError::Unknown(_) => 504,
            RegistryError::Internal(_) => 500,
        }
    }

    pub fn to_api_error(&self) -> ApiError {
        let reason = match self {
            RegistryError::Invalid(_) => "Invalid",
            RegistryError::NotFound { .. } | RegistryError::UnknownKind(_) => "NotFound",
            RegistryError::Conflict(_) => "Conflict",
            RegistryError::BadRequest(_) => "BadRequest",
            RegistryError::Forbidden(_) => "Forbidden",
            RegistryError::Gone { .. } => "Expired",
            RegistryError::Unavailable(_) => "Unavailable",
            RegistryError::Unknown(_) => "Timeout",
            RegistryError::Internal(_) => "InternalError",
        };
        let (message, field) = match self {
            RegistryError::Invalid(e) => (e.message.clone(), Some(e.path.clone())),
            other => (other.to_string(), None),
        };
        ApiError {
            code: self.code(),
            reason: reason.to_string(),
            message,
            field,
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { oldest } => RegistryError::Gone { since: oldest },
            // No quorum reachable from this member (election, partition, shutdown)
            // and nothing was proposed: 503 tells clients to try another member.
            StoreError::NotLeader { .. } | StoreError::Stopped(_) => {
                RegistryError::Unavailable(e.to_string())
            }
            // A write whose outcome is unknown (proposed, not confirmed in time):
            // 504, which clients must not blindly retry.
            StoreError::Timeout(_) => RegistryError::Unknown(e.to_string()),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for RegistryError {
    fn from(e: serde_json::Error) -> Self {
        RegistryError::Internal(format!("stored object does not decode: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

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

/// A change to one object, as watchers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: WatchEventType,
    pub object: RawObject,
    pub revision: Revision,
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<Store>,
}

impl Registry {
    pub fn new(store: Arc<Store>) -> Registry {
        Registry { store }
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

    pub fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        Ok(
            namespace == DEFAULT_NAMESPACE
                || self.try_get(Kind::Tenant, None, namespace)?.is_some(),
        )
    }

    /// Validation and admission shared by every spec write.
    fn admit(&self, obj: &RawObject) -> Result<()> {
        validate::validate_object(obj).map_err(RegistryError::Invalid)?;
        if let Some(ns) = obj.metadata.namespace.as_deref() {
            if obj.kind.namespaced() && !self.namespace_exists(ns)? {
                return Err(RegistryError::NotFound {
                    kind: Kind::Tenant,
                    name: ns.to_string(),
                });
            }
        }
        if obj.kind == Kind::Pod {
            if let Some(node) = obj.spec.get("node").and_then(Value::as_str) {
                if self.try_get(Kind::Node, None, node)?.is_none() {
                    return Err(RegistryError::Invalid(FieldError::new(
                        "spec.node",
                        format!("node {node:?} does not exist"),
                    )));
                }
            }
        }
        Ok(())
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
                next.status = Value::Null;
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
        self.admit(&incoming)?;
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
        self.catch_up().await?;
        loop {
            let (next, check, _) = self.prepare_spec(incoming, precondition)?;
            if let Some(stored) = self.write_checked(check, next).await? {
                return Ok(stored);
            }
            if precondition != Precondition::None {
                return Err(concurrent(incoming.kind, &incoming.metadata.name));
            }
        }
    }

    /// A follower may lag the leader; before it reads the state a write is based on,
    /// it catches up to the leader's commit index, so a client that sends a
    /// resource_version it just read elsewhere is not refused as stale. (The
    /// leader has applied every write it acknowledged; compare-and-swap covers
    /// the rest.)
    async fn catch_up(&self) -> Result<()> {
        if !self.store.is_leader() {
            self.store.read_barrier().await.map_err(read_error)?;
        }
        Ok(())
    }

    /// Writes one object if `check` holds; `None` if it did not (a concurrent write).
    async fn write_checked(&self, check: Check, mut next: RawObject) -> Result<Option<RawObject>> {
        let k = key(
            next.kind,
            next.metadata.namespace.as_deref(),
            &next.metadata.name,
        );
        let txn = Txn {
            checks: vec![check],
            ops: vec![Op::Put {
                key: k,
                value: encode(&next)?,
            }],
        };
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Ok(None);
        }
        next.metadata.resource_version = outcome.revision;
        Ok(Some(next))
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
        self.catch_up().await?;
        loop {
            let current = self.get(kind, namespace, name)?;
            if let Some(rv) = revision {
                if rv != current.metadata.resource_version {
                    return Err(stale(kind, name, rv, current.metadata.resource_version));
                }
            }
            let check = Check::ModRevision {
                key: key(kind, namespace, name),
                revision: current.metadata.resource_version,
            };
            let mut next = current;
            next.status = status.clone();
            if let Some(stored) = self.write_checked(check, next).await? {
                return Ok(stored);
            }
            if revision.is_some() {
                return Err(concurrent(kind, name));
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
        let current = self.get(kind, namespace, name)?;
        let rv = current.metadata.resource_version;
        if let Some(expected) = revision {
            if expected != rv {
                return Err(stale(kind, name, expected, rv));
            }
        }
        let k = key(kind, namespace, name);
        let mut ops = vec![Op::Delete { key: k.clone() }];
        if kind == Kind::Blob {
            ops.push(Op::DeleteBlob {
                digest: name.to_string(),
            });
        }
        let outcome = self
            .store
            .txn(Txn {
                checks: vec![Check::ModRevision {
                    key: k,
                    revision: rv,
                }],
                ops,
            })
            .await?;
        if !outcome.succeeded {
            return Err(concurrent(kind, name));
        }
        Ok(current)
    }

    /// Applies objects as one transaction: all are written or none.
    pub async fn apply(&self, objects: &[RawObject]) -> Result<ApplyResult> {
        self.catch_up().await?;
        for (i, obj) in objects.iter().enumerate() {
            for (j, other) in objects[..i].iter().enumerate() {
                if other.kind == obj.kind
                    && other.metadata.name == obj.metadata.name
                    && other.metadata.namespace == obj.metadata.namespace
                {
                    return Err(RegistryError::Invalid(FieldError::new(
                        format!("items[{i}].metadata.name"),
                        format!(
                            "duplicate {} {:?} (also items[{j}])",
                            obj.kind, obj.metadata.name
                        ),
                    )));
                }
            }
        }
        loop {
            let mut checks = Vec::new();
            let mut ops = Vec::new();
            let mut items = Vec::new();
            for (i, obj) in objects.iter().enumerate() {
                let (next, check, current) = self
                    .prepare_spec(obj, Precondition::None)
                    .map_err(|e| at_item(i, e))?;
                let action = match &current {
                    None => "created",
                    Some(c) if c.spec == next.spec && c.metadata.labels == next.metadata.labels => {
                        "unchanged"
                    }
                    Some(_) => "configured",
                };
                if action != "unchanged" {
                    let k = key(
                        next.kind,
                        next.metadata.namespace.as_deref(),
                        &next.metadata.name,
                    );
                    ops.push(Op::Put {
                        key: k,
                        value: encode(&next)?,
                    });
                }
                checks.push(check);
                let object = match current {
                    Some(c) if action == "unchanged" => c,
                    _ => next,
                };
                items.push(AppliedObject {
                    action: action.to_string(),
                    object,
                });
            }
            if ops.is_empty() {
                return Ok(ApplyResult {
                    items,
                    resource_version: self.store.revision(),
                });
            }
            let outcome = self.store.txn(Txn { checks, ops }).await?;
            if outcome.succeeded {
                for item in &mut items {
                    if item.action != "unchanged" {
                        item.object.metadata.resource_version = outcome.revision;
                    }
                }
                return Ok(ApplyResult {
                    items,
                    resource_version: outcome.revision,
                });
            }
        }
    }

    /// Writes several objects read earlier in one transaction, each compare-and-swap on
    /// the revision it was read at: the scheduler binds a batch of pods this way, and a
    /// deposed leader's late batch cannot overwrite newer state. Returns false if any
    /// object changed since it was read (nothing is written then).
    pub async fn write_batch(&self, writes: Vec<BatchWrite>) -> Result<Option<Revision>> {
        let mut checks = Vec::new();
        let mut ops = Vec::new();
        for write in writes {
            if let BatchWrite::Require(obj) = &write {
                checks.push(Check::ModRevision {
                    key: key(
                        obj.kind,
                        obj.metadata.namespace.as_deref(),
                        &obj.metadata.name,
                    ),
                    revision: obj.metadata.resource_version,
                });
                continue;
            }
            let (obj, check_revision, delete) = match write {
                BatchWrite::Spec(mut obj) => {
                    Self::normalise(&mut obj)?;
                    self.admit(&obj)?;
                    let rv = obj.metadata.resource_version;
                    (obj, Some(rv), false)
                }
                BatchWrite::Status(obj) => {
                    validate::validate_status(obj.kind, &obj.status)
                        .map_err(RegistryError::Invalid)?;
                    let rv = obj.metadata.resource_version;
                    (obj, Some(rv), false)
                }
                BatchWrite::Delete(obj) => {
                    let rv = obj.metadata.resource_version;
                    (obj, Some(rv), true)
                }
                BatchWrite::Create(mut obj) => {
                    Self::normalise(&mut obj)?;
                    self.admit(&obj)?;
                    (Self::merge(&obj, None), None, false)
                }
                BatchWrite::Require(_) => continue,
            };
            let k = key(
                obj.kind,
                obj.metadata.namespace.as_deref(),
                &obj.metadata.name,
            );
            checks.push(match check_revision {
                Some(revision) => Check::ModRevision {
                    key: k.clone(),
                    revision,
                },
                None => Check::Absent { key: k.clone() },
            });
            if delete {
                ops.push(Op::Delete { key: k });
            } else {
                ops.push(Op::Put {
                    key: k,
                    value: encode(&obj)?,
                });
            }
        }
        if ops.is_empty() {
            return Ok(Some(self.store.revision()));
        }
        let outcome = self.store.txn(Txn { checks, ops }).await?;
        Ok(outcome.succeeded.then_some(outcome.revision))
    }

    /// Changes to a kind after `since`, as a channel of decoded objects.
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        since: Revision,
    ) -> Result<tokio::sync::mpsc::Receiver<Change>> {
        let mut raw = self.store.watch(&prefix(kind, namespace), since)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(event) = raw.recv().await {
                let change = match decode(&event.kv) {
                    Ok(mut object) => {
                        let kind = match event.kind {
                            EventKind::Delete => {
                                object.metadata.resource_version = event.revision;
                                WatchEventType::Deleted
                            }
                            EventKind::Put if event.kv.create_revision == event.kv.mod_revision => {
                                WatchEventType::Added
                            }
                            EventKind::Put => WatchEventType::Modified,
                        };
                        Change {
                            kind,
                            object,
                            revision: event.revision,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = %event.kv.key, "watch skips undecodable value: {e}");
                        continue;
                    }
                };
                if tx.send(change).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }
}

fn stale(kind: Kind, name: &str, given: Revision, stored: Revision) -> RegistryError {
    RegistryError::Conflict(format!(
        "{kind} {name:?} has changed: you sent resource_version {given}, the stored one is {stored}; read it again and retry"
    ))
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

/// A read that timed out changed nothing: retryable, unlike a write's timeout.
pub fn read_error(e: StoreError) -> RegistryError {
    match e {
        StoreError::Timeout(m) => RegistryError::Unavailable(m),
        other => other.into(),
    }
}

fn concurrent(kind: Kind, name: &str) -> RegistryError {
    RegistryError::Conflict(format!(
        "{kind} {name:?} was modified concurrently; read it again and retry"
    ))
}

/// Prefixes a field path with the item's index in an apply request.
fn at_item(index: usize, error: RegistryError) -> RegistryError {
    match error {
        RegistryError::Invalid(e) => RegistryError::Invalid(FieldError::new(
            format!("items[{index}].{}", e.path),
            e.message,
        )),
        other => other,
    }
}
