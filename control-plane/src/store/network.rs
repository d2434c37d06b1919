//! Raft RPCs to other members over HTTP: `POST http://{advertise}/raft/{rpc}`
//! with MessagePack bodies and the cluster's bearer secret.
//!
//! Errors are sorted the way openraft acts on them: a peer we cannot connect
//! to, or whose Raft has stopped, is `Unreachable` (openraft backs off), a
//! slow one is `Timeout`, the rest is `Network`. A batch of entries too big
//! for one request is sent as several, in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::error::{NetworkError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::rpc::{snapshot_head, MSGPACK, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use super::types::{Node, NodeId, RaftError, RpcError, Snapshot, SnapshotData, TypeConfig, Vote};

/// Creates one [`Peer`] per target; all share one connection pool.
#[derive(Clone)]
pub(crate) struct Network {
    id: NodeId,
    client: reqwest::Client,
    secret: Arc<str>,
}

/// The HTTP client members call each other with (one pool per member),
/// trusting only the cluster CA when members serve HTTPS.
pub(crate) fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        // Members talk directly; an environment proxy must not sit in between.
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false);
    if let Some(pem) = ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
    }
    builder.build()
}

/// The base URL of a member's address: `https://host:port` as given, or
/// `host:port` meaning plain HTTP.
pub(crate) fn member_url(address: &str) -> String {
    if address.contains("://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("http://{address}")
    }
}

impl Network {
    pub(crate) fn new(id: NodeId, secret: Arc<str>, client: reqwest::Client) -> Self {
        Network { id, client, secret }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            net: self.clone(),
            target,
            base: member_url(&node.addr),
        }
    }
}

pub(crate) struct Peer {
    net: Network,
    target: NodeId,
    base: String,
}

/// Bytes of AppendEntries body above which a batch is split, so that one
/// request of blob chunks crosses well within [`ENTRIES_DEADLINE`].
const APPEND_BYTES_BUDGET: usize = 2 * 1024 * 1024;

/// The least time an AppendEntries that carries entries gets. openraft
/// offers one heartbeat interval (40 ms), which a loaded machine misses
/// again and again: each miss resends the same entries, and a leader
/// acknowledged by no quorum within its lease refuses writes (openraft
/// 0.10). A heartbeat keeps openraft's deadline: it is resent anyway.
const ENTRIES_DEADLINE: Duration = Duration::from_secs(1);

/// The least time a snapshot transfer gets, plus a second per 16 MiB.
const SNAPSHOT_BASE_TIMEOUT: Duration = Duration::from_secs(30);

fn network_error(msg: impl ToString) -> NetworkError<TypeConfig> {
    NetworkError::from_string(msg)
}

#[allow(
    clippy::result_large_err,
    reason = "openraft's error type, returned as is"
)]
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    rmp_serde::to_vec_named(value).map_err(|e| RpcError::Network(NetworkError::new(&e)))
}

/// Splits `entries` into runs whose encodings each fit in `budget` (a
/// single entry over it goes alone).
fn split_by_size(sizes: &[usize], budget: usize) -> Vec<usize> {
    let mut runs = Vec::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for &size in sizes {
        if count > 0 && bytes + size > budget {
            runs.push(count);
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes += size;
    }
    if count > 0 {
        runs.push(count);
    }
    runs
}

/// Close to an entry's encoded size without encoding it: the request is
/// encoded once, when it is sent.
fn approximate_size(entry: &super::types::Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(p) => {
            p.txns
                .iter()
                .map(|t| t.approximate_size() + 8)
                .sum::<usize>()
                + 64
        }
        openraft::EntryPayload::Membership(_) | openraft::EntryPayload::Blank => 256,
    }
}

/// What went wrong with a call, before openraft's error types are chosen.
enum Failure {
    Unreachable(String),
    Timeout(Duration),
    Network(String),
}

