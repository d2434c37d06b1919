//! Watches of one kind as decoded objects: what the API server streams and the
//! loops wake on.

use super::{decode, prefix, Registry, Result};
use crate::store::{EventKind, Revision};
use reef_api::{Kind, RawObject, WatchEventType};

/// A change to one object, as watchers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: WatchEventType,
    pub object: RawObject,
    pub revision: Revision,
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
