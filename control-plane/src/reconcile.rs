//! The loop shared by the scheduler and the controllers: run a pass whenever a
//! watched kind changes in a way the loop cares about, and on a resync timer as
//! the safety net for anything missed, but only while this member leads the
//! cluster.
//!
//! "A way the loop cares about" matters at scale: a thousand nodes renewing
//! their leases make a hundred Node writes a second, and a loop that only
//! needs a node's address must not list the whole cluster for each of them.

use crate::registry::Registry;
use reef_api::{Kind, RawObject, WatchEventType};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A kind a loop watches, and the part of its objects whose change warrants
/// a pass. Additions and deletions always do.
#[derive(Clone, Copy)]
pub struct Trigger {
    pub kind: Kind,
    /// `None`: any change.
    pub projection: Option<fn(&RawObject) -> Value>,
    /// What a change of this kind can affect, for a loop that reconciles
    /// only that (see [`Changed`]).
    pub reach: Reach,
}

/// What one change can affect of the objects a loop reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Any of them.
    All,
    /// Those in the changed object's namespace.
    Namespace,
    /// The changed object itself (a trigger on the loop's own kind).
    Object,
}

impl Trigger {
    /// Every change to `kind`.
    pub const fn any(kind: Kind) -> Trigger {
        Trigger {
            kind,
            projection: None,
            reach: Reach::All,
        }
    }

    /// Changes to `kind` that alter `projection` of an object.
    pub const fn on(kind: Kind, projection: fn(&RawObject) -> Value) -> Trigger {
        Trigger {
            kind,
            projection: Some(projection),
            reach: Reach::All,
        }
    }

    /// This trigger, saying that a change affects only `reach`.
    pub const fn reaching(self, reach: Reach) -> Trigger {
        Trigger { reach, ..self }
    }
}

/// What changed since a loop's last pass, so a loop whose objects are many
/// (ten thousand Services) can reconcile only those a change can affect
/// instead of all of them on every write. Loops that ignore it do full passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Anything may have changed: the first pass, a resync, a watch that
    /// restarted (it may have missed changes), a pass that failed.
    pub all: bool,
    /// Namespaces in which anything may have changed.
    pub namespaces: HashSet<String>,
    /// Objects of the loop's own kind that changed, as (namespace, name).
    pub objects: HashSet<(String, String)>,
}

impl Changed {
    fn everything() -> Changed {
        Changed {
            all: true,
            ..Changed::default()
        }
    }

    fn add(&mut self, reach: Reach, object: &RawObject) {
        match reach {
            Reach::All => self.all = true,
            Reach::Namespace => {
                self.namespaces.insert(object.namespace().to_string());
            }
            Reach::Object => {
                let id = (object.namespace().to_string(), object.metadata.name.clone());
                self.objects.insert(id);
            }
        }
    }
}

type SharedChanges = Arc<Mutex<Changed>>;

fn lock(changes: &SharedChanges) -> std::sync::MutexGuard<'_, Changed> {
    changes.lock().unwrap_or_else(|e| e.into_inner())
}

