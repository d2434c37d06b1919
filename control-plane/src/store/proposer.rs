//! Group commit on the leader: concurrent writes share Raft entries.
//!
//! One `client_write` is one log entry with its own append, fsync and
//! per-entry work in openraft. Writes are queued here instead; one task
//! takes whatever has queued, up to [`MAX_PROPOSAL_TXNS`] transactions or
//! [`MAX_TXN_BYTES`](super::MAX_TXN_BYTES), proposes them as one
//! [`Proposal`], and answers each caller with its own outcome once the entry
//! is committed (fsynced on a majority) and applied, exactly as a single
//! write was answered before. No timer: a batch is whatever arrived while the
//! previous ones were being committed, so one client pays no added latency
//! and many clients share fsyncs. At most [`IN_FLIGHT`] entry is in Raft
//! at once; the rest wait in the queue and make the next batch bigger. A
//! write that finds the queue empty and room in Raft would be a batch of one:
//! its caller proposes it directly.

use std::sync::Arc;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::error::StoreError;
use super::types::{NodeId, Proposal, RaftError, Txn, TxnOutcome, TypeConfig};
use super::Raft;

/// Most transactions in one entry.
pub(crate) const MAX_PROPOSAL_TXNS: usize = 1024;
/// Entries proposed and not yet applied. One: with whatever queued meanwhile
/// in the next entry, one at a time wrote as much as four at a time on 3
/// members (16 clients: 1.28× etcd against 1.21–1.24×; 64: 1.44× against
/// 1.25–1.49×, same run, docs/benchmarks.md). Under openraft 0.9, whose core
/// awaited the leader's flush inline, two in flight were clearly worse.
const IN_FLIGHT: usize = 1;
/// Writes waiting for a batch; callers wait for room beyond it.
const QUEUE: usize = 8192;

struct Pending {
    txn: Txn,
    size: usize,
    reply: oneshot::Sender<Result<TxnOutcome, StoreError>>,
}

/// The queue in front of the leader's Raft.
pub(crate) struct Proposer {
    tx: mpsc::Sender<Pending>,
    raft: Raft,
    id: NodeId,
    in_flight: Arc<Semaphore>,
}

impl Proposer {
    /// Starts the batching task; it ends when the proposer is dropped.
    pub(crate) fn start(raft: Raft, id: NodeId, max_bytes: usize) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(run(raft.clone(), id, max_bytes, rx, in_flight.clone()));
        Proposer {
            tx,
            raft,
            id,
            in_flight,
        }
    }

    /// Proposes `txn` in the next batch. `NotLeader` means it was not
    /// appended; any other error leaves its outcome unknown. The caller bounds
    /// the wait.
    pub(crate) async fn propose(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        // Nothing queued and room in Raft: a batch would hold this write
        // alone, so propose it from here and skip two hand-offs.
        if self.tx.capacity() == QUEUE {
            if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
                let proposal = Proposal { txns: vec![txn] };
                let answer = self.raft.client_write(proposal).await;
                drop(permit);
                return match answer {
                    Ok(response) => response.data.into_iter().next().ok_or_else(|| {
                        StoreError::corrupt("an entry applied fewer outcomes than writes")
                    }),
                    Err(e) => Err(refusal(&e, self.id)),
                };
            }
        }
        let (reply, answer) = oneshot::channel();
        let size = txn.approximate_size();
        self.tx
            .send(Pending { txn, size, reply })
            .await
            .map_err(|_| StoreError::Stopped("the proposer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Timeout(
                "the store stopped before the write was answered; its outcome is unknown".into(),
            )
        })?
    }
}

async fn run(
    raft: Raft,
    id: NodeId,
    max_bytes: usize,
    mut rx: mpsc::Receiver<Pending>,
    in_flight: Arc<Semaphore>,
) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for room before draining: what queues meanwhile joins this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_PROPOSAL_TXNS {
            match rx.try_recv() {
                Ok(next) if bytes + next.size <= max_bytes => {
                    bytes += next.size;
                    batch.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (txns, replies): (Vec<Txn>, Vec<_>) =
                batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
            match raft.client_write(Proposal { txns }).await {
                Ok(response) => {
                    let mut outcomes = response.data.into_iter();
                    for reply in replies {
                        let answer = outcomes.next().ok_or_else(|| {
                            StoreError::corrupt("an entry applied fewer outcomes than writes")
                        });
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(refusal(&e, id)));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// What each writer of a refused batch is told.
fn refusal(e: &RaftError<ClientWriteError<TypeConfig>>, id: NodeId) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader: f.leader_id.filter(|&l| l != id),
        },
        // Appended, then leadership moved: it may yet commit under the next leader.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => StoreError::Timeout(
            "leadership changed before the write committed; its outcome is unknown".into(),
        ),
        RaftError::APIError(e) => StoreError::Raft(e.to_string()),
        // It may have been appended before Raft stopped.
        RaftError::Fatal(e) => StoreError::Timeout(format!("{e}; the write's outcome is unknown")),
    }
}
