//! Fan-out of applied changes to watchers, with a bounded in-memory history
//! so a watcher can start from a recent revision.
//!
//! The state machine publishes under the same lock that `watch` registers
//! under, so a new watcher sees every event after `since` exactly once.
//! A watcher whose channel is full is dropped rather than allowed to stall
//! the state machine; its receiver closes and the client relists.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::error::StoreError;
use super::types::{Revision, WatchEvent};

/// Events kept for `watch(since)`, and the bytes of keys and values they may
/// hold together (a new watcher's backlog is copied from them).
pub(crate) const HISTORY_LIMIT: usize = 10_000;
pub(crate) const HISTORY_BYTES: usize = 64 << 20;

fn event_bytes(event: &WatchEvent) -> usize {
    event.kv.key.len() + event.kv.value.len() + 64
}
/// Live events a watcher may fall behind by before it is dropped.
pub(crate) const WATCH_BUFFER: usize = 1024;

struct Watcher {
    prefix: String,
    /// Live events at or below this were already covered: a caller may list at
    /// revision R (visible in RocksDB) before R's events are published here.
    since: Revision,
    tx: mpsc::Sender<Arc<WatchEvent>>,
}

pub(crate) struct WatchHub {
    /// Shared with every watcher's queue: fan-out copies a pointer, not the value.
    history: VecDeque<Arc<WatchEvent>>,
    /// Sum of [`event_bytes`] over `history`.
    history_bytes: usize,
    /// Every event with a revision above `floor` is still in `history`.
    floor: Revision,
    watchers: Vec<Watcher>,
}

impl WatchHub {
    /// History starts empty at `applied`: older revisions are compacted.
    pub(crate) fn new(applied: Revision) -> Self {
        WatchHub {
            history: VecDeque::new(),
            history_bytes: 0,
            floor: applied,
            watchers: Vec::new(),
        }
    }

    pub(crate) fn watch(
        &mut self,
        prefix: &str,
        since: Revision,
    ) -> Result<mpsc::Receiver<Arc<WatchEvent>>, StoreError> {
        if since < self.floor {
            return Err(StoreError::Compacted { oldest: self.floor });
        }
        let backlog: Vec<&Arc<WatchEvent>> = self
            .history
            .iter()
            .filter(|e| e.revision > since && e.kv.key.starts_with(prefix))
            .collect();
        let (tx, rx) = mpsc::channel(backlog.len() + WATCH_BUFFER);
        for event in backlog {
            // Cannot fail: the channel was sized for the backlog and rx is alive.
            let _ = tx.try_send(event.clone());
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            since,
            tx,
        });
        Ok(rx)
    }

    pub(crate) fn publish(&mut self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        let events: Vec<Arc<WatchEvent>> = events.into_iter().map(Arc::new).collect();
        for event in &events {
            self.watchers.retain(|w| {
                if event.revision <= w.since || !event.kv.key.starts_with(&w.prefix) {
                    return !w.tx.is_closed();
                }
                // Full or closed: drop the watcher (closing its receiver).
                w.tx.try_send(event.clone()).is_ok()
            });
        }
        self.history_bytes += events.iter().map(|e| event_bytes(e)).sum::<usize>();
        self.history.extend(events);
        while self.history.len() > HISTORY_LIMIT || self.history_bytes > HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= event_bytes(&old);
            self.floor = self.floor.max(old.revision);
        }
    }

    /// The state was replaced wholesale (snapshot install): no event stream can
    /// describe that, so every watcher is closed and history restarts at `applied`.
    pub(crate) fn reset(&mut self, applied: Revision) {
        *self = WatchHub::new(applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::{EventKind, KeyValue};

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
        }
    }

    #[test]
    fn history_is_bounded_and_floor_moves() {
        let mut hub = WatchHub::new(0);
        for rev in 1..=(HISTORY_LIMIT as u64 + 5) {
            hub.publish(vec![put(rev, "a")]);
        }
        assert_eq!(hub.history.len(), HISTORY_LIMIT);
        assert!(matches!(
            hub.watch("", 4),
            Err(StoreError::Compacted { oldest: 5 })
        ));
        let mut rx = hub.watch("", 5).expect("since == floor is allowed");
        assert_eq!(rx.try_recv().map(|e| e.revision).ok(), Some(6));
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let mut hub = WatchHub::new(0);
        let big = |rev| {
            let mut event = put(rev, "big");
            event.kv.value = vec![0; 1 << 20];
            event
        };
        for rev in 1..=100 {
            hub.publish(vec![big(rev)]);
        }
        assert!(hub.history_bytes <= HISTORY_BYTES);
        assert!(hub.history.len() < 100);
        assert!(hub.watch("", 1).is_err(), "old revisions are compacted");
    }

    #[test]
    fn live_events_at_or_below_since_are_skipped() {
        let mut hub = WatchHub::new(0);
        // Listed at 3 before revision 3's events were published.
        let mut rx = hub.watch("", 3).expect("watch");
        hub.publish(vec![put(3, "a"), put(3, "b")]);
        hub.publish(vec![put(4, "a")]);
        assert_eq!(rx.try_recv().map(|e| e.revision).ok(), Some(4));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn slow_watcher_is_dropped() {
        let mut hub = WatchHub::new(0);
        let mut rx = hub.watch("k", 0).expect("watch");
        for rev in 1..=(WATCH_BUFFER as u64 + 1) {
            hub.publish(vec![put(rev, "k")]);
        }
        assert!(hub.watchers.is_empty());
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, WATCH_BUFFER);
        // Closed after the buffered events drain.
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
