//! Elections that start as soon as a majority has lost the leader.
//!
//! openraft campaigns only after `election_max` (the lease during which
//! voters refuse every vote) plus a random timeout: a killed leader costs
//! about 300 ms, and two survivors whose draws are close split the vote.
//! (0.9 drew the timeout once per process, so such a split repeated; 0.10
//! draws it again for each election.) Each voter also runs this watchdog.
//! Once it has heard no leader for the lease plus a jitter drawn afresh for
//! every try, it asks the other voters how long they have not heard one, and
//! campaigns only when a majority, itself included, is past the lease and
//! holds no log newer than its own. Their votes will then be granted, and a
//! member cut off alone (or merely slow) cannot unseat a leader the others
//! still hear: a pre-vote of reef's own. Without the log check, a member one
//! entry behind campaigned again and again, lost every time, and with each
//! higher term voided the campaign of the member that could win (CI saw
//! term 133). openraft's timer stays as the fallback, and a member that has
//! heard no leader since it started (a new cluster, a restart) leaves
//! elections to it.

use openraft::async_runtime::WatchReceiver;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::error::StoreError;
use super::types::{LogId, NodeId};
use super::Store;

/// How often the watchdog looks.
const POLL: Duration = Duration::from_millis(5);
/// The longest fresh jitter added to each try: wider than a vote round on a
/// busy machine, so two survivors rarely try at once.
const JITTER: Duration = Duration::from_millis(40);
/// After a try (lost, split or refused by the pre-vote), the least wait
/// before the next; the jitter is added to it.
const RETRY: Duration = Duration::from_millis(10);

/// When this member last heard a leader it follows: an accepted append or
/// snapshot chunk, or a vote it granted.
#[derive(Default)]
pub(crate) struct Contact {
    last: Mutex<Option<Instant>>,
}

impl Contact {
    pub(crate) fn heard(&self) {
        *self.lock() = Some(Instant::now());
    }

    /// How long this member has heard no leader; `None` if it never has.
    fn quiet(&self) -> Option<Duration> {
        self.lock().map(|at| at.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One voter's answer to the pre-vote.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Quiet {
    /// This member leads: it objects to any election.
    pub leading: bool,
    /// Milliseconds since it last heard a leader; `None` if it never has.
    pub quiet_ms: Option<u64>,
    /// Its last log id: it refuses a candidate whose log is older. Absent
    /// from a member that predates the field, which then counts as granting.
    #[serde(default)]
    pub last_log: Option<LogId>,
}

impl Store {
    /// This member's answer to another's pre-vote.
    pub(crate) fn quiet(&self) -> Result<Quiet, StoreError> {
        Ok(Quiet {
            leading: self.is_leader(),
            quiet_ms: self
                .contact
                .quiet()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            last_log: self.last_log_id()?,
        })
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        super::log_store::last_log_id(&self.shared.db)
    }
}

fn jitter() -> Duration {
    rand::thread_rng().gen_range(Duration::ZERO..JITTER)
}

/// Runs the watchdog until the store is dropped or shut down.
pub(crate) fn watch_for_a_lost_leader(store: Weak<Store>, contact: Arc<Contact>, lease: Duration) {
    tokio::spawn(async move {
        let mut last_try: Option<Instant> = None;
        let mut wait = jitter();
        loop {
            tokio::time::sleep(POLL).await;
            let Some(store) = store.upgrade() else { return };
            if store.stopped() {
                return;
            }
            let Some(quiet) = contact.quiet() else {
                continue;
            };
            // Measured from the later of the last contact and the last try.
            let due = match last_try {
                Some(at) if at.elapsed() < quiet => at.elapsed() >= RETRY + wait,
                _ => quiet >= lease + wait,
            };
            if !due {
                continue;
            }
            let Some(others) = store.other_voters() else {
                continue;
            };
            if majority_past_lease(&store, &others, lease).await {
                tracing::info!(
                    quiet_ms = quiet.as_millis() as u64,
                    "no leader heard by a majority: campaigning"
                );
                if store.raft.trigger().elect(false).await.is_err() {
                    return;
                }
            }
            last_try = Some(Instant::now());
            wait = jitter();
        }
    });
}

impl Store {
    /// The other voters' ids and addresses when this member is a follower
    /// or candidate that votes; `None` when it leads or does not vote.
    fn other_voters(&self) -> Option<Vec<(NodeId, String)>> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state == openraft::ServerState::Leader {
            return None;
        }
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&self.id) || voters.len() < 2 {
            return None;
        }
        Some(
            voters
                .into_iter()
                .filter(|&id| id != self.id)
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
                .collect(),
        )
    }
}

