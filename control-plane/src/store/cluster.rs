//! Everything that makes any member usable, not only the leader: writes
//! forwarded to the leader (and batched there by `proposer`), and
//! linearizable reads through the leader's read index. Membership changes
//! are in `membership`.
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

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::LinearizableReadError;
use openraft::ReadPolicy;
use serde::de::DeserializeOwned;
use tokio::time::{sleep_until, timeout_at, Instant};

use super::db;
use super::error::StoreError;
use super::rpc::{Refusal, MSGPACK, PATH_READ_INDEX, PATH_TXN};
use super::types::{NodeId, RaftError, Revision, Txn, TxnOutcome, TypeConfig};
use super::{Raft, Store};

/// The largest transaction proposed as one Raft entry. An AppendEntries RPC
/// must finish within its deadline (`network.rs`), so entries stay small:
/// blobs go in 1 MiB chunks, controllers write in batches.
pub const MAX_TXN_BYTES: usize = 2 << 20;

/// How many bytes of transactions the leader packs into one entry; a single
/// larger transaction (up to [`MAX_TXN_BYTES`]) goes alone.
pub(crate) const MAX_PROPOSAL_BYTES: usize = 1 << 20;

/// Where a leader-only request goes.
pub(super) enum Via {
    Local,
    Remote { id: NodeId, addr: String },
}

/// Why a call to another member failed.
pub(super) enum CallError {
    /// The request certainly did not reach the member's store (no
    /// connection, or the member answered that its store is gone).
    NotSent(String),
    /// It may have been carried out; we did not get a usable answer.
    Unknown(String),
}

impl CallError {
    pub(super) fn message(&self) -> &str {
        match self {
            CallError::NotSent(m) | CallError::Unknown(m) => m,
        }
    }
}

/// Waits between attempts: 10 ms doubling to 100 ms, never past the
/// deadline, and no longer once a retry can succeed: when a new leader is
/// known (after a failover the next attempt goes out as soon as the election
/// ends, not a back-off later), or when this member leads and a quorum has
/// acknowledged it again (openraft refuses writes on a leader until a
/// quorum has acknowledged it, which a just-elected one has not yet).
pub(super) struct Backoff {
    next: Duration,
    metrics: MetricsReceiver,
    leader: Option<NodeId>,
    acked: Option<AckedAt>,
}

type MetricsReceiver =
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>;
type AckedAt = openraft::type_config::alias::SerdeInstantOf<TypeConfig>;

impl Backoff {
    pub(super) fn new(raft: &Raft) -> Self {
        let metrics = raft.metrics();
        let (leader, acked) = {
            let m = metrics.borrow_watched();
            (m.current_leader, m.last_quorum_acked.clone())
        };
        Backoff {
            next: Duration::from_millis(10),
            metrics,
            leader,
            acked,
        }
    }

    /// False once the deadline has passed.
    pub(super) async fn wait(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let sleep = sleep_until((now + self.next).min(deadline));
        let (known, acked) = (self.leader, self.acked.clone());
        let metrics = &mut self.metrics;
        let retry_worthwhile = async move {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    let leader = m.current_leader;
                    let leads = leader == Some(m.id);
                    if (leader.is_some() && leader != known)
                        || (leads && m.last_quorum_acked.is_some() && m.last_quorum_acked != acked)
                    {
                        return;
                    }
                }
                if metrics.changed().await.is_err() {
                    // Raft stopped: only the sleep is left to wait for.
                    return std::future::pending().await;
                }
            }
        };
        tokio::select! {
            () = sleep => {}
            () = retry_worthwhile => {}
        }
        {
            let m = self.metrics.borrow_watched();
            self.leader = m.current_leader;
            self.acked = m.last_quorum_acked.clone();
        }
        self.next = (self.next * 2).min(Duration::from_millis(100));
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
        let mut backoff = Backoff::new(&self.raft);
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
    ///
    /// Concurrent callers share rounds, as etcd batches read indexes: one
    /// barrier runs at a time, and a caller is done as soon as a barrier that
    /// began after it was called has completed, so many readers (or watch
    /// bookmarks) cost one quorum round, not one each.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let asked = Instant::now();
        let deadline = asked + self.request_timeout;
        let mut last = timeout_at(deadline, self.barrier.lock())
            .await
            .map_err(|_| StoreError::Timeout("waiting for a read barrier's turn".into()))?;
        if last.is_some_and(|began| began >= asked) {
            return Ok(());
        }
        let began = Instant::now();
        self.read_barrier_round(deadline).await?;
        *last = Some(began);
        Ok(())
    }

    /// One read barrier of its own.
    async fn read_barrier_round(&self, deadline: Instant) -> Result<(), StoreError> {
        let mut backoff = Backoff::new(&self.raft);
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
    // ---------------------------------------------------------------- plumbing

    pub(super) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The leader to send a request to (preferring `hint`), waiting until
    /// one is known whose address this member has.
    pub(super) async fn route(
        &self,
        hint: Option<NodeId>,
        deadline: Instant,
    ) -> Result<Via, StoreError> {
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
    pub(super) async fn call<T: DeserializeOwned>(
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

    /// Waits until this member's revision reaches `revision`.
    pub(super) async fn wait_applied(
        &self,
        revision: Revision,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        if self.revision() >= revision {
            return Ok(());
        }
        // A little grace past the deadline: the work is done, only the apply lags.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(self.heartbeat * 4);
        let mut rx = self.shared.revision.subscribe();
        let reached = tokio::time::timeout(wait, rx.wait_for(|&r| r >= revision))
            .await
            .map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Stopped("the store is shutting down".into())),
            Err(_) => Err(StoreError::Timeout(format!(
                "member {} has not applied revision {revision} yet (it is at {})",
                self.id,
                self.revision()
            ))),
        }
    }

    pub(super) fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.leader_id().filter(|&l| l != self.id),
        }
    }

    // ---------------------------------------------------------------- leader side

    /// Proposes on this member, which must lead, in the next group commit.
    /// `NotLeader` means the write was not appended; `Timeout` means its
    /// outcome is unknown.
    async fn propose(&self, txn: Txn, deadline: Instant) -> Result<TxnOutcome, StoreError> {
        if self.stopped() || !self.is_leader() {
            return Err(self.not_leader());
        }
        match timeout_at(deadline, self.proposer.propose(txn)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(
                "the write was proposed but not committed in time (no quorum?); \
                 its outcome is unknown"
                    .into(),
            )),
        }
    }

    /// The leader's read revision: after confirming leadership with a quorum
    /// and applying up to the read index, every write committed before the
    /// call is at or below the revision returned.
    async fn read_index_here(&self, deadline: Instant) -> Result<Revision, StoreError> {
        if self.stopped() {
            return Err(self.not_leader());
        }
        let read = self.raft.get_read_log_id(ReadPolicy::ReadIndex);
        match timeout_at(deadline, read).await {
            Ok(Ok((read, applied))) => {
                if applied.is_none_or(|a| read.index() > a.index) {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    self.raft
                        .wait(Some(wait))
                        .applied_index_at_least(Some(read.index()), "leader applied its read index")
                        .await
                        .map_err(|e| StoreError::Timeout(e.to_string()))?;
                }
                Ok(self.revision())
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(StoreError::NotLeader {
                    leader: f.leader_id.filter(|&l| l != self.id),
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => Err(
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
}
