//! The watch hub: history bounds, selectors, wakes and closing.

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
        watch(&hub, "", None, 4),
        Err(StoreError::Compacted { oldest: 5 })
    ));
    let mut rx = watch(&hub, "", None, 5).expect("since == floor is allowed");
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
    assert!(
        watch(&hub, "", None, 1).is_err(),
        "old revisions are compacted"
    );
}

#[test]
fn events_at_or_below_since_are_skipped_and_prefixes_filter() {
    let hub = hub();
    // Listed at 3 before revision 3's events were published.
    let mut rx = watch(&hub, "a", None, 3).expect("watch");
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
    let mut rx = watch(&hub, "", None, 0).expect("watch");
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
    let mut rx = watch(&hub, "mine/", None, 0).expect("watch");
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
    let mut stalled = watch(&hub, "k", None, 0).expect("watch");
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
    let mut rx = watch(&hub, "k", None, 0).expect("watch");
    let other = watch(&hub, "k", None, 0).expect("watch");
    drop(other);
    assert_eq!(lock(&hub).watchers.get("k").map(|g| g.all.len()), Some(1));
    lock(&hub).publish(vec![put(1, "k")]);
    lock(&hub).reset(5);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    drop(rx);
    assert!(lock(&hub).watchers.is_empty());
}

#[tokio::test]
async fn recv_wakes_on_a_matching_publish() {
    let hub = hub();
    let mut rx = watch(&hub, "k", None, 0).expect("watch");
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
/// Maps an event to its value's text: the tests' stand-in for a label.
struct ByValue;

impl WatchIndex for ByValue {
    fn name(&self) -> &str {
        "value"
    }
    fn value(&self, event: &WatchEvent) -> Option<String> {
        String::from_utf8(event.kv.value.clone()).ok()
    }
}

fn labelled(rev: Revision, key: &str, label: &str) -> WatchEvent {
    let mut event = put(rev, key);
    event.kv.value = label.as_bytes().to_vec();
    event
}

fn of(value: &str) -> Option<Selector> {
    Some(Selector {
        index: Arc::new(ByValue),
        value: value.into(),
    })
}

#[test]
fn a_selector_takes_only_its_own_events_and_is_not_woken_by_others() {
    let hub = hub();
    let mut mine = watch(&hub, "k/", of("mine"), 0).expect("watch");
    let mut theirs = watch(&hub, "k/", of("theirs"), 0).expect("watch");
    lock(&hub).publish(vec![
        labelled(1, "k/a", "theirs"),
        labelled(1, "other/b", "mine"),
    ]);
    assert_eq!(
        mine.slot.unread_from.load(Ordering::Relaxed),
        0,
        "not woken"
    );
    assert!(matches!(mine.try_recv(), Err(TryRecvError::Empty)));
    lock(&hub).publish(vec![labelled(2, "k/c", "mine")]);
    assert_eq!(mine.slot.unread_from.load(Ordering::Relaxed), 2);
    assert_eq!(
        mine.try_recv().map(|e| e.kv.key.clone()).ok().as_deref(),
        Some("k/c")
    );
    assert!(matches!(mine.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(
        theirs.try_recv().map(|e| e.kv.key.clone()).ok().as_deref(),
        Some("k/a")
    );
    drop(mine);
    drop(theirs);
    assert!(
        lock(&hub).watchers.is_empty(),
        "dropped watchers unregister"
    );
}

#[test]
fn a_quiet_watcher_survives_history_it_does_not_match_and_sees_its_next_event() {
    let hub = hub();
    let mut quiet = watch(&hub, "k/", of("mine"), 0).expect("watch");
    let mut everything = watch(&hub, "k/", None, 0).expect("watch");
    for rev in 1..=(HISTORY_LIMIT as u64 * 2) {
        lock(&hub).publish(vec![labelled(rev, "k/x", "theirs")]);
    }
    let rev = HISTORY_LIMIT as u64 * 2 + 1;
    assert_eq!(
        quiet.caught_up_to(),
        Some(rev - 1),
        "a resume point past all of it"
    );
    lock(&hub).publish(vec![labelled(rev, "k/y", "mine")]);
    assert_eq!(quiet.caught_up_to(), None, "its own event is unread");
    assert_eq!(quiet.try_recv().map(|e| e.revision).ok(), Some(rev));
    assert_eq!(quiet.caught_up_to(), Some(rev));
    assert!(
        matches!(everything.try_recv(), Err(TryRecvError::Disconnected)),
        "a watcher whose unread events were dropped is closed"
    );
}

#[test]
fn a_selected_watcher_with_unread_events_dropped_is_closed() {
    let hub = hub();
    let mut slow = watch(&hub, "k/", of("mine"), 0).expect("watch");
    lock(&hub).publish(vec![labelled(1, "k/y", "mine")]);
    for rev in 2..=(HISTORY_LIMIT as u64 + 2) {
        lock(&hub).publish(vec![labelled(rev, "k/x", "theirs")]);
    }
    assert!(matches!(slow.try_recv(), Err(TryRecvError::Disconnected)));
}
