//! Fan-out of applied changes to watchers, with a bounded in-memory history
//! so a watcher can start from a recent revision.
//!
//! The state machine publishes under the same lock that `watch` registers
//! under, so a new watcher sees every event after `since` exactly once.
//! A watcher whose channel is full is dropped rather than allowed to stall
//! the state machine; its receiver closes and the client relists.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::error::StoreError;
use super::types::{Revision, WatchEvent};

/// Events kept for `watch(since)`.
pub(crate) const HISTORY_LIMIT: usize = 10_000;
/// Live events a watcher may fall behind by before it is dropped.
pub(crate) const WATCH_BUFFER: usize = 1024;

struct Watcher {
    prefix: String,
    /// Live events at or below this were already covered: a caller may list at
    /// revision R (visible in RocksDB) before R's events are published here.
    since: Revision,
    tx: mpsc::Sender<WatchEvent>,
}

pub(crate) struct WatchHub {
    history: VecDeque<WatchEvent>,
    /// Every event with a revision above `floor` is still in `history`.
    floor: Revision,
    watchers: Vec<Watcher>,
}

impl WatchHub {
    /// History starts empty at `applied`: older revisions are compacted.
    pub(crate) fn new(applied: Revision) -> Self {
        WatchHub {
            history: VecDeque::new(),
            floor: applied,
            watchers: Vec::new(),
        }
    }

    pub(crate) fn watch(
        &mut self,
        prefix: &str,
        since: Revision,
    ) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        if since < self.floor {
            return Err(StoreError::Compacted { oldest: self.floor });
        }
        let backlog: Vec<&WatchEvent> = self
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
        for event in &events {
            self.watchers.retain(|w| {
                if event.revision <= w.since || !event.kv.key.starts_with(&w.prefix) {
                    return !w.tx.is_closed();
                }
                // Full or closed: drop the watcher (closing its receiver).
                w.tx.try_send(event.clone()).is_ok()
            });
        }
        self.history.extend(events);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.floor = self.floor.max(old.revision);
            }
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
