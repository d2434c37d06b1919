//! Everything that makes any member usable, not only the leader: writes
//! forwarded to the leader, linearizable reads through the leader's read
//! index, and membership changes (join as learner, catch up, promote).
//!
//! The client side picks the leader from this member's Raft metrics and calls
//! it over the member RPCs of `rpc.rs`; the `serve_*` functions are the
//! leader's side. Every operation has a deadline and fails rather than hangs
//! when no quorum answers.
//!
//! Retries: a write is only retried when it certainly was not proposed (the
//! leader refused it as not leading, or the request never reached it); a
//! write whose fate is unknown fails with `Timeout` and is never reported as
//! done. Reads and membership changes are idempotent and retried on any
//! failure until the deadline.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError};
use openraft::ChangeMembers;
use serde::de::DeserializeOwned;
use tokio::time::{sleep_until, timeout_at, Instant};

use super::db;
use super::error::StoreError;
use super::rpc::{
    AddMember, MemberStatus, Refusal, RemoveMember, MSGPACK, PATH_ADD_MEMBER, PATH_READ_INDEX,
    PATH_REMOVE_MEMBER, PATH_STATUS, PATH_TXN,
};
use super::types::{MemberInfo, MemberRole, Node, NodeId, RaftError, Revision, Txn, TxnOutcome};
use super::Store;

/// The largest transaction proposed as one Raft entry. Entries must cross to
/// followers within a heartbeat interval; callers split bigger work (blobs go
/// in 1 MiB chunks, controllers in batches).
pub const MAX_TXN_BYTES: usize = 8 << 20;

/// Where a leader-only request goes.
enum Via {
    Local,
    Remote { id: NodeId, addr: String },
}

/// Why a call to another member failed.
enum CallError {
    /// The request certainly did not reach the member's store (no
    /// connection, or the member answered that its store is gone).
    NotSent(String),
    /// It may have been carried out; we did not get a usable answer.
    Unknown(String),
}

impl CallError {
    fn message(&self) -> &str {
        match self {
            CallError::NotSent(m) | CallError::Unknown(m) => m,
        }
    }
}

/// Waits between attempts: 20 ms doubling to 250 ms, never past the deadline.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: Duration::from_millis(20),
        }
    }

    /// False once the deadline has passed.
    async fn wait(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        sleep_until((now + self.next).min(deadline)).await;
        self.next = (self.next * 2).min(Duration::from_millis(250));
        Instant::now() < deadline
    }
}

impl Store {
    // ---------------------------------------------------------------- client side

