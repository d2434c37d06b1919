//! Fan-out of applied changes to watchers: one bounded history shared by all
//! of them, each watcher a reader of it.
//!
//! Publishing appends to the history and wakes the watchers a new event
//! concerns, once per applied batch: the state machine's cost does not grow
//! with how many watchers read each event, and no event is copied per
//! watcher. A watcher may name a [`Selector`] (say, one label's value): its
//! wakes are found by one lookup per event and index, so a thousand watchers
//! of their own objects cost a write one lookup, not a thousand wakes.
//!
//! Each watcher's slot records the oldest event it has not read. A watcher
//! that does not read holds nothing; it is closed only once the history has
//! dropped an event of its own that it has not read (the client relists),
//! so a quiet watcher survives any amount of traffic it does not match. The
//! state machine publishes under the same lock that `watch` registers under,
//! so a new watcher sees every event after `since` exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::Notify;

use super::error::StoreError;
use super::types::{Revision, WatchEvent};

/// Events kept for `watch(since)` and for watchers that are behind, and the
/// bytes of keys and values they may hold together. The history is shared by
/// every watcher whatever its prefix, so a watcher of one namespace must keep
/// within it while all namespaces change: 50,000 is about three seconds of a
/// 10,000-pod burst (creates and binds).
pub(crate) const HISTORY_LIMIT: usize = 50_000;
pub(crate) const HISTORY_BYTES: usize = 64 << 20;

/// Matching events a watcher takes from the history at once (more when the
/// last revision taken has more): what one stream holds beyond the history.
const TAKE_AT_ONCE: usize = 256;

fn event_bytes(event: &WatchEvent) -> usize {
    event.kv.key.len() + event.kv.value.len() + 64
}

/// Maps an event to one value (a label's, a field's), so that watchers of
/// one value are found by lookup. Indexes with one name must map alike:
/// watchers of one prefix share the first one registered under a name.
pub trait WatchIndex: Send + Sync {
    fn name(&self) -> &str;
    /// `None`: the event has no value here and matches no selector of it.
    fn value(&self, event: &WatchEvent) -> Option<String>;
}

/// Narrows a watch to the events an index maps to `value`.
#[derive(Clone)]
pub struct Selector {
    pub index: Arc<dyn WatchIndex>,
    pub value: String,
}

impl Selector {
    fn matches(&self, event: &WatchEvent) -> bool {
        self.index.value(event).as_deref() == Some(self.value.as_str())
    }
}

/// What the hub and one watcher share.
struct Slot {
    id: u64,
    notify: Notify,
    /// The revision of the oldest event of this watcher it has not taken,
    /// 0 if none. Read and written under the hub's lock.
    unread_from: AtomicU64,
}

impl Slot {
    /// An event of this watcher at `revision` was published: the first since
    /// its last take wakes it.
    fn mark(&self, revision: Revision) {
        if self.unread_from.load(Ordering::Relaxed) == 0 {
            self.unread_from.store(revision, Ordering::Relaxed);
            self.notify.notify_one();
        }
    }
}

/// The watchers of one prefix: those of every key under it, and those with
/// a selector, by index name and then value.
#[derive(Default)]
struct PrefixWatchers {
    all: Vec<Arc<Slot>>,
    by_index: HashMap<String, IndexedWatchers>,
}

struct IndexedWatchers {
    index: Arc<dyn WatchIndex>,
    by_value: HashMap<String, Vec<Arc<Slot>>>,
}

impl PrefixWatchers {
    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.by_index.is_empty()
    }
}

pub(crate) type SharedHub = Arc<Mutex<WatchHub>>;

pub(crate) struct WatchHub {
    history: VecDeque<Arc<WatchEvent>>,
    /// Sum of [`event_bytes`] over `history`.
    history_bytes: usize,
    /// Every event with a revision above `floor` is still in `history`.
    floor: Revision,
    /// Raised when the state is replaced wholesale: older streams are closed.
    epoch: u64,
    /// By watched prefix: a publish checks each distinct prefix once per
    /// event however many watch it.
    watchers: HashMap<String, PrefixWatchers>,
    next_id: u64,
}

