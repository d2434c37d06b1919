//! Fan-out of applied changes to watchers: one bounded history shared by all
//! of them, each watcher a cursor into it.
//!
//! Publishing appends to the history and wakes the watchers whose prefix a
//! new event matches, once per applied batch: the state machine's cost does
//! not grow with how many watchers read each event, and no event is copied
//! per watcher. A watcher that does not read holds nothing; once the history
//! has moved past its cursor it is closed and the client relists. The state
//! machine publishes under the same lock that `watch` registers under, so a
//! new watcher sees every event after `since` exactly once.

use std::collections::{HashMap, VecDeque};
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

pub(crate) type SharedHub = Arc<Mutex<WatchHub>>;

pub(crate) struct WatchHub {
    history: VecDeque<Arc<WatchEvent>>,
    /// Sum of [`event_bytes`] over `history`.
    history_bytes: usize,
    /// Every event with a revision above `floor` is still in `history`.
    floor: Revision,
    /// Raised when the state is replaced wholesale: older streams are closed.
    epoch: u64,
    /// Wakers by watched prefix: a publish checks each distinct prefix once
    /// per event however many watch it.
    watchers: HashMap<String, Vec<(u64, Arc<Notify>)>>,
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
        if events.is_empty() {
            return;
        }
        for (prefix, wakers) in &self.watchers {
            if events.iter().any(|e| e.kv.key.starts_with(prefix.as_str())) {
                for (_, waker) in wakers {
                    waker.notify_one();
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
        for (_, waker) in self.watchers.values().flatten() {
            waker.notify_one();
        }
    }

    fn forget(&mut self, prefix: &str, id: u64) {
        if let Some(wakers) = self.watchers.get_mut(prefix) {
            wakers.retain(|(other, _)| *other != id);
            if wakers.is_empty() {
                self.watchers.remove(prefix);
            }
        }
    }
}

/// Events with revision > `since` under `prefix`, then live ones.
/// `Compacted` when `since` is older than the history.
pub(crate) fn watch(hub: &SharedHub, prefix: &str, since: Revision) -> Result<Watch, StoreError> {
    let mut guard = lock(hub);
    if since < guard.floor {
        return Err(StoreError::Compacted {
            oldest: guard.floor,
        });
    }
    let id = guard.next_id;
    guard.next_id += 1;
    let waker = Arc::new(Notify::new());
    guard
        .watchers
        .entry(prefix.to_owned())
        .or_default()
        .push((id, waker.clone()));
    let epoch = guard.epoch;
    drop(guard);
    Ok(Watch {
        hub: hub.clone(),
        id,
        prefix: prefix.to_owned(),
        cursor: since,
        epoch,
        waker,
        ready: VecDeque::new(),
        closed: false,
    })
}

/// One watcher: a cursor into the shared history. Closed (`None`,
/// `Disconnected`) once the history has moved past it or the state was
/// replaced; the caller then relists.
pub struct Watch {
    hub: SharedHub,
    id: u64,
    prefix: String,
    /// Every event at or below this revision was taken or skipped.
    cursor: Revision,
    epoch: u64,
    waker: Arc<Notify>,
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
                Err(TryRecvError::Empty) => self.waker.notified().await,
            }
        }
    }

    /// Moves the matching events after the cursor into `ready`, whole
    /// revisions at a time. Scans on past events of other prefixes until it
    /// has some or reaches the end: stopping early with none would leave the
    /// watcher asleep with changes of its own still unread.
    fn take(&mut self) {
        let hub = lock(&self.hub);
        if hub.epoch != self.epoch || self.cursor < hub.floor {
            self.closed = true;
            return;
        }
        let start = hub.history.partition_point(|e| e.revision <= self.cursor);
        for event in hub.history.range(start..) {
            if self.ready.len() >= TAKE_AT_ONCE && event.revision != self.cursor {
                break;
            }
            self.cursor = event.revision;
            if event.kv.key.starts_with(self.prefix.as_str()) {
                self.ready.push_back(event.clone());
            }
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("cursor", &self.cursor)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.hub).forget(&self.prefix, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::{EventKind, KeyValue, Memo};

    fn put(rev: Revision, key: &str) -> WatchEvent {
        WatchEvent {
            revision: rev,
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: rev,
                mod_revision: rev,
            },
            memo: Memo::default(),
        }
    }

    fn hub() -> SharedHub {
        Arc::new(Mutex::new(WatchHub::new(0)))
    }

    #[test]
    fn history_is_bounded_and_floor_moves() {
        let hub = hub();
        for rev in 1..=(HISTORY_LIMIT as u64 + 5) {
            lock(&hub).publish(vec![put(rev, "a")]);
        }
        assert_eq!(lock(&hub).history.len(), HISTORY_LIMIT);
        assert!(matches!(
            watch(&hub, "", 4),
            Err(StoreError::Compacted { oldest: 5 })
        ));
        let mut rx = watch(&hub, "", 5).expect("since == floor is allowed");
        assert_eq!(rx.try_recv().map(|e| e.revision).ok(), Some(6));
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let hub = hub();
        let big = |rev| {
            let mut event = put(rev, "big");
            event.kv.value = vec![0; 1 << 20];
            event
        };
        for rev in 1..=100 {
            lock(&hub).publish(vec![big(rev)]);
        }
        assert!(lock(&hub).history_bytes <= HISTORY_BYTES);
        assert!(lock(&hub).history.len() < 100);
        assert!(watch(&hub, "", 1).is_err(), "old revisions are compacted");
    }

    #[test]
    fn events_at_or_below_since_are_skipped_and_prefixes_filter() {
        let hub = hub();
        // Listed at 3 before revision 3's events were published.
        let mut rx = watch(&hub, "a", 3).expect("watch");
        lock(&hub).publish(vec![put(3, "a"), put(3, "b")]);
        lock(&hub).publish(vec![put(4, "b"), put(4, "a1"), put(4, "a2")]);
        let keys: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.kv.key.clone())
            .collect();
        assert_eq!(keys, ["a1", "a2"]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn a_revision_is_never_split_between_takes() {
        let hub = hub();
        let mut rx = watch(&hub, "", 0).expect("watch");
        let many: Vec<WatchEvent> = (0..TAKE_AT_ONCE + 10)
            .map(|i| put(1, &format!("k{i}")))
            .collect();
        lock(&hub).publish(vec![put(1, "first")]);
        lock(&hub).publish(many);
        lock(&hub).publish(vec![put(2, "last")]);
        let got: Vec<Arc<WatchEvent>> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), TAKE_AT_ONCE + 12);
        assert_eq!(got.last().map(|e| e.revision), Some(2));
    }

    #[test]
    fn events_of_its_own_after_many_of_other_prefixes_are_found_without_a_new_publish() {
        let hub = hub();
        let mut rx = watch(&hub, "mine/", 0).expect("watch");
        for rev in 1..=(TAKE_AT_ONCE as u64 * 3) {
            lock(&hub).publish(vec![put(rev, "other/k")]);
        }
        lock(&hub).publish(vec![put(TAKE_AT_ONCE as u64 * 3 + 1, "mine/k")]);
        assert_eq!(
            rx.try_recv().map(|e| e.kv.key.clone()).ok().as_deref(),
            Some("mine/k")
        );
    }

    #[test]
    fn a_watcher_that_does_not_read_holds_nothing_and_is_closed_once_passed() {
        let hub = hub();
        let mut stalled = watch(&hub, "k", 0).expect("watch");
        for rev in 1..=(HISTORY_LIMIT as u64 * 2) {
            lock(&hub).publish(vec![put(rev, "k")]);
        }
        assert!(stalled.ready.is_empty());
        assert_eq!(lock(&hub).history.len(), HISTORY_LIMIT);
        assert!(matches!(
            stalled.try_recv(),
            Err(TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn reset_closes_every_watcher_and_drop_unregisters() {
        let hub = hub();
        let mut rx = watch(&hub, "k", 0).expect("watch");
        let other = watch(&hub, "k", 0).expect("watch");
        drop(other);
        assert_eq!(lock(&hub).watchers.get("k").map(Vec::len), Some(1));
        lock(&hub).publish(vec![put(1, "k")]);
        lock(&hub).reset(5);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
        drop(rx);
        assert!(lock(&hub).watchers.is_empty());
    }

    #[tokio::test]
    async fn recv_wakes_on_a_matching_publish() {
        let hub = hub();
        let mut rx = watch(&hub, "k", 0).expect("watch");
        let publisher = hub.clone();
        let waiting = tokio::spawn(async move { rx.recv().await.map(|e| e.revision) });
        tokio::task::yield_now().await;
        lock(&publisher).publish(vec![put(1, "other")]);
        lock(&publisher).publish(vec![put(2, "k")]);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, Some(2));
    }
}
