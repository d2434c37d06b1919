//! The pods this node is running right now, shared by the agent (which adds and
//! removes them) and the proxy (which dispatches requests to them).

use crate::runtime::HttpPod;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// `namespace/name`: pod names are unique per namespace.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[derive(Clone, Default)]
pub struct PodTable {
    inner: Arc<RwLock<HashMap<String, HttpPod>>>,
}

impl PodTable {
    pub fn insert(&self, key: String, pod: HttpPod) {
        self.write().insert(key, pod);
    }

    /// Removes a pod from routing. Requests already holding it finish normally.
    pub fn remove(&self, key: &str) -> Option<HttpPod> {
        self.write().remove(key)
    }

    pub fn get(&self, key: &str) -> Option<HttpPod> {
        self.read().get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock cannot leave the map half-updated (single
    // insert/remove), so a poisoned lock is safe to keep using.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, HttpPod>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, HttpPod>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}
