//! Membership changes from any member: a joiner is added as a learner,
//! catches up (by snapshot if the log it needs is compacted) and is promoted
//! once the leader's own replication figure says it holds what the leader
//! has applied; removals; and the member status other members poll.
//!
//! Requests go to the leader (over `rpc.rs` when it is another member);
//! changes are idempotent and retried until their deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError};
use openraft::ChangeMembers;
use tokio::time::{sleep_until, timeout_at, Instant};

use super::cluster::{Backoff, Via};
use super::db;
use super::error::StoreError;
use super::rpc::{
    AddMember, MemberStatus, Refusal, RemoveMember, PATH_ADD_MEMBER, PATH_REMOVE_MEMBER,
    PATH_STATUS,
};
use super::types::{MemberInfo, MemberRole, Node, NodeId, RaftError};
use super::Store;

impl Store {
    /// Adds a member from any member (forwarded to the leader): it joins as a
    /// learner, catches up (by snapshot if the log it needs is compacted),
    /// and is promoted to voter once its applied index reaches the leader's.
    /// The member must already be serving its Raft routes at `address`.
    /// Idempotent: a voter with that id and address is `Ok`. An id that is a
    /// member at another address is refused (remove it first). A voter that
    /// comes back with an empty data dir is taken out and added back as a
    /// learner, so it does not vote until it has caught up.
    pub async fn add_member(&self, id: NodeId, address: String) -> Result<(), StoreError> {
        if address.is_empty() {
            return Err(StoreError::Config("the member address is empty".into()));
        }
        let body = db::encode(&AddMember {
            id,
            address: address.clone(),
        })?;
        // Members joining at once are promoted one after the other.
        let deadline = Instant::now() + self.join_timeout + self.request_timeout * 2;
        self.membership_call(PATH_ADD_MEMBER, body.into(), deadline, || {
            self.add_member_here(id, address.clone(), deadline)
        })
        .await
    }