/// A panic elsewhere must not wedge the store: the history stays valid.
pub(crate) fn lock(hub: &Mutex<WatchHub>) -> MutexGuard<'_, WatchHub> {
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchHub {
    /// History starts empty at `applied`: older revisions are compacted.
    pub(crate) fn new(applied: Revision) -> Self {
        WatchHub {
            history: VecDeque::new(),
            history_bytes: 0,
            floor: applied,
            epoch: 0,
            watchers: HashMap::new(),
            next_id: 0,
        }
    }

    /// Appends applied events and wakes the watchers they concern.
    pub(crate) fn publish(&mut self, events: Vec<WatchEvent>) {
        for (prefix, group) in &self.watchers {
            let mut first = None;
            for event in events
                .iter()
                .filter(|e| e.kv.key.starts_with(prefix.as_str()))
            {
                first = first.or(Some(event.revision));
                for indexed in group.by_index.values() {
                    let Some(value) = indexed.index.value(event) else {
                        continue;
                    };
                    for slot in indexed.by_value.get(&value).into_iter().flatten() {
                        slot.mark(event.revision);
                    }
                }
            }
            if let Some(revision) = first {
                for slot in &group.all {
                    slot.mark(revision);
                }
            }
        }
        for event in events {
            self.history_bytes += event_bytes(&event);
            self.history.push_back(Arc::new(event));
        }
        while self.history.len() > HISTORY_LIMIT || self.history_bytes > HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= event_bytes(&old);
            self.floor = self.floor.max(old.revision);
        }
    }

    /// The state was replaced wholesale (snapshot install): no event stream
    /// can describe that, so every watcher is closed and history restarts at
    /// `applied`.
    pub(crate) fn reset(&mut self, applied: Revision) {
        self.history.clear();
        self.history_bytes = 0;
        self.floor = applied;
        self.epoch += 1;
        for group in self.watchers.values() {
            let indexed = group.by_index.values().flat_map(|i| i.by_value.values());
            for slot in group.all.iter().chain(indexed.flatten()) {
                slot.notify.notify_one();
            }
        }
    }

    fn register(&mut self, prefix: &str, selector: Option<&Selector>, slot: Arc<Slot>) {
        let group = self.watchers.entry(prefix.to_owned()).or_default();
        match selector {
            None => group.all.push(slot),
            Some(selector) => group
                .by_index
                .entry(selector.index.name().to_owned())
                .or_insert_with(|| IndexedWatchers {
                    index: selector.index.clone(),
                    by_value: HashMap::new(),
                })
                .by_value
                .entry(selector.value.clone())
                .or_default()
                .push(slot),
        }
    }

    fn forget(&mut self, prefix: &str, selector: Option<&Selector>, id: u64) {
        let Some(group) = self.watchers.get_mut(prefix) else {
            return;
        };
        match selector {
            None => group.all.retain(|slot| slot.id != id),
            Some(selector) => {
                let name = selector.index.name();
                if let Some(indexed) = group.by_index.get_mut(name) {
                    if let Some(slots) = indexed.by_value.get_mut(&selector.value) {
                        slots.retain(|slot| slot.id != id);
                        if slots.is_empty() {
                            indexed.by_value.remove(&selector.value);
                        }
                    }
                    if indexed.by_value.is_empty() {
                        group.by_index.remove(name);
                    }
                }
            }
        }
        if group.is_empty() {
            self.watchers.remove(prefix);
        }
    }
}

