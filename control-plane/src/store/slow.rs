//! Warnings for what makes a member miss its Raft timers: a disk write that
//! takes longer than a heartbeat's worth of slack, and an async runtime so
//! starved that its timers fire late. A follower hears no heartbeat while
//! either lasts, so these lines explain an election nobody asked for (etcd
//! warns of a slow fdatasync for the same reason).

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::Store;

/// Longer than this is worth a warning: about half the leader lease.
const SLOW: Duration = Duration::from_millis(80);
/// How often the runtime watchdog wakes.
const TICK: Duration = Duration::from_millis(20);

/// Warns when a disk operation begun at `started` took too long.
pub(crate) fn note_io(what: &str, started: Instant) {
    let took = started.elapsed();
    if took > SLOW {
        tracing::warn!(took_ms = took.as_millis() as u64, "slow disk write: {what}");
    }
}

/// Warns whenever a timer of this runtime fires later than it should, until
/// the store is dropped or shut down.
pub(crate) fn watch_runtime(store: Weak<Store>) {
    tokio::spawn(async move {
        loop {
            let asked = Instant::now();
            tokio::time::sleep(TICK).await;
            let late = asked.elapsed().saturating_sub(TICK);
            match store.upgrade() {
                Some(store) if !store.stopped() => {}
                _ => return,
            }
            if late > SLOW {
                tracing::warn!(
                    late_ms = late.as_millis() as u64,
                    "timers fired late: a starved async runtime or a paused process"
                );
            }
        }
    });
}
