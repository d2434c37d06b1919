//! Watches of one kind as decoded objects: what the API server streams and the
//! loops wake on.

use super::{decode, prefix, Registry, Result};
use crate::store::{EventKind, Revision, Selector, Watch, WatchEvent, WatchIndex};
use reef_api::{Kind, RawObject, WatchEventType};
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// A change to one object, as watchers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: WatchEventType,
    /// Shared by every watcher of this change.
    pub object: Arc<RawObject>,
    pub revision: Revision,
    decoded: Arc<Decoded>,
}

impl Change {
    /// The change as one JSON watch event (`reef_api::WatchEvent`), encoded
    /// once for every stream that sends it.
    pub fn json(&self) -> &[u8] {
        self.decoded.json.get_or_init(|| {
            let event = reef_api::WatchEvent {
                kind: self.kind,
                object: serde_json::to_value(&*self.object).unwrap_or_default(),
            };
            serde_json::to_vec(&event).unwrap_or_default()
        })
    }
}

/// What the registry keeps on a store event (its memo): decoded once,
/// whatever the number of watchers.
#[derive(Debug)]
struct Decoded {
    /// `None`: the stored value does not decode (logged once).
    object: Option<Arc<RawObject>>,
    json: OnceLock<Vec<u8>>,
}

fn decoded(event: &WatchEvent) -> Option<Arc<Decoded>> {
    event.memo.get_or_init(|| {
        let object = match decode(&event.kv) {
            Ok(mut object) => {
                if event.kind == EventKind::Delete {
                    object.metadata.resource_version = event.revision;
                }
                Some(Arc::new(object))
            }
            Err(e) => {
                tracing::warn!(key = %event.kv.key, "watch skips undecodable value: {e}");
                None
            }
        };
        Decoded {
            object,
            json: OnceLock::new(),
        }
    })
}

fn change(event: &WatchEvent) -> Option<Change> {
    let decoded = decoded(event)?;
    let object = decoded.object.clone()?;
    let kind = match event.kind {
        EventKind::Delete => WatchEventType::Deleted,
        EventKind::Put if event.kv.create_revision == event.kv.mod_revision => {
            WatchEventType::Added
        }
        EventKind::Put => WatchEventType::Modified,
    };
    Some(Change {
        kind,
        object,
        revision: event.revision,
        decoded,
    })
}

/// Changes to one kind, decoded. Ends when the store closes the watch
/// (behind its history, or the state replaced): the caller relists.
pub struct Changes {
    raw: Watch,
}

impl Changes {
    /// The next change, waiting for one.
    pub async fn recv(&mut self) -> Option<Change> {
        loop {
            let event = self.raw.recv().await?;
            if let Some(change) = change(&event) {
                return Some(change);
            }
        }
    }

    /// See [`Watch::caught_up_to`].
    pub fn caught_up_to(&self) -> Option<Revision> {
        self.raw.caught_up_to()
    }

    /// The next change if one is already there.
    pub fn try_recv(&mut self) -> Option<Change> {
        while let Ok(event) = self.raw.try_recv() {
            if let Some(change) = change(&event) {
                return Some(change);
            }
        }
        None
    }
}

/// Objects by the value of one label.
struct LabelIndex {
    name: String,
    key: String,
}

impl WatchIndex for LabelIndex {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self, event: &WatchEvent) -> Option<String> {
        let object = decoded(event)?.object.clone()?;
        object.metadata.labels.get(&self.key).cloned()
    }
}

/// Pods by the node they are bound to.
struct NodeIndex;

impl WatchIndex for NodeIndex {
    fn name(&self) -> &str {
        "spec.node"
    }

    fn value(&self, event: &WatchEvent) -> Option<String> {
        let object = decoded(event)?.object.clone()?;
        object
            .spec
            .get("node")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

/// Objects whose label `key` is `value`.
pub fn label_selector(key: &str, value: &str) -> Selector {
    Selector {
        index: Arc::new(LabelIndex {
            name: format!("label:{key}"),
            key: key.to_owned(),
        }),
        value: value.to_owned(),
    }
}

/// Objects (pods) bound to `node`.
pub fn node_selector(node: &str) -> Selector {
    Selector {
        index: Arc::new(NodeIndex),
        value: node.to_owned(),
    }
}

impl Registry {
    /// Changes to a kind after `since`; only those `selector` picks, if given.
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<Selector>,
        since: Revision,
    ) -> Result<Changes> {
        let prefix = prefix(kind, namespace);
        let raw = match selector {
            None => self.store.watch(&prefix, since)?,
            Some(selector) => self.store.watch_selected(&prefix, selector, since)?,
        };
        Ok(Changes { raw })
    }
}