    /// Removes a member (voter or learner) from any member (forwarded to the
    /// leader). Removing an id that is not a member is `Ok`; removing the
    /// last voter is refused. A removed leader steps down once the change
    /// commits.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), StoreError> {
        let body = db::encode(&RemoveMember { id })?;
        let deadline = Instant::now() + self.request_timeout * 2;
        self.membership_call(PATH_REMOVE_MEMBER, body.into(), deadline, || {
            self.remove_member_here(id, deadline)
        })
        .await
    }

    /// The current membership and leader as this member sees them, by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(&id, node)| MemberInfo {
                id,
                address: node.addr.clone(),
                role: if !voters.contains(&id) {
                    MemberRole::Learner
                } else if m.current_leader == Some(id) {
                    MemberRole::Leader
                } else {
                    MemberRole::Follower
                },
            })
            .collect()
    }

    /// Whether this member holds Raft state (a vote, log, or membership):
    /// it was initialised, restored, or has been contacted by a leader.
    pub fn is_initialized(&self) -> bool {
        if self.initialized_at_open {
            return true;
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.last_log_index.is_some() || m.vote.leader_id.term != 0
    }

    /// Runs a membership change on the leader, locally or over RPC,
    /// retrying (it is idempotent) until `deadline`.
    async fn membership_call<F, Fut>(
        &self,
        path: &str,
        body: Bytes,
        deadline: Instant,
        here: F,
    ) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut backoff = Backoff::new(&self.raft);
        let mut hint = None;
        let mut last_error = None;
        loop {
            let via = match self.route(hint.take(), deadline).await {
                Ok(via) => via,
                Err(e) => return Err(last_error.unwrap_or(e)),
            };
            let result = match via {
                Via::Local => here().await,
                Via::Remote { id, addr } => {
                    match self
                        .call::<()>(&addr, path, Some(body.clone()), deadline)
                        .await
                    {
                        Ok(result) => result.map_err(StoreError::from),
                        // Idempotent: try again, whatever happened to this call.
                        Err(e) => {
                            last_error = Some(StoreError::Timeout(format!(
                                "calling the leader (member {id} at {addr}): {}",
                                e.message()
                            )));
                            Err(StoreError::NotLeader { leader: None })
                        }
                    }
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(StoreError::NotLeader { leader }) => {
                    hint = leader.filter(|&l| l != self.id);
                    if leader.is_some() || last_error.is_none() {
                        last_error = Some(StoreError::NotLeader { leader });
                    }
                }
                Err(e) => return Err(e),
            }
            if !backoff.wait(deadline).await {
                return Err(last_error.unwrap_or(StoreError::NotLeader { leader: None }));
            }
        }
    }

    pub(crate) async fn serve_add_member(&self, req: AddMember) -> Result<(), Refusal> {
        let deadline = Instant::now() + self.join_timeout + self.request_timeout;
        self.add_member_here(req.id, req.address, deadline)
            .await
            .map_err(Refusal::from)
    }

    pub(crate) async fn serve_remove_member(&self, req: RemoveMember) -> Result<(), Refusal> {
        let deadline = Instant::now() + self.request_timeout;
        self.remove_member_here(req.id, deadline)
            .await
            .map_err(Refusal::from)
    }

    pub(crate) fn status(&self) -> MemberStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        MemberStatus {
            id: self.id,
            applied: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index,
            leader: m.current_leader,
            term: m.current_term,
            initialized: self.initialized_at_open
                || m.last_log_index.is_some()
                || m.vote.leader_id.term != 0,
        }
    }

    /// The leader's part of `add_member`.
    async fn add_member_here(
        &self,
        id: NodeId,
        address: String,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        if self.stopped() || !self.is_leader() {
            return Err(self.not_leader());
        }
        if let (Some(addr), _) = self.membership_entry(id) {
            if addr != address {
                return Err(moved(id, &addr, &address));
            }
        }
        // Whoever answers at the address must be the member we are adding;
        // it should be serving already, so do not wait long for it.
        let status_deadline = deadline.min(Instant::now() + self.request_timeout);
        let status = self.member_status(&address, status_deadline).await?;
        if status.id != id {
            return Err(StoreError::Refused(format!(
                "the member at {address} is member {}, not {id}",
                status.id
            )));
        }

        // 1. Join as a learner (one membership change at a time).
        let target = {
            let _guard = self.lock_membership(deadline).await?;
            if !self.is_leader() {
                return Err(self.not_leader());
            }
            let (node, voter) = self.membership_entry(id);
            match node {
                Some(addr) if addr != address => return Err(moved(id, &addr, &address)),
                Some(_) if voter && status.initialized => return Ok(()),
                Some(_) if voter => {
                    // Its data dir was wiped: it must not vote with an empty
                    // log. Take it out and bring it back as a learner.
                    tracing::warn!("member {id} lost its data; removing it and adding it again");
                    self.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        false,
                        deadline,
                    )
                    .await?;
                    self.add_learner(id, &address, deadline).await?;
                }
                Some(_) => {} // a learner already: an earlier attempt got this far
                None => self.add_learner(id, &address, deadline).await?,
            }
            // It has caught up once it has applied what we have applied now.
            self.applied_index()
        };

        // 2. Catch up, outside the lock, so members can join side by side.
        self.wait_caught_up(id, &address, target, deadline).await?;

        // 3. Promote.
        let _guard = self.lock_membership(deadline).await?;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        match self.membership_entry(id) {
            (Some(addr), _) if addr != address => Err(StoreError::Refused(format!(
                "member {id} was re-added at {addr} while joining"
            ))),
            (Some(_), true) => Ok(()),
            (Some(_), false) => {
                self.change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                    true,
                    deadline,
                )
                .await
            }
            (None, _) => Err(StoreError::Refused(format!(
                "member {id} was removed while joining"
            ))),
        }
    }

    /// The leader's part of `remove_member`.
    async fn remove_member_here(&self, id: NodeId, deadline: Instant) -> Result<(), StoreError> {
        if self.stopped() || !self.is_leader() {
            return Err(self.not_leader());
        }
        let _guard = self.lock_membership(deadline).await?;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let voters: BTreeSet<NodeId> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config.membership().voter_ids().collect()
        };
        match self.membership_entry(id) {
            (None, _) => Ok(()),
            (Some(_), true) => {
                if voters.len() == 1 {
                    return Err(StoreError::Refused(format!(
                        "member {id} is the last voter; a cluster cannot remove its last voter"
                    )));
                }
                self.change_membership(
                    ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                    false,
                    deadline,
                )
                .await
            }
            (Some(_), false) => {
                self.change_membership(
                    ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                    false,
                    deadline,
                )
                .await
            }
        }
    }

    async fn lock_membership(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, StoreError> {
        timeout_at(deadline, self.membership_lock.lock())
            .await
            .map_err(|_| StoreError::Timeout("waiting for another membership change".into()))
    }

    /// The member's address, if it is a member, and whether it votes.
    fn membership_entry(&self, id: NodeId) -> (Option<String>, bool) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let node = membership.get_node(&id).map(|n| n.addr.clone());
        let voter = membership.voter_ids().any(|v| v == id);
        (node, voter)
    }

    async fn add_learner(
        &self,
        id: NodeId,
        address: &str,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let node = Node {
            addr: address.to_owned(),
        };
        self.change_membership(ChangeMembers::AddNodes([(id, node)].into()), true, deadline)
            .await
    }

    /// `change_membership`, retried while an earlier change is still being committed.
    async fn change_membership(
        &self,
        changes: ChangeMembers<NodeId, Node>,
        retain: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let mut backoff = Backoff::new(&self.raft);
        loop {
            let result = timeout_at(
                deadline,
                self.raft.change_membership(changes.clone(), retain),
            )
            .await;
            match result {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(p),
                )))) => {
                    if !backoff.wait(deadline).await {
                        return Err(StoreError::Timeout(format!(
                            "an earlier membership change is still in progress: {p}"
                        )));
                    }
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    return Err(StoreError::NotLeader {
                        leader: f.leader_id.filter(|&l| l != self.id),
                    })
                }
                // Idempotent: the caller retries and finds it done or not.
                Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)))) => {
                    return Err(StoreError::NotLeader {
                        leader: f.leader_id.filter(|&l| l != self.id),
                    })
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(StoreError::Refused(e.to_string()))
                }
                Ok(Err(RaftError::APIError(e @ ClientWriteError::PreconditionFailed(_)))) => {
                    return Err(StoreError::Refused(e.to_string()))
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(StoreError::Stopped(e.to_string())),
                Err(_) => {
                    return Err(StoreError::Timeout(
                        "the membership change did not commit in time".into(),
                    ))
                }
            }
        }
    }

    /// Asks the member at `address` for its status, retrying until it answers.
    async fn member_status(
        &self,
        address: &str,
        deadline: Instant,
    ) -> Result<MemberStatus, StoreError> {
        let mut backoff = Backoff::new(&self.raft);
        loop {
            let error = match self
                .call::<MemberStatus>(address, PATH_STATUS, None, deadline)
                .await
            {
                Ok(Ok(status)) => return Ok(status),
                Ok(Err(refusal)) => StoreError::from(refusal).to_string(),
                Err(e) => e.message().to_owned(),
            };
            if !backoff.wait(deadline).await {
                return Err(StoreError::Timeout(format!(
                    "the member at {address} did not answer: {error}"
                )));
            }
        }
    }

    /// Polls the learner until it has applied `target` by its own report and
    /// the leader has replicated up to `target` to it by its own metrics: the
    /// first because openraft calls a learner that still lags by thousands of
    /// entries "up to date", the second because a joiner's word alone must not
    /// make it a voter.
    async fn wait_caught_up(
        &self,
        id: NodeId,
        address: &str,
        target: u64,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let mut applied = 0;
        loop {
            if let Ok(Ok(status)) = self
                .call::<MemberStatus>(address, PATH_STATUS, None, deadline)
                .await
            {
                if status.id != id {
                    return Err(StoreError::Refused(format!(
                        "the member at {address} is now member {}, not {id}",
                        status.id
                    )));
                }
                applied = status.applied;
                if applied >= target && self.replicated_to(id) >= target {
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Timeout(format!(
                    "member {id} applied {applied} of {target} before the join deadline; \
                     it stays a learner (add it again to retry)"
                )));
            }
            sleep_until((now + Duration::from_millis(100)).min(deadline)).await;
        }
    }
}

impl Store {
    /// This member's last applied log index (not a revision: several writes
    /// share an entry).
    fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// The last log index the leader knows member `id` holds (0 if none).
    fn replicated_to(&self, id: NodeId) -> u64 {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map_or(0, |log_id| log_id.index)
    }
}

fn moved(id: NodeId, addr: &str, address: &str) -> StoreError {
    StoreError::Refused(format!(
        "member {id} already exists at {addr}; remove it before adding it at {address}"
    ))
}