fn fingerprint(value: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// How often a follower checks whether it has become the leader.
const FOLLOWER_CHECK: Duration = Duration::from_millis(200);

/// The longest rest between two passes of one loop: the rest is twice the
/// last pass's duration, so a cheap loop (a small cluster) reacts within a
/// millisecond or two and an expensive one (a big cluster, a burst of
/// changes) spends at most a third of a core, folding changes together.
const MAX_GAP: Duration = Duration::from_millis(25);
const MIN_GAP: Duration = Duration::from_millis(1);

/// Wakes `notify` on every change to the trigger's kind that matters to it,
/// resubscribing when a watch ends. Only while this member leads: a
/// follower's loops do not run, so it decodes no change for them (the first
/// pass of a new leader reads everything anyway).
fn watch_kind(registry: Registry, trigger: Trigger, notify: Arc<Notify>, owed: SharedChanges) {
    let kind = trigger.kind;
    tokio::spawn(async move {
        // The projection last seen of each object, by namespace/name.
        let mut seen: HashMap<String, u64> = HashMap::new();
        loop {
            if !registry.store().is_leader() {
                seen.clear();
                tokio::time::sleep(FOLLOWER_CHECK).await;
                continue;
            }
            // Whatever changed before this watch begins is not in it.
            lock(&owed).all = true;
            let since = registry.store().revision();
            match registry.watch(kind, None, None, since) {
                Ok(mut changes) => {
                    while let Some(change) = changes.recv().await {
                        if !registry.store().is_leader() {
                            break;
                        }
                        let object = &change.object;
                        let Some(projection) = trigger.projection else {
                            lock(&owed).add(trigger.reach, object);
                            notify.notify_one();
                            continue;
                        };
                        let key = format!("{}/{}", object.namespace(), object.metadata.name);
                        let matters = if change.kind == WatchEventType::Deleted {
                            seen.remove(&key);
                            true
                        } else {
                            let print = fingerprint(&projection(object));
                            seen.insert(key, print) != Some(print)
                        };
                        if matters {
                            lock(&owed).add(trigger.reach, object);
                            notify.notify_one();
                        }
                    }
                }
                Err(e) => tracing::debug!(kind = %kind, "watch failed, retrying: {e}"),
            }
            notify.notify_one();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Runs `pass` forever, telling it what changed since the last one; a
/// failing pass is logged and retried in full on the next wake-up.
pub async fn run<F, Fut, E>(
    name: &'static str,
    registry: Registry,
    triggers: &[Trigger],
    resync: Duration,
    mut pass: F,
) where
    F: FnMut(Changed) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let notify = Arc::new(Notify::new());
    let changes: SharedChanges = Arc::new(Mutex::new(Changed::everything()));
    for trigger in triggers {
        watch_kind(registry.clone(), *trigger, notify.clone(), changes.clone());
    }
    // When the last pass ended, and how long it took.
    let mut last_pass: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        // A follower checks often, so a new leader resumes within an election.
        let wait = if registry.store().is_leader() {
            resync
        } else {
            FOLLOWER_CHECK
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => lock(&changes).all = true,
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
        // one each: after a pass the loop rests (an isolated change still gets
        // one at once). Changes during the rest are folded into the permit.
        if let Some((ended, took)) = last_pass {
            tokio::time::sleep_until(ended + (took * 2).clamp(MIN_GAP, MAX_GAP)).await;
        }
        let started = tokio::time::Instant::now();
        let changed = std::mem::take(&mut *lock(&changes));
        let result = pass(changed).await;
        let ended = tokio::time::Instant::now();
        last_pass = Some((ended, ended - started));
        if let Err(e) = result {
            tracing::warn!(loop_name = name, "pass failed: {e}");
            // What it did not finish is owed: the next pass is a full one.
            lock(&changes).all = true;
            // Conflicts resolve on a fresh read; don't spin on a persistent failure.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Per-object back-off for a loop that reconciles objects one by one (kube-rs'
/// runner does the same): an object whose reconcile fails is logged and left
/// alone for 100 ms, doubling to 30 s, while the others go on.
#[derive(Clone, Default)]
pub struct Retries {
    failing: Arc<std::sync::Mutex<HashMap<String, (tokio::time::Instant, Duration)>>>,
}

impl Retries {
    const FIRST: Duration = Duration::from_millis(100);
    const LONGEST: Duration = Duration::from_secs(30);

    /// The keys whose last reconcile failed: a pass that reconciles only
    /// what changed must still retry them.
    pub fn failing(&self) -> Vec<String> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing.keys().cloned().collect()
    }

    /// Whether `key` may be reconciled now (not waiting out a back-off).
    pub fn due(&self, key: &str) -> bool {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing
            .get(key)
            .is_none_or(|(next, _)| tokio::time::Instant::now() >= *next)
    }

    /// Records the outcome of reconciling `key`; a failure is logged with it.
    pub fn record<E: std::fmt::Display>(&self, loop_name: &str, key: &str, outcome: Result<(), E>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                failing.remove(key);
            }
            Err(e) => {
                let wait = failing
                    .get(key)
                    .map_or(Self::FIRST, |(_, last)| (*last * 2).min(Self::LONGEST));
                tracing::warn!(
                    loop_name,
                    object = key,
                    ?wait,
                    "reconcile failed, retrying later: {e}"
                );
                failing.insert(key.to_string(), (tokio::time::Instant::now() + wait, wait));
            }
        }
    }
}
