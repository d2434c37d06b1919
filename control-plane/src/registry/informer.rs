//! Decoded objects of a kind kept in memory and brought up to date from the
//! store's watch, as kube-rs' reflector keeps them: a loop's pass reads them
//! instead of scanning RocksDB and decoding the whole kind each time. With
//! ten thousand Services under a write load, that scan and decode was most of
//! the leader's CPU (the endpoints loop runs a pass per change).
//!
//! An informer is only brought up to date when read, so a member whose loops
//! do not run (a follower) pays nothing but the memory of its last read: its
//! watch is cut off once it falls behind, and the next read relists.

use super::{decode, prefix, Result};
use crate::store::{EventKind, Store, Watch, WatchEvent};
use reef_api::{Kind, Object};
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc::error::TryRecvError;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One kind's objects, typed, by store key.
struct Informer<S, T> {
    kind: Kind,
    state: Mutex<State<S, T>>,
}

struct State<S, T> {
    objects: BTreeMap<String, Arc<Object<S, T>>>,
    /// The watch that keeps `objects` current; `None` before the first read
    /// and once the store has cut it off.
    events: Option<Watch>,
}

/// Decodes a stored value as `Object<S, T>`; one that does not match the
/// kind's schema is logged and left out, so it cannot stop a loop.
fn typed<S, T>(kind: Kind, key: &str, raw: Result<reef_api::RawObject>) -> Option<Object<S, T>>
where
    S: DeserializeOwned,
    T: DeserializeOwned + Default,
{
    match raw.and_then(|raw| Ok(raw.into_typed()?)) {
        Ok(object) => Some(object),
        Err(e) => {
            tracing::warn!(kind = %kind, key, "skipping undecodable object: {e}");
            None
        }
    }
}

impl<S, T> Informer<S, T>
where
    S: DeserializeOwned,
    T: DeserializeOwned + Default,
{
    fn new(kind: Kind) -> Self {
        Informer {
            kind,
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                events: None,
            }),
        }
    }

    /// The objects whose key starts with `within`, as this member has
    /// applied them, at least up to the call.
    fn list(&self, store: &Store, within: &str) -> Result<Vec<Arc<Object<S, T>>>> {
        let mut state = lock(&self.state);
        self.catch_up(store, &mut state)?;
        Ok(state
            .objects
            .range::<str, _>((Bound::Included(within), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(within))
            .map(|(_, object)| object.clone())
            .collect())
    }

    /// The object at `key`, as this member has applied it, at least up to the call.
    fn get(&self, store: &Store, key: &str) -> Result<Option<Arc<Object<S, T>>>> {
        let mut state = lock(&self.state);
        self.catch_up(store, &mut state)?;
        Ok(state.objects.get(key).cloned())
    }

    /// Applies every change published before the call.
    fn catch_up(&self, store: &Store, state: &mut State<S, T>) -> Result<()> {
        let State { objects, events } = state;
        // After this, every write applied before the call is in the channel.
        store.published_revision();
        loop {
            let Some(receiver) = events.as_mut() else {
                *events = Some(self.relist(store, objects)?);
                continue;
            };
            match receiver.try_recv() {
                Ok(event) => self.apply(objects, &event),
                Err(TryRecvError::Empty) => return Ok(()),
                // Fell behind (or a snapshot replaced the state): start over.
                Err(TryRecvError::Disconnected) => *events = None,
            }
        }
    }

    /// Reads the whole kind and watches it from the revision read.
    fn relist(
        &self,
        store: &Store,
        objects: &mut BTreeMap<String, Arc<Object<S, T>>>,
    ) -> Result<Watch> {
        let prefix = prefix(self.kind, None);
        let (kvs, revision) = store.range(&prefix)?;
        objects.clear();
        for kv in &kvs {
            if let Some(object) = typed(self.kind, &kv.key, decode(kv)) {
                objects.insert(kv.key.clone(), Arc::new(object));
            }
        }
        Ok(store.watch(&prefix, revision)?)
    }

    fn apply(&self, objects: &mut BTreeMap<String, Arc<Object<S, T>>>, event: &WatchEvent) {
        let key = &event.kv.key;
        match event.kind {
            EventKind::Delete => {
                objects.remove(key);
            }
            EventKind::Put => match typed(self.kind, key, decode(&event.kv)) {
                Some(object) => {
                    objects.insert(key.clone(), Arc::new(object));
                }
                None => {
                    objects.remove(key);
                }
            },
        }
    }
}

/// The informers of one registry, made on first use, one per kind and type.
#[derive(Default)]
pub(crate) struct Informers {
    by_kind: Mutex<HashMap<(Kind, TypeId), Arc<dyn Any + Send + Sync>>>,
}

impl Informers {
    fn informer<S, T>(&self, kind: Kind) -> Result<Arc<Informer<S, T>>>
    where
        S: DeserializeOwned + Send + Sync + 'static,
        T: DeserializeOwned + Default + Send + Sync + 'static,
    {
        let any = lock(&self.by_kind)
            .entry((kind, TypeId::of::<Object<S, T>>()))
            .or_insert_with(|| Arc::new(Informer::<S, T>::new(kind)))
            .clone();
        any.downcast::<Informer<S, T>>().map_err(|_| {
            // Cannot happen: the key holds the type.
            super::RegistryError::Internal(format!("informer of {kind} has another type"))
        })
    }

    /// The objects of `kind` in `namespace` (every namespace: `None`).
    pub(crate) fn list<S, T>(
        &self,
        store: &Store,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<Object<S, T>>>>
    where
        S: DeserializeOwned + Send + Sync + 'static,
        T: DeserializeOwned + Default + Send + Sync + 'static,
    {
        self.informer(kind)?.list(store, &prefix(kind, namespace))
    }

    /// One object, or `None` if it does not exist.
    pub(crate) fn get<S, T>(
        &self,
        store: &Store,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Object<S, T>>>>
    where
        S: DeserializeOwned + Send + Sync + 'static,
        T: DeserializeOwned + Default + Send + Sync + 'static,
    {
        self.informer(kind)?
            .get(store, &super::key(kind, namespace, name))
    }
}