    /// Proposes through Raft from any member (forwarded to the leader) and
    /// returns once the entry is committed (fsynced on a majority) and applied
    /// on this member, so a read here sees it. Fails with `NotLeader` or
    /// `Timeout` when no leader accepts it within the request timeout; an
    /// error never means the write did not happen, only that it was not
    /// acknowledged.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let size = txn.approximate_size();
        if size > MAX_TXN_BYTES {
            return Err(StoreError::TooLarge(format!(
                "a write of {size} bytes is over the store's limit of {MAX_TXN_BYTES} bytes per entry"
            )));
        }
        let deadline = Instant::now() + self.request_timeout;
        let mut backoff = Backoff::new();
        let mut hint = None;
        let mut encoded: Option<Bytes> = None;
        let mut last_error = None;
        loop {
            let via = match self.route(hint.take(), deadline).await {
                Ok(via) => via,
                Err(e) => return Err(last_error.unwrap_or(e)),
            };
            match via {
                Via::Local => match self.propose(txn.clone(), deadline).await {
                    Ok(outcome) => return Ok(outcome),
                    // Refused before it was appended: safe to retry.
                    Err(StoreError::NotLeader { leader }) => {
                        hint = leader.filter(|&l| l != self.id);
                        last_error = Some(StoreError::NotLeader { leader });
                    }
                    Err(e) => return Err(e),
                },
                Via::Remote { id, addr } => {
                    let body = match &encoded {
                        Some(b) => b.clone(),
                        None => encoded.insert(Bytes::from(db::encode(&txn)?)).clone(),
                    };
                    match self
                        .call::<TxnOutcome>(&addr, PATH_TXN, Some(body), deadline)
                        .await
                    {
                        Ok(Ok(outcome)) => {
                            // The leader has committed it: that is the answer. Waiting
                            // for the local apply only lets the caller read its own
                            // write here; a slow apply must not turn a committed
                            // write into an error a client would retry.
                            if let Err(e) = self.wait_applied(outcome.revision, deadline).await {
                                tracing::debug!("committed write not yet applied locally: {e}");
                            }
                            return Ok(outcome);
                        }
                        Ok(Err(Refusal::NotLeader { leader })) => {
                            hint = leader;
                            last_error = Some(StoreError::NotLeader { leader });
                        }
                        Ok(Err(refusal)) => return Err(refusal.into()),
                        // Never reached the leader: nothing was proposed, so this is
                        // "no leader" (retryable), not an unknown outcome.
                        Err(CallError::NotSent(m)) => {
                            tracing::debug!(
                                "the leader (member {id} at {addr}) is unreachable: {m}"
                            );
                            last_error = Some(StoreError::NotLeader { leader: None });
                        }
                        Err(CallError::Unknown(m)) => {
                            return Err(StoreError::Timeout(format!(
                                "forwarding the write to the leader (member {id} at {addr}) \
                                 failed, its outcome is unknown: {m}"
                            )))
                        }
                    }
                }
            }
            if !backoff.wait(deadline).await {
                return Err(last_error.unwrap_or(StoreError::NotLeader { leader: None }));
            }
        }
    }

    /// Linearizable read barrier on any member: once it returns, local reads
    /// reflect every write committed before it was called. The leader
    /// confirms its leadership with a quorum (read index); a follower asks
    /// the leader for that index and waits until it has applied it. Fails
    /// (`NotLeader` or `Timeout`) when no quorum confirms in time.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut backoff = Backoff::new();
        let mut hint = None;
        let mut last_error = None;
        loop {
            let via = match self.route(hint.take(), deadline).await {
                Ok(via) => via,
                Err(e) => return Err(last_error.unwrap_or(e)),
            };
            let index = match via {
                Via::Local => self.read_index_here(deadline).await,
                Via::Remote { id, addr } => match self
                    .call::<Revision>(&addr, PATH_READ_INDEX, Some(Bytes::new()), deadline)
                    .await
                {
                    Ok(Ok(index)) => Ok(index),
                    Ok(Err(refusal)) => Err(refusal.into()),
                    Err(e) => Err(StoreError::Timeout(format!(
                        "asking the leader (member {id} at {addr}) for its read index: {}",
                        e.message()
                    ))),
                },
            };
            match index {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(StoreError::NotLeader { leader }) => {
                    hint = leader.filter(|&l| l != self.id);
                    last_error = Some(StoreError::NotLeader { leader });
                }
                Err(e @ StoreError::Stopped(_)) => return Err(e),
                Err(e) => last_error = Some(e),
            }
            if !backoff.wait(deadline).await {
                return Err(last_error.unwrap_or(StoreError::NotLeader { leader: None }));
            }
        }
    }

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
        let m = metrics.borrow();
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
        let m = metrics.borrow();
        m.last_log_index.is_some() || m.vote != Default::default()
    }

    // ---------------------------------------------------------------- plumbing

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The leader to send a request to (preferring `hint`), waiting until
    /// one is known whose address this member has.
    async fn route(&self, hint: Option<NodeId>, deadline: Instant) -> Result<Via, StoreError> {
        let mut rx = self.raft.metrics();
        loop {
            if self.stopped() {
                return Err(StoreError::Stopped("the store is shutting down".into()));
            }
            {
                let m = rx.borrow_and_update();
                let membership = m.membership_config.membership();
                let pick = |id: NodeId| {
                    if id == self.id {
                        Some(Via::Local)
                    } else {
                        membership.get_node(&id).map(|node| Via::Remote {
                            id,
                            addr: node.addr.clone(),
                        })
                    }
                };
                if let Some(via) = hint
                    .and_then(pick)
                    .or_else(|| m.current_leader.and_then(pick))
                {
                    return Ok(via);
                }
            }
            match timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(StoreError::NotLeader { leader: None }),
                Ok(Err(_)) => return Err(StoreError::Stopped("raft stopped".into())),
                Ok(Ok(())) => {}
            }
        }
    }

    /// One authenticated member RPC: POST with a MessagePack body, or GET.
    async fn call<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Option<Bytes>,
        deadline: Instant,
    ) -> Result<Result<T, Refusal>, CallError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CallError::NotSent("deadline passed".into()));
        }
        let url = format!("{}{path}", super::network::member_url(addr));
        let request = match body {
            Some(body) => self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, MSGPACK)
                .body(body),
            None => self.http.get(url),
        };
        let response = request
            .bearer_auth(&*self.secret)
            .timeout(remaining)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::NotSent(e.to_string())
                } else {
                    CallError::Unknown(e.to_string())
                }
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Unknown(e.to_string()))?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(CallError::NotSent(format!("member at {addr} has no store")));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
            return Err(CallError::Unknown(format!(
                "{path} at {addr} answered {status}: {}",
                text.trim()
            )));
        }
        rmp_serde::from_slice(&bytes)
            .map_err(|e| CallError::Unknown(format!("undecodable reply from {addr}: {e}")))
    }

    /// Waits until this member has applied `index`.
    async fn wait_applied(&self, index: Revision, deadline: Instant) -> Result<(), StoreError> {
        if self.revision() >= index {
            return Ok(());
        }
        // A little grace past the deadline: the work is done, only the apply lags.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(self.heartbeat * 4);
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "applied locally")
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::Timeout(format!(
                    "member {} has not applied revision {index} yet: {e}",
                    self.id
                ))
            })
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
        let mut backoff = Backoff::new();
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

    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.leader_id().filter(|&l| l != self.id),
        }
    }

    // ---------------------------------------------------------------- leader side

    /// Proposes on this member, which must lead. `NotLeader` means the entry
    /// was not appended; `Timeout` means its outcome is unknown.
    async fn propose(&self, txn: Txn, deadline: Instant) -> Result<TxnOutcome, StoreError> {
        if self.stopped() || !self.is_leader() {
            return Err(self.not_leader());
        }
        match timeout_at(deadline, self.raft.client_write(txn)).await {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(StoreError::NotLeader {
                    leader: f.leader_id.filter(|&l| l != self.id),
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(StoreError::Raft(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(StoreError::Stopped(e.to_string())),
            Err(_) => Err(StoreError::Timeout(
                "the write was proposed but not committed in time (no quorum?); \
                 its outcome is unknown"
                    .into(),
            )),
        }
    }

    /// The leader's read index, after confirming leadership with a quorum.
    async fn read_index_here(&self, deadline: Instant) -> Result<Revision, StoreError> {
        if self.stopped() {
            return Err(self.not_leader());
        }
        match timeout_at(deadline, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(StoreError::NotLeader {
                    leader: f.leader_id.filter(|&l| l != self.id),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => Err(
                StoreError::Timeout(format!("no quorum confirmed the leadership: {q}")),
            ),
            Ok(Err(RaftError::Fatal(e))) => Err(StoreError::Stopped(e.to_string())),
            Err(_) => Err(StoreError::Timeout(
                "no quorum confirmed the leadership in time".into(),
            )),
        }
    }

    pub(crate) async fn serve_txn(&self, txn: Txn) -> Result<TxnOutcome, Refusal> {
        let deadline = Instant::now() + self.request_timeout;
        self.propose(txn, deadline).await.map_err(Refusal::from)
    }

    pub(crate) async fn serve_read_index(&self) -> Result<Revision, Refusal> {
        if !self.is_leader() {
            return Err(self.not_leader().into());
        }
        let deadline = Instant::now() + self.request_timeout;
        self.read_index_here(deadline).await.map_err(Refusal::from)
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
        let m = metrics.borrow();
        MemberStatus {
            id: self.id,
            applied: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index,
            leader: m.current_leader,
            term: m.current_term,
            initialized: self.initialized_at_open
                || m.last_log_index.is_some()
                || m.vote != Default::default(),
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
            self.revision()
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
            let m = metrics.borrow();
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
        let m = metrics.borrow();
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
        let mut backoff = Backoff::new();
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
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
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
        let mut backoff = Backoff::new();
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
        target: Revision,
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
    /// The last log index the leader knows member `id` holds (0 if none).
    fn replicated_to(&self, id: NodeId) -> Revision {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
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
