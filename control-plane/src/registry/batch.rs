//! Writes of many objects in one transaction: a manifest applied whole, and
//! the loops' batches (binds, pod creations), each compare-and-swap on what
//! was read.

use super::admission::Pending;
use super::error::{at_item, Result};
use super::{encode, key, BatchWrite, Precondition, Registry, RegistryError};
use crate::store::{Check, Op, Revision, Txn};
use reef_api::validate::{self, FieldError};
use reef_api::{limits, AppliedObject, ApplyResult, RawObject};

impl Registry {
    /// Applies objects as one transaction: all are written or none.
    pub async fn apply(&self, objects: &[RawObject]) -> Result<ApplyResult> {
        if objects.len() > limits::MAX_APPLY_OBJECTS {
            return Err(RegistryError::TooLarge(format!(
                "{} objects in one apply; at most {} are allowed (split the file)",
                objects.len(),
                limits::MAX_APPLY_OBJECTS
            )));
        }
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
            let mut prepared = Vec::new();
            for (i, obj) in objects.iter().enumerate() {
                let (next, check, current) = self
                    .prepare_spec(obj, Precondition::None)
                    .map_err(|e| at_item(i, e))?;
                checks.push(check);
                prepared.push((next, current));
            }
            let unchanged = |next: &RawObject, current: &Option<RawObject>| {
                current.as_ref().is_some_and(|c| {
                    c.spec == next.spec && c.metadata.labels == next.metadata.labels
                })
            };
            // Unchanged objects are not reviewed again: a quota lowered since they
            // were admitted must not fail a file that does not grow them.
            let pending: Vec<(usize, Pending<'_>)> = prepared
                .iter()
                .enumerate()
                .filter(|(_, (next, current))| !unchanged(next, current))
                .map(|(i, pair)| (i, Pending::write(pair)))
                .collect();
            let effects = self.review(&pending, true)?;
            let mut ops = Vec::new();
            let mut items = Vec::new();
            for (next, current) in prepared {
                let action = match &current {
                    None => "created",
                    Some(_) if unchanged(&next, &current) => "unchanged",
                    Some(_) => "configured",
                };
                if action != "unchanged" {
                    ops.push(Op::Put {
                        key: key(
                            next.kind,
                            next.metadata.namespace.as_deref(),
                            &next.metadata.name,
                        ),
                        value: encode(&next)?,
                    });
                }
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
            checks.extend(effects.checks);
            ops.extend(effects.ops);
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
        // Spec writes to review: the next form, and what it replaces as far as
        // admission cares.
        let mut reviewed: Vec<(RawObject, Option<RawObject>)> = Vec::new();
        for write in writes {
            let (obj, check_revision, delete) = match write {
                BatchWrite::Require(obj) => {
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
                BatchWrite::Spec(mut obj) => {
                    Self::normalise(&mut obj)?;
                    let rv = obj.metadata.resource_version;
                    // A stored object written back by a loop: its component was
                    // admitted when it was made (a pod's spec changes only by binding).
                    let mut before = obj.clone();
                    if let Some(spec) = before.spec.as_object_mut() {
                        spec.remove("node");
                    }
                    reviewed.push((obj.clone(), Some(before)));
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
                    let obj = Self::merge(&obj, None);
                    reviewed.push((obj.clone(), None));
                    (obj, None, false)
                }
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
        let pending: Vec<(usize, Pending<'_>)> = reviewed
            .iter()
            .enumerate()
            .map(|(i, pair)| (i, Pending::write(pair)))
            .collect();
        let effects = self.review(&pending, false)?;
        checks.extend(effects.checks);
        ops.extend(effects.ops);
        let outcome = self.store.txn(Txn { checks, ops }).await?;
        Ok(outcome.succeeded.then_some(outcome.revision))
    }
}
