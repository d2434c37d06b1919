//! Watches of one kind as decoded objects: what the API server streams and the
//! loops wake on.

use super::{decode, prefix, Registry, Result};
use crate::recent::Recent;
use crate::store::{EventKind, Revision, WatchEvent};
use reef_api::{Kind, RawObject, WatchEventType};
use std::sync::Arc;

/// A change to one object, as watchers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: WatchEventType,
    /// Shared by every watcher of this change.
    pub object: Arc<RawObject>,
    pub revision: Revision,
}

/// Recent changes' decoded objects, shared by all watchers: a thousand
/// watchers of a kind decode each change once, not a thousand times.
pub(crate) struct Decoded(Recent<(Revision, String), Arc<RawObject>>);

/// Decoded changes kept for watchers that are a little behind.
const DECODED_KEPT: usize = 4096;

impl Default for Decoded {
    fn default() -> Self {
        Decoded(Recent::new(DECODED_KEPT))
    }
}

impl Decoded {
    fn object(&self, event: &WatchEvent) -> Result<Arc<RawObject>> {
        self.0
            .get_or_make((event.revision, event.kv.key.clone()), || {
                let mut object = decode(&event.kv)?;
                if event.kind == EventKind::Delete {
                    object.metadata.resource_version = event.revision;
                }
                Ok(Arc::new(object))
            })
    }
}

impl Registry {
    /// Changes to a kind after `since`, as a channel of decoded objects.
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        since: Revision,
    ) -> Result<tokio::sync::mpsc::Receiver<Change>> {
        let mut raw = self.store.watch(&prefix(kind, namespace), since)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let decoded = self.decoded.clone();
        tokio::spawn(async move {
            while let Some(event) = raw.recv().await {
                let change = match decoded.object(&event) {
                    Ok(object) => {
                        let kind = match event.kind {
                            EventKind::Delete => WatchEventType::Deleted,
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
