//! The loop shared by the scheduler and the controllers: run a pass whenever a
//! watched kind changes, and on a resync timer as the safety net for anything
//! missed, but only while this member leads the cluster.

use crate::registry::Registry;
use reef_api::Kind;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often a follower checks whether it has become the leader.
const FOLLOWER_CHECK: Duration = Duration::from_millis(200);

/// The shortest time between two passes of one loop.
const MIN_GAP: Duration = Duration::from_millis(25);

/// Wakes `notify` on every change to `kind`, resubscribing when a watch ends.
fn watch_kind(registry: Registry, kind: Kind, notify: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            let since = registry.store().revision();
            match registry.watch(kind, None, since) {
                Ok(mut changes) => {
                    while changes.recv().await.is_some() {
                        notify.notify_one();
                    }
                }
                Err(e) => tracing::debug!(kind = %kind, "watch failed, retrying: {e}"),
            }
            notify.notify_one();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Runs `pass` forever; a failing pass is logged and retried on the next wake-up.
pub async fn run<F, Fut, E>(
    name: &'static str,
    registry: Registry,
    kinds: &[Kind],
    resync: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let notify = Arc::new(Notify::new());
    for kind in kinds {
        watch_kind(registry.clone(), *kind, notify.clone());
    }
    let mut last_pass: Option<tokio::time::Instant> = None;
    loop {
        // A follower checks often, so a new leader resumes within an election.
        let wait = if registry.store().is_leader() {
            resync
        } else {
            FOLLOWER_CHECK
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if !registry.store().is_leader() {
            continue;
        }
        // A new leader must have applied everything its predecessor acknowledged
        // before it acts on its view: the read barrier waits for that.
        if let Err(e) = registry.store().read_barrier().await {
            tracing::debug!(loop_name = name, "not acting without a quorum: {e}");
            continue;
        }
        // A pass reads the whole state, so a burst of changes needs one pass, not
        // one each: passes start at most every MIN_GAP (an isolated change still
        // gets one at once). Changes during the wait are folded into the permit.
        if let Some(last) = last_pass {
            tokio::time::sleep_until(last + MIN_GAP).await;
        }
        last_pass = Some(tokio::time::Instant::now());
        if let Err(e) = pass().await {
            tracing::warn!(loop_name = name, "pass failed: {e}");
            // Conflicts resolve on a fresh read; don't spin on a persistent failure.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