impl Peer {
    fn timeout(&self, action: RPCTypes, timeout: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.net.id,
            target: self.target,
            timeout,
        }
    }

    fn rpc_error(&self, action: RPCTypes, failure: Failure) -> RpcError {
        match failure {
            Failure::Unreachable(m) => RpcError::Unreachable(Unreachable::from_string(m)),
            Failure::Timeout(t) => RpcError::Timeout(self.timeout(action, t)),
            Failure::Network(m) => RpcError::Network(network_error(m)),
        }
    }

    /// POSTs `body` and decodes the `Result<Resp, RaftError>` reply; a Raft
    /// error on the other side means its Raft has stopped.
    async fn call<Resp: DeserializeOwned>(
        &self,
        action: RPCTypes,
        path: &str,
        body: reqwest::Body,
        timeout: Duration,
    ) -> Result<Resp, Failure> {
        let sent = self
            .net
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&*self.net.secret)
            .header(reqwest::header::CONTENT_TYPE, MSGPACK)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_connect() => return Err(Failure::Unreachable(e.to_string())),
            Err(e) if e.is_timeout() => return Err(Failure::Timeout(timeout)),
            Err(e) => return Err(Failure::Network(e.to_string())),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err(Failure::Timeout(timeout)),
            Err(e) => return Err(Failure::Network(e.to_string())),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(Failure::Unreachable(format!(
                "member {} has no store",
                self.target
            )));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(Failure::Network(format!(
                "{action} to member {} answered {status}: {text}",
                self.target
            )));
        }
        let result: Result<Resp, RaftError> = rmp_serde::from_slice(&bytes)
            .map_err(|e| Failure::Network(format!("undecodable {action} reply: {e}")))?;
        result.map_err(|e| {
            Failure::Unreachable(format!(
                "member {}'s raft refused {action}: {e}",
                self.target
            ))
        })
    }

    async fn append_once(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let body = encode(rpc)?;
        self.call(RPCTypes::AppendEntries, PATH_APPEND, body.into(), timeout)
            .await
            .map_err(|f| self.rpc_error(RPCTypes::AppendEntries, f))
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let timeout = if rpc.entries.is_empty() {
            option.hard_ttl()
        } else {
            option.hard_ttl().max(ENTRIES_DEADLINE)
        };
        if rpc.entries.len() < 2 {
            return self.append_once(&rpc, timeout).await;
        }
        let sizes: Vec<usize> = rpc.entries.iter().map(approximate_size).collect();
        let runs = split_by_size(&sizes, APPEND_BYTES_BUDGET);
        if runs.len() == 1 {
            return self.append_once(&rpc, timeout).await;
        }
        // In order, each run after the last one accepted; a failure after a
        // run was accepted reports how far the follower got.
        let AppendEntriesRequest {
            vote,
            mut prev_log_id,
            entries,
            leader_commit,
        } = rpc;
        let mut entries = entries.into_iter();
        let mut accepted = false;
        for run in runs {
            let part = AppendEntriesRequest {
                vote,
                prev_log_id,
                entries: entries.by_ref().take(run).collect(),
                leader_commit,
            };
            let last = part.entries.last().map(|e: &super::types::Entry| e.log_id);
            match self.append_once(&part, timeout).await {
                Ok(AppendEntriesResponse::Success) => {
                    prev_log_id = last;
                    accepted = true;
                }
                Ok(other) if !accepted => return Ok(other),
                Err(e) if !accepted => return Err(e),
                Ok(AppendEntriesResponse::HigherVote(v)) => {
                    return Ok(AppendEntriesResponse::HigherVote(v))
                }
                Ok(_) | Err(_) => return Ok(AppendEntriesResponse::PartialSuccess(prev_log_id)),
            }
        }
        Ok(AppendEntriesResponse::Success)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let body = encode(&rpc)?;
        self.call(RPCTypes::Vote, PATH_VOTE, body.into(), option.hard_ttl())
            .await
            .map_err(|f| self.rpc_error(RPCTypes::Vote, f))
    }

    /// The whole snapshot in one streamed request: its head (vote and
    /// metadata), then the file as it is on disk.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Snapshot { meta, snapshot } = snapshot;
        let size = snapshot
            .metadata()
            .await
            .map_err(|e| StreamingError::Network(network_error(format!("snapshot file: {e}"))))?
            .len();
        let head =
            snapshot_head(&vote, &meta).map_err(|e| StreamingError::Network(network_error(e)))?;
        let file = tokio_util::io::ReaderStream::new(snapshot);
        let body = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) }).chain(file);
        let timeout = SNAPSHOT_BASE_TIMEOUT + Duration::from_secs(size / (16 << 20));
        let sent = self.call::<SnapshotResponse<TypeConfig>>(
            RPCTypes::InstallSnapshot,
            PATH_SNAPSHOT,
            reqwest::Body::wrap_stream(body),
            timeout,
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = sent => result.map_err(|f| match f {
                Failure::Unreachable(m) => StreamingError::Unreachable(Unreachable::from_string(m)),
                Failure::Timeout(t) => {
                    StreamingError::Timeout(self.timeout(RPCTypes::InstallSnapshot, t))
                }
                Failure::Network(m) => StreamingError::Network(network_error(m)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_by_size;

    #[test]
    fn batches_split_at_the_budget_and_big_entries_go_alone() {
        assert_eq!(split_by_size(&[1, 1, 1], 10), vec![3]);
        assert_eq!(split_by_size(&[4, 4, 4], 10), vec![2, 1]);
        assert_eq!(split_by_size(&[20, 1, 20], 10), vec![1, 1, 1]);
        assert_eq!(split_by_size(&[5, 5, 5, 5], 10), vec![2, 2]);
        assert!(split_by_size(&[], 10).is_empty());
    }
}