/// Asks the other voters; true when they and this member make a majority
/// that has heard no leader for the lease (so their votes will be granted).
async fn majority_past_lease(store: &Store, others: &[(NodeId, String)], lease: Duration) -> bool {
    let deadline = Instant::now() + lease / 2;
    let Ok(mine) = store.last_log_id() else {
        return false;
    };
    let mine = &mine;
    let asks = others.iter().map(|(_, addr)| async move {
        match store
            .call::<Quiet>(addr, super::rpc::PATH_QUIET, None, deadline)
            .await
        {
            Ok(Ok(answer)) => would_grant(&answer, lease, mine),
            // Unreachable (the dead leader among them) or refusing: not a vote.
            _ => false,
        }
    });
    let agreeing = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter(|&agrees| agrees)
        .count();
    is_majority(agreeing, others.len())
}

/// A voter past the lease grants a vote (openraft refuses every vote until
/// `election_max` after the last heartbeat) to a candidate whose last log id
/// is at least its own; one that leads never does.
fn would_grant(answer: &Quiet, lease: Duration, candidate_log: &Option<LogId>) -> bool {
    !answer.leading
        && answer
            .quiet_ms
            .is_none_or(|ms| u128::from(ms) >= lease.as_millis())
        && answer.last_log <= *candidate_log
}

/// This member and `agreeing` of the `others` make a majority of the voters.
fn is_majority(agreeing: usize, others: usize) -> bool {
    (agreeing + 1) * 2 > others + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::TypeConfig;

    const LEASE: Duration = Duration::from_millis(160);

    fn log_id(term: u64, index: u64) -> Option<LogId> {
        Some(openraft::testing::log_id::<TypeConfig>(term, 1, index))
    }

    fn answer(leading: bool, quiet_ms: Option<u64>) -> Quiet {
        Quiet {
            leading,
            quiet_ms,
            last_log: log_id(1, 20),
        }
    }

    #[test]
    fn only_a_voter_past_the_lease_that_does_not_lead_agrees() {
        let mine = log_id(1, 20);
        assert!(would_grant(&answer(false, Some(160)), LEASE, &mine));
        assert!(
            would_grant(&answer(false, None), LEASE, &mine),
            "restarted: heard no leader yet"
        );
        assert!(
            !would_grant(&answer(false, Some(159)), LEASE, &mine),
            "still hears the leader"
        );
        assert!(
            !would_grant(&answer(true, Some(10_000)), LEASE, &mine),
            "the leader itself"
        );
    }

    #[test]
    fn a_voter_with_a_newer_log_does_not_agree() {
        let voter = answer(false, Some(10_000));
        assert!(
            !would_grant(&voter, LEASE, &log_id(1, 19)),
            "one entry behind: openraft would refuse the vote"
        );
        assert!(
            !would_grant(&voter, LEASE, &None),
            "an empty log is behind any entry"
        );
        assert!(would_grant(&voter, LEASE, &log_id(1, 20)), "as new");
        assert!(
            would_grant(&voter, LEASE, &log_id(2, 5)),
            "a later term outranks a longer log"
        );
        let old_member = Quiet {
            last_log: None,
            ..answer(false, Some(10_000))
        };
        assert!(
            would_grant(&old_member, LEASE, &None),
            "a member without the field grants as before"
        );
    }

    #[test]
    fn a_member_alone_is_no_majority() {
        // Three voters: one other agreeing makes two of three.
        assert!(is_majority(1, 2));
        assert!(
            !is_majority(0, 2),
            "cut off alone: the others still hear the leader"
        );
        // Five voters: two others are needed.
        assert!(!is_majority(1, 4));
        assert!(is_majority(2, 4));
    }
}