/// Events with revision > `since` under `prefix` (and of `selector`, if
/// given), then live ones. `Compacted` when `since` is older than the history.
pub(crate) fn watch(
    hub: &SharedHub,
    prefix: &str,
    selector: Option<Selector>,
    since: Revision,
) -> Result<Watch, StoreError> {
    let mut guard = lock(hub);
    if since < guard.floor {
        return Err(StoreError::Compacted {
            oldest: guard.floor,
        });
    }
    let id = guard.next_id;
    guard.next_id += 1;
    // Events after `since` already in the history are unread (whether they
    // match is for the first take to find).
    let unread_from = match guard.history.back() {
        Some(last) if last.revision > since => since + 1,
        _ => 0,
    };
    let slot = Arc::new(Slot {
        id,
        notify: Notify::new(),
        unread_from: AtomicU64::new(unread_from),
    });
    guard.register(prefix, selector.as_ref(), slot.clone());
    let epoch = guard.epoch;
    drop(guard);
    Ok(Watch {
        hub: hub.clone(),
        prefix: prefix.to_owned(),
        selector,
        since,
        epoch,
        slot,
        ready: VecDeque::new(),
        closed: false,
    })
}

/// One watcher: a reader of the shared history. Closed (`None`,
/// `Disconnected`) once the history has dropped an event of its own it had
/// not read, or the state was replaced; the caller then relists.
pub struct Watch {
    hub: SharedHub,
    prefix: String,
    selector: Option<Selector>,
    /// Events at or below this revision are not this watcher's.
    since: Revision,
    epoch: u64,
    slot: Arc<Slot>,
    /// Taken from the history, not yet handed out.
    ready: VecDeque<Arc<WatchEvent>>,
    closed: bool,
}

impl Watch {
    /// The next event if one is already there.
    pub fn try_recv(&mut self) -> Result<Arc<WatchEvent>, TryRecvError> {
        if self.ready.is_empty() && !self.closed {
            self.take();
        }
        match self.ready.pop_front() {
            Some(event) => Ok(event),
            None if self.closed => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next event, waiting for one; `None` once closed.
    pub async fn recv(&mut self) -> Option<Arc<WatchEvent>> {
        loop {
            match self.try_recv() {
                Ok(event) => return Some(event),
                Err(TryRecvError::Disconnected) => return None,
                // A publish since the last look left a permit: no wake-up is lost.
                Err(TryRecvError::Empty) => self.slot.notify.notified().await,
            }
        }
    }

    fn matches(&self, event: &WatchEvent) -> bool {
        event.revision > self.since
            && event.kv.key.starts_with(self.prefix.as_str())
            && self.selector.as_ref().is_none_or(|s| s.matches(event))
    }

    /// Moves this watcher's events from its oldest unread one into `ready`,
    /// whole revisions at a time.
    fn take(&mut self) {
        let hub = lock(&self.hub);
        if hub.epoch != self.epoch {
            self.closed = true;
            return;
        }
        let from = self.slot.unread_from.load(Ordering::Relaxed);
        if from == 0 {
            return;
        }
        if from <= hub.floor {
            self.closed = true;
            return;
        }
        let start = hub.history.partition_point(|e| e.revision < from);
        let mut last = None;
        for event in hub.history.range(start..) {
            if self.ready.len() >= TAKE_AT_ONCE && last != Some(event.revision) {
                // The rest is unread from here (it may hold none of this
                // watcher's events: the next take finds out).
                self.slot
                    .unread_from
                    .store(event.revision, Ordering::Relaxed);
                return;
            }
            last = Some(event.revision);
            if self.matches(event) {
                self.ready.push_back(event.clone());
            }
        }
        self.slot.unread_from.store(0, Ordering::Relaxed);
    }
}

impl Watch {
    /// The revision up to which this watcher has taken every event of its
    /// own, if nothing of it is waiting: a resume point for a stream whose
    /// changes are rare (a BOOKMARK), though it was woken by none since.
    pub fn caught_up_to(&self) -> Option<Revision> {
        if self.closed || !self.ready.is_empty() {
            return None;
        }
        let hub = lock(&self.hub);
        if hub.epoch != self.epoch || self.slot.unread_from.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let latest = hub.history.back().map_or(hub.floor, |e| e.revision);
        Some(latest.max(self.since))
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("selector", &self.selector.as_ref().map(|s| &s.value))
            .field("since", &self.since)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.hub).forget(&self.prefix, self.selector.as_ref(), self.slot.id);
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
